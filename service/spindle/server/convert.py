"""Conversion between spindle.v1 protobuf messages and the engine's domain types, with validation.

Validation happens here, at the edge: every bad field becomes a BadRequest field violation naming it
(``config.temperature``, ``prompt.token_ids.token_ids[3]`` ...), collected in one INVALID_ARGUMENT error.
"""

from __future__ import annotations

import enum
import functools
import math
import secrets
from dataclasses import dataclass
from typing import Any

from spindle_client.v1 import engine_pb2 as pb

from spindle.tokenizer import TokenizerError

from .errors import FieldErrors, invalid_argument, prompt_too_long
from .model import ServedModel

MAX_TOP_LOGPROBS = 20
MAX_LOGIT_BIAS = 100.0

FINISH_REASONS = {
    "STOP": pb.FINISH_REASON_STOP,
    "LENGTH": pb.FINISH_REASON_LENGTH,
    "ABORT": pb.FINISH_REASON_ABORT,
    "ERROR": pb.FINISH_REASON_ERROR,
}


_FINISH_BY_MEMBER: dict[Any, int] = {None: pb.FINISH_REASON_UNSPECIFIED}


def finish_reason_proto(reason: Any) -> int:
    """The proto enum of an engine FinishReason (an enum member or its name)."""
    value = _FINISH_BY_MEMBER.get(reason) if isinstance(reason, (enum.Enum, type(None))) else None
    if value is None:
        name = getattr(reason, "name", str(reason)).upper()
        value = FINISH_REASONS.get(name, pb.FINISH_REASON_UNSPECIFIED)
        if isinstance(reason, enum.Enum):
            _FINISH_BY_MEMBER[reason] = value
    return value


def prompt_source(prompt: pb.Prompt, model: ServedModel, name: str = "prompt") -> str | list[int]:
    """What a Prompt message asks for: token ids as given (checked against the vocabulary), or the text to
    encode (a chat rendered with the model's template; the server encodes it on its ``PromptEncoder``, with
    the tokenizer's BOS rule, as ``Tokenizer.encode``). Raises INVALID_ARGUMENT naming the bad field."""
    kind = prompt.WhichOneof("kind")
    errors = FieldErrors()
    source: str | list[int] | None = None
    if kind is None:
        errors.add(name, "required: set one of text, chat or token_ids")
    elif kind == "text":
        if not prompt.text:
            errors.add(f"{name}.text", "must not be empty")
        else:
            source = prompt.text
    elif kind == "chat":
        source = _chat_text(prompt.chat, model, f"{name}.chat", errors)
    else:
        ids = list(prompt.token_ids.token_ids)
        if not ids:
            errors.add(f"{name}.token_ids.token_ids", "must hold at least one token id")
        for i, tok in enumerate(ids):
            if not 0 <= tok < model.vocab_size:
                errors.add(f"{name}.token_ids.token_ids[{i}]", f"{tok} is not a token id in [0, {model.vocab_size})")
        source = ids
    errors.raise_if_any()
    assert source is not None
    return source


def check_prompt_ids(ids: list[int], model: ServedModel, name: str = "prompt",
                     max_sequence_length: int | None = None) -> list[int]:
    """``ids`` when they are a prompt the engine can take: at least one token, and room for one generated
    token within ``max_sequence_length`` (default: the model's context window)."""
    if not ids:
        raise invalid_argument([(name, "the prompt tokenizes to no tokens")])
    limit = max_sequence_length or model.context_window_size
    if len(ids) >= limit:
        raise prompt_too_long(name, len(ids), limit)
    return ids


def _chat_text(chat: pb.ChatMessages, model: ServedModel, name: str, errors: FieldErrors) -> str | None:
    """The chat rendered with the model's template, or None with the reasons added to ``errors``."""
    if not model.has_chat_template:
        errors.add(name, "this model has no chat template; send text or token_ids")
        return None
    if not chat.messages:
        errors.add(f"{name}.messages", "must hold at least one message")
        return None
    for i, m in enumerate(chat.messages):
        if not m.role:
            errors.add(f"{name}.messages[{i}].role", "must not be empty")
    if errors:
        return None
    try:
        return model.tokenizer.apply_chat_template([{"role": m.role, "content": m.content} for m in chat.messages])
    except TokenizerError as exc:
        errors.add(f"{name}.messages", str(exc))
        return None


def tokenize_source(request: pb.TokenizeRequest, model: ServedModel) -> str:
    """The text a TokenizeRequest asks to encode (a chat rendered); raises INVALID_ARGUMENT naming the field."""
    kind = request.WhichOneof("input")
    errors = FieldErrors()
    source: str | None = None
    if kind is None:
        errors.add("input", "required: set text or chat")
    elif kind == "text":
        source = request.text
    else:
        source = _chat_text(request.chat, model, "chat", errors)
    errors.raise_if_any()
    assert source is not None
    return source


