"""The Python face of the C++ engine: the only module that touches libspindle_engine.

``Engine`` is the stepped, single-threaded core (for tests and deterministic drivers);
``ThreadedEngine`` runs the C++ step loop and stream-back loop on two threads owned here and
delivers batched outputs to one callback. Inputs are checked for type here, then for range in
C++; both raise :class:`InvalidRequestError` naming the field.
"""

from __future__ import annotations

import atexit
import dataclasses
import enum
import logging
import operator
import os
import threading
import weakref
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from . import _lib

__all__ = [
    "BranchDelta", "DuplicateRequestError", "Engine", "EngineConfig", "EngineError", "EngineMetrics",
    "EngineShutdownError", "FinishReason", "GenerationConfig", "InvalidRequestError", "PreparedConfig",
    "RequestOutput", "ThreadedEngine", "TokenLogprob", "Usage",
]

logger = logging.getLogger("spindle.engine")


# -- errors ------------------------------------------------------------------------------------------
class EngineError(RuntimeError):
    """The engine failed (a broken invariant, not bad input)."""


class InvalidRequestError(EngineError, ValueError):
    """A config or request value is out of range or of the wrong type; ``field`` names it."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field
        self.message = message


class DuplicateRequestError(EngineError):
    """A request with this id is already active."""

    def __init__(self, request_id: str, message: str | None = None):
        super().__init__(message or f"a request with id {request_id!r} is already active")
        self.request_id = request_id


class EngineShutdownError(EngineError):
    """The engine is shutting down and takes no new requests."""


_CODE_INVALID, _CODE_DUPLICATE, _CODE_UNAVAILABLE = 1, 2, 3


def _raise_status(status: Any, request_id: str = "") -> None:
    if status is None:
        return
    code, field, message = int(status[0]), str(status[1]), str(status[2])
    if code == _CODE_INVALID:
        raise InvalidRequestError(field, message)
    if code == _CODE_DUPLICATE:
        raise DuplicateRequestError(request_id, message)
    if code == _CODE_UNAVAILABLE:
        raise EngineShutdownError(message)
    raise EngineError(message)


# -- configs -----------------------------------------------------------------------------------------
def _check_int(field: str, value: Any, *, optional: bool = False) -> int | None:
    if value is None and optional:
        return None
    if isinstance(value, bool):
        raise InvalidRequestError(field, f"expected an integer, got {value!r}")
    try:
        return operator.index(value)
    except TypeError:
        raise InvalidRequestError(field, f"expected an integer, got {value!r}") from None


def _check_seed(value: Any) -> int | None:
    seed = _check_int("seed", value, optional=True)
    if seed is not None and not -(2 ** 63) <= seed < 2 ** 63:
        raise InvalidRequestError("seed", "must fit in 64 bits")
    return seed


def _check_float(field: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) and not hasattr(value, "__float__"):
        raise InvalidRequestError(field, f"expected a number, got {value!r}")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise InvalidRequestError(field, f"expected a number, got {value!r}") from None


def _check_bool(field: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise InvalidRequestError(field, f"expected true or false, got {value!r}")
    return value


def _check_token_ids(field: str, value: Any) -> list[int]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) and not hasattr(value, "__iter__"):
        raise InvalidRequestError(field, "expected a sequence of token ids")
    out = []
    for i, t in enumerate(value):
        if isinstance(t, bool):
            raise InvalidRequestError(field, f"position {i}: expected an integer token id, got {t!r}")
        try:
            out.append(operator.index(t))
        except TypeError:
            raise InvalidRequestError(field, f"position {i}: expected an integer token id, got {t!r}") from None
    return out


@dataclasses.dataclass
class EngineConfig:
    """Engine settings; ``None`` takes the value of the ``mode`` preset (local, interactive, server)."""

    model: str | os.PathLike
    device: str = "cpu"
    mode: str = "local"
    max_num_sequence: int | None = None
    max_total_sequence_length: int | None = None
    max_single_sequence_length: int | None = None
    prefill_chunk_size: int | None = None
    kv_cache_page_size: int = 16
    num_threads: int = 0
    #: ThreadedEngine: when a request wakes the idle engine, the most microseconds to keep collecting
    #: requests that arrive in a burst so that they share the first prefill (it stops once none has come
    #: for an eighth of the window). 0 steps at once; None takes the preset's (server 8000, others 0).
    admission_window_us: int | None = None
    #: ThreadedEngine: the least microseconds between two output callbacks. Outputs that come sooner wait
    #: and are merged per request; a request's first tokens and every finish go at once. 0: every step's.
    output_interval_us: int = 0
    #: ThreadedEngine: the most request outputs per second over all paced requests (those with tokens
    #: delivered and no finish): with n of them, callbacks are at least n / budget seconds apart (and at
    #: least ``output_interval_us``). First tokens and finishes go at once. 0: no budget.
    output_budget_per_s: int = 0

    def to_ffi(self) -> dict[str, Any]:
        if not isinstance(self.model, (str, os.PathLike)) or not str(self.model):
            raise InvalidRequestError("model", "expected the path of a model artifact directory")
        for name in ("device", "mode"):
            if not isinstance(getattr(self, name), str):
                raise InvalidRequestError(name, f"expected a string, got {getattr(self, name)!r}")
        out: dict[str, Any] = {"model": str(Path(self.model)), "device": self.device, "mode": self.mode}
        for name in ("max_num_sequence", "max_total_sequence_length", "max_single_sequence_length",
                     "prefill_chunk_size"):
            out[name] = _check_int(name, getattr(self, name), optional=True)
        out["kv_cache_page_size"] = _check_int("kv_cache_page_size", self.kv_cache_page_size)
        out["num_threads"] = _check_int("num_threads", self.num_threads)
        out["admission_window_us"] = _check_int("admission_window_us", self.admission_window_us, optional=True)
        out["output_interval_us"] = _check_int("output_interval_us", self.output_interval_us)
        out["output_budget_per_s"] = _check_int("output_budget_per_s", self.output_budget_per_s)
        return out


@dataclasses.dataclass
class GenerationConfig:
    """Sampling and stopping parameters of one request (ranges are checked by the engine)."""

    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0
    repetition_penalty: float = 1.0
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    logit_bias: Mapping[int, float] = dataclasses.field(default_factory=dict)
    seed: int | None = None
    max_tokens: int | None = None
    stop_token_ids: Sequence[int] = ()
    ignore_eos: bool = False
    logprobs: bool = False
    top_logprobs: int = 0

    def to_ffi(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "n": _check_int("n", self.n),
            "top_k": _check_int("top_k", self.top_k),
            "top_logprobs": _check_int("top_logprobs", self.top_logprobs),
            "seed": _check_int("seed", self.seed, optional=True),
            "max_tokens": _check_int("max_tokens", self.max_tokens, optional=True),
            "ignore_eos": _check_bool("ignore_eos", self.ignore_eos),
            "logprobs": _check_bool("logprobs", self.logprobs),
            "stop_token_ids": _check_token_ids("stop_token_ids", self.stop_token_ids),
        }
        for name in ("temperature", "top_p", "min_p", "repetition_penalty", "frequency_penalty", "presence_penalty"):
            out[name] = _check_float(name, getattr(self, name))
        out["seed"] = _check_seed(out["seed"])
        if not isinstance(self.logit_bias, Mapping):
            raise InvalidRequestError("logit_bias", "expected a mapping of token id to bias")
        bias = {}
        for k, v in self.logit_bias.items():
            key = int(k) if isinstance(k, str) and k.lstrip("-").isdigit() else k
            bias[_check_int("logit_bias", key)] = _check_float("logit_bias", v)
        out["logit_bias"] = bias
        return out


# -- outputs -----------------------------------------------------------------------------------------
class FinishReason(enum.Enum):
    STOP = "stop"
    LENGTH = "length"
    ABORT = "abort"
    ERROR = "error"


_FINISH = {0: None, 1: FinishReason.STOP, 2: FinishReason.LENGTH, 3: FinishReason.ABORT, 4: FinishReason.ERROR}


@dataclasses.dataclass(frozen=True)
class TokenLogprob:
    token_id: int
    logprob: float
    top: list[tuple[int, float]]


@dataclasses.dataclass(frozen=True)
class BranchDelta:
    index: int
    token_ids: list[int]
    logprobs: list[TokenLogprob] | None
    finish_reason: FinishReason | None
    stop_token_id: int | None = None  # with "stop": the stop / end-of-sequence token that matched (not in token_ids)


@dataclasses.dataclass(frozen=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int
    time_to_first_token_s: float
    prefill_time_s: float
    decode_time_s: float
    end_to_end_s: float


@dataclasses.dataclass(frozen=True)
class RequestOutput:
    request_id: str
    branches: list[BranchDelta]
    finished: bool
    usage: Usage | None
    error: str | None


@dataclasses.dataclass(frozen=True)
class EngineMetrics:
    running: int
    waiting: int
    finished: int
    aborted: int
    preempted: int
    prefill_tokens: int
    decode_tokens: int
    prompt_tokens: int
    completion_tokens: int
    steps: int
    prefill_steps: int
    decode_steps: int
    prefill_time_s: float
    decode_time_s: float
    step_time_s: float
    sample_time_s: float
    kv_pages_total: int
    kv_pages_used: int
    kv_page_size: int
    max_num_sequence: int
    max_total_sequence_length: int
    max_single_sequence_length: int
    prefill_chunk_size: int

    @classmethod
    def from_ffi(cls, m: Mapping[str, Any]) -> "EngineMetrics":
        return cls(**{f.name: m[f.name] for f in dataclasses.fields(cls)})


def _array_getter() -> Callable[[Any, int], Any]:
    """``get(array, i)`` for the engine's FFI arrays: tvm-ffi's element getter without the bounds-checking
    Python wrapper when the installed tvm_ffi has it (a few times faster per element), else ``array[i]``."""
    try:
        from tvm_ffi import _ffi_api  # pylint: disable=import-outside-toplevel

        return _ffi_api.ArrayGetItem
    except (ImportError, AttributeError):  # pragma: no cover - other tvm_ffi layouts
        return operator.getitem


_get = _array_getter()


def _convert_logprobs(raw: Any) -> list[TokenLogprob]:
    return [TokenLogprob(int(t), float(lp), [(int(a), float(b)) for a, b in top]) for t, lp, top in raw]


def _convert_outputs(raw: Any) -> list[RequestOutput]:
    """The engine's packed outputs as RequestOutput values (this runs once per step: on the stream-back thread, or in Engine.step).

    Layout (cpp/ffi/convert.h, OutputsToPacked): [request_ids, ints, extras]; per output, ints holds
    finished and the branch count, then per branch index, finish code, stop token id (-1: none), token
    count and the token ids; extras holds None or [usage | None, error, per-branch logprobs | None].
    """
    get = _get
    ids, ints, extras = get(raw, 0), get(raw, 1), get(raw, 2)
    outputs = []
    p = 0
    finish = _FINISH
    for request_id, extra in zip(ids, extras):
        finished, nb = ints[p], ints[p + 1]
        p += 2
        lps = None
        usage = error = None
        if extra is not None:
            raw_usage, raw_error, lps = extra
            usage = None if raw_usage is None else Usage(*raw_usage)
            error = str(raw_error) or None
        deltas = []
        for j in range(nb):
            index, code, stop_token, n = ints[p], ints[p + 1], ints[p + 2], ints[p + 3]
            p += 4
            deltas.append(BranchDelta(index, list(ints[p:p + n]),
                                      None if lps is None else _convert_logprobs(lps[j]),
                                      finish[code], stop_token if stop_token >= 0 else None))
            p += n
        outputs.append(RequestOutput(str(request_id), deltas, bool(finished), usage, error))
    return outputs


def _create(kind: str, config: EngineConfig, *extra: Any) -> Any:
    if not isinstance(config, EngineConfig):
        raise InvalidRequestError("config", f"expected an EngineConfig, got {type(config).__name__}")
    result = _lib.get_function(kind)(config.to_ffi(), *extra)
    if isinstance(result, Sequence) and len(result) == 3 and isinstance(result[0], int):
        _raise_status(result)
    return result


def _check_generation_config(value: Any) -> "GenerationConfig":
    if not isinstance(value, GenerationConfig):
        raise InvalidRequestError("generation_config", f"expected a GenerationConfig, got {type(value).__name__}")
    return value


class PreparedConfig:
    """A GenerationConfig checked and converted for the engine once. Requests that share a config are added
    with it without converting it again (the server keeps one per distinct request config), each with its
    own seed if it passes one (``add_request(..., seed=)``). Later changes to ``config`` are not seen."""

    __slots__ = ("config", "_ffi")

    def __init__(self, config: GenerationConfig):
        import tvm_ffi  # pylint: disable=import-outside-toplevel

        self.config = dataclasses.replace(_check_generation_config(config))
        self._ffi = tvm_ffi.Map(self.config.to_ffi())


def _request_args(request_id: Any, token_ids: Any, generation_config: GenerationConfig | PreparedConfig | None,
                  seed: int | None = None):
    if not isinstance(request_id, str) or not request_id:
        raise InvalidRequestError("request_id", "expected a non-empty string")
    seed = _check_seed(seed)
    if isinstance(generation_config, PreparedConfig):
        # a list goes as it is: the engine checks every element is an integer (and in the vocabulary)
        tokens = token_ids if type(token_ids) is list else _check_token_ids("token_ids", token_ids)
        return request_id, tokens, generation_config._ffi, seed  # pylint: disable=protected-access
    tokens = _check_token_ids("token_ids", token_ids)
    gen = _check_generation_config(generation_config if generation_config is not None else GenerationConfig())
    return request_id, tokens, gen.to_ffi(), seed


class _Base:
    """The verbs both engines share; ``_mod`` is the FFI module and ``_add`` its cached add_request."""
    _mod: Any
    _add: Any

    def add_request(self, request_id: str, token_ids: Sequence[int],
                    generation_config: GenerationConfig | PreparedConfig | None = None,
                    seed: int | None = None) -> None:
        """Queue a request; ``seed``, when given, replaces the config's."""
        args = _request_args(request_id, token_ids, generation_config, seed)
        _raise_status(self._add(*args), request_id)

    def abort_request(self, request_id: str) -> None:
        self._mod["abort_request"](str(request_id))

    def reset(self) -> None:
        self._mod["reset"]()

    @property
    def limits(self) -> dict[str, Any]:
        """The resolved limits (max_num_sequence, max_single_sequence_length, vocab_size, ...); {} if unloaded."""
        info = self._mod["info"]()
        return dict(info) if info is not None else {}

    def metrics(self) -> EngineMetrics:
        return EngineMetrics.from_ffi(self._mod["metrics"]())