@dataclass
class ResolvedConfig:
    """A validated GenerationConfig: the engine's form, the stop strings and the effective proto."""

    engine_kwargs: dict[str, Any]
    stop_strings: list[str]
    stop_token_ids: set[int]
    #: The engine's form of the config, its seed aside (each add passes ``engine_kwargs["seed"]``): converted
    #: once per message and shared by every request resolved from it.
    prepared: Any

    def for_request(self) -> "ResolvedConfig":
        """The config one request runs with: this one, or a copy with a fresh seed when the message set none."""
        if self.engine_kwargs["seed"] is not None:
            return self
        kwargs = dict(self.engine_kwargs)
        kwargs["seed"] = secrets.randbits(63)
        return ResolvedConfig(kwargs, self.stop_strings, self.stop_token_ids, self.prepared)

    @functools.cached_property
    def effective(self) -> pb.GenerationConfig:
        """The config as the request runs (defaults filled in, the seed used), built when a reply first
        reports it: off the intake of a request, where every microsecond delays a burst's shared prefill."""
        k = self.engine_kwargs
        out = pb.GenerationConfig(
            n=k["n"], temperature=k["temperature"], top_p=k["top_p"], top_k=k["top_k"], min_p=k["min_p"],
            repetition_penalty=k["repetition_penalty"], frequency_penalty=k["frequency_penalty"],
            presence_penalty=k["presence_penalty"], logit_bias=k["logit_bias"], seed=k["seed"],
            stop_token_ids=list(k["stop_token_ids"]), stop_strings=self.stop_strings, ignore_eos=k["ignore_eos"],
            logprobs=k["logprobs"], top_logprobs=k["top_logprobs"])
        if k["max_tokens"] is not None:
            out.max_tokens = k["max_tokens"]
        return out


def _opt(msg, name: str, default):
    return getattr(msg, name) if msg.HasField(name) else default


# Validated configs per model, by message: a server's requests mostly repeat a few configs.
CONFIG_CACHE_SIZE = 256


def resolve_config(cfg: pb.GenerationConfig, model: ServedModel, max_n: int, prefix: str = "config") -> ResolvedConfig:
    """Validate a GenerationConfig, fill in defaults (a fresh seed when unset). A message seen before (the
    same bytes) is not validated again: its resolved form is reused, with a seed of its own when unset."""
    key = (cfg.SerializeToString(deterministic=True), max_n, prefix)
    cache = model.resolved_configs
    base = cache.get(key)
    if base is None:
        base = _resolve_config(cfg, model, max_n, prefix)
        if len(cache) >= CONFIG_CACHE_SIZE:
            del cache[next(iter(cache))]
        cache[key] = base
    return base.for_request()