# -- engines -----------------------------------------------------------------------------------------
class Engine(_Base):
    """The stepped engine: nothing runs between calls to :meth:`step`."""

    def __init__(self, config: EngineConfig):
        self.config = config
        self._mod = _create("spindle.engine.create", config)
        self._add = self._mod["add_request"]
        self._step = self._mod["step"]

    def step(self) -> list[RequestOutput]:
        return _convert_outputs(self._step())

    def empty(self) -> bool:
        return bool(self._mod["empty"]())


_live_engines: "weakref.WeakSet[ThreadedEngine]" = weakref.WeakSet()


@atexit.register
def _shutdown_all() -> None:
    for engine in list(_live_engines):
        engine.shutdown(timeout_s=2.0)


class ThreadedEngine(_Base):
    """The engine on a background step loop; ``callback(list[RequestOutput])`` runs on the stream-back thread."""

    def __init__(self, config: EngineConfig, callback: Callable[[list[RequestOutput]], None]):
        if not callable(callback):
            raise InvalidRequestError("callback", "expected a callable")
        self.config = config
        self._callback = callback
        self._mod = _create("spindle.engine.create_threaded", config, self._deliver)
        self._add = self._mod["add_request"]
        self._closed = False
        self._close_lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._mod["run_background_loop"], name="spindle-step", daemon=True),
            threading.Thread(target=self._mod["run_background_stream_back_loop"], name="spindle-stream-back",
                             daemon=True),
        ]
        for t in self._threads:
            t.start()
        _live_engines.add(self)

    def _deliver(self, raw: Any) -> None:
        try:
            self._callback(_convert_outputs(raw))
        except Exception:  # pylint: disable=broad-except
            logger.exception("the engine output callback raised")

    def reload(self, config: EngineConfig) -> None:
        """Load ``config`` (another model or other limits), blocking until done; active requests end with ABORT.

        On failure the current model stays and :class:`InvalidRequestError` names the field.
        """
        if not isinstance(config, EngineConfig):
            raise InvalidRequestError("config", f"expected an EngineConfig, got {type(config).__name__}")
        _raise_status(self._mod["reload"](config.to_ffi()))
        self.config = config

    def unload(self) -> None:
        """Drop the model, blocking until done (active requests end with ABORT); adds fail until :meth:`reload`."""
        _raise_status(self._mod["unload"]())

    def num_active(self) -> int:
        return int(self._mod["num_active"]())

    def wait_idle(self, timeout_s: float) -> bool:
        """Wait until no request is active and every output was delivered."""
        return bool(self._mod["wait_idle"](float(timeout_s)))

    @property
    def closed(self) -> bool:
        return self._closed

    def shutdown(self, drain_timeout_s: float = 0.0, timeout_s: float = 5.0) -> None:
        """Reject new requests, let active ones finish for ``drain_timeout_s``, abort the rest, stop the loops."""
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        self._mod["stop_accepting"]()
        if drain_timeout_s > 0:
            self.wait_idle(drain_timeout_s)
        self._mod["reset"]()
        if not self.wait_idle(timeout_s):
            logger.warning("engine outputs were still undelivered after %.1f s", timeout_s)
        self._mod["exit_background_loop"]()
        current = threading.current_thread()
        for t in self._threads:
            if t is not current:
                t.join(timeout_s)
        _live_engines.discard(self)

    def __enter__(self) -> "ThreadedEngine":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.shutdown()