def _resolve_config(cfg: pb.GenerationConfig, model: ServedModel, max_n: int, prefix: str) -> ResolvedConfig:
    e = FieldErrors()
    f = lambda name: f"{prefix}.{name}"  # noqa: E731
    n = _opt(cfg, "n", 1)
    temperature = _opt(cfg, "temperature", 1.0)
    top_p = _opt(cfg, "top_p", 1.0)
    top_k = _opt(cfg, "top_k", 0)
    min_p = _opt(cfg, "min_p", 0.0)
    repetition_penalty = _opt(cfg, "repetition_penalty", 1.0)
    frequency_penalty = _opt(cfg, "frequency_penalty", 0.0)
    presence_penalty = _opt(cfg, "presence_penalty", 0.0)
    seed = cfg.seed if cfg.HasField("seed") else None  # None: drawn per request (ResolvedConfig.for_request)
    max_tokens = _opt(cfg, "max_tokens", None)
    vocab = model.vocab_size

    if not 1 <= n <= max_n:
        e.add(f("n"), f"must be in [1, {max_n}], got {n}")
    for name, value in (("temperature", temperature), ("top_p", top_p), ("min_p", min_p),
                        ("repetition_penalty", repetition_penalty), ("frequency_penalty", frequency_penalty),
                        ("presence_penalty", presence_penalty)):
        if not math.isfinite(value):
            e.add(f(name), f"must be a finite number, got {value}")
    if temperature < 0:
        e.add(f("temperature"), f"must be at least 0, got {temperature}")
    if not 0 < top_p <= 1:
        e.add(f("top_p"), f"must be in (0, 1], got {top_p}")
    if top_k < 0:
        e.add(f("top_k"), f"must be at least 0, got {top_k}")
    if not 0 <= min_p <= 1:
        e.add(f("min_p"), f"must be in [0, 1], got {min_p}")
    if not repetition_penalty > 0:
        e.add(f("repetition_penalty"), f"must be above 0, got {repetition_penalty}")
    for name, value in (("frequency_penalty", frequency_penalty), ("presence_penalty", presence_penalty)):
        if not -2 <= value <= 2:
            e.add(f(name), f"must be in [-2, 2], got {value}")
    if max_tokens is not None and max_tokens < 1:
        e.add(f("max_tokens"), f"must be at least 1, got {max_tokens}")
    for tok, bias in cfg.logit_bias.items():
        if not 0 <= tok < vocab:
            e.add(f(f"logit_bias[{tok}]"), f"{tok} is not a token id in [0, {vocab})")
        if not (math.isfinite(bias) and -MAX_LOGIT_BIAS <= bias <= MAX_LOGIT_BIAS):
            e.add(f(f"logit_bias[{tok}]"), f"bias must be in [-100, 100], got {bias}")
    for i, tok in enumerate(cfg.stop_token_ids):
        if not 0 <= tok < vocab:
            e.add(f(f"stop_token_ids[{i}]"), f"{tok} is not a token id in [0, {vocab})")
    for i, s in enumerate(cfg.stop_strings):
        if not s:
            e.add(f(f"stop_strings[{i}]"), "must not be empty")
    if not 0 <= cfg.top_logprobs <= MAX_TOP_LOGPROBS:
        e.add(f("top_logprobs"), f"must be in [0, {MAX_TOP_LOGPROBS}], got {cfg.top_logprobs}")
    elif cfg.top_logprobs and not cfg.logprobs:
        e.add(f("top_logprobs"), "needs logprobs to be true")
    e.raise_if_any()

    kwargs = dict(n=n, temperature=temperature, top_p=top_p, top_k=top_k, min_p=min_p,
                  repetition_penalty=repetition_penalty, frequency_penalty=frequency_penalty,
                  presence_penalty=presence_penalty, logit_bias={int(k): float(v) for k, v in cfg.logit_bias.items()},
                  seed=seed, max_tokens=max_tokens, stop_token_ids=tuple(int(t) for t in cfg.stop_token_ids),
                  ignore_eos=cfg.ignore_eos, logprobs=cfg.logprobs, top_logprobs=cfg.top_logprobs)
    stops = set(kwargs["stop_token_ids"])
    if not cfg.ignore_eos:
        stops.update(model.eos_token_ids)
    from spindle.engine import GenerationConfig, PreparedConfig  # the engine module owns the FFI library

    prepared = PreparedConfig(GenerationConfig(**{**kwargs, "seed": None}))
    return ResolvedConfig(kwargs, list(cfg.stop_strings), stops, prepared)


def engine_field_to_proto(field_name: str, prefix: str = "config") -> str:
    """The proto field path for a field the engine rejected (engine names match the proto's)."""
    if field_name in ("token_ids", "prompt", "input_ids", "prompt_tokens"):
        return "prompt"
    if field_name in ("request_id",):
        return field_name
    return f"{prefix}.{field_name}"


def usage_proto(engine_usage: Any, prompt_tokens: int, completion_tokens: int, ttft_s: float | None,
                total_s: float) -> pb.Usage:
    prefill = float(getattr(engine_usage, "prefill_time_s", 0.0) or 0.0) if engine_usage else 0.0
    decode = float(getattr(engine_usage, "decode_time_s", 0.0) or 0.0) if engine_usage else 0.0
    return pb.Usage(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                    time_to_first_token_ms=(ttft_s or 0.0) * 1e3, total_time_ms=total_s * 1e3,
                    prefill_time_ms=prefill * 1e3, decode_time_ms=decode * 1e3)


_METRIC_FIELDS = {
    "running_requests": "running", "waiting_requests": "waiting", "finished_requests": "finished",
    "aborted_requests": "aborted", "preempted_requests": "preempted", "prefill_tokens": "prefill_tokens",
    "decode_tokens": "decode_tokens", "kv_pages_total": "kv_pages_total", "kv_pages_used": "kv_pages_used",
    "steps": "steps",
}


def metrics_proto(m: Any, live: int, open_streams: int, draining: bool) -> pb.MetricsResponse:
    out = pb.MetricsResponse(live_requests=live, open_streams=open_streams, draining=draining)
    for proto_name, attr in _METRIC_FIELDS.items():
        setattr(out, proto_name, int(getattr(m, attr, 0) or 0))
    out.prefill_time_ms = float(getattr(m, "prefill_time_s", 0.0) or 0.0) * 1e3
    out.decode_time_ms = float(getattr(m, "decode_time_s", 0.0) or 0.0) * 1e3
    return out
