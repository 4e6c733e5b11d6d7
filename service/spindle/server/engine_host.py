"""Owns the engine for the server and keeps its blocking work off the event loop.

Threaded mode: the engine's own loop steps; its stream-back thread hands each output batch to the event
loop with ``call_soon_threadsafe``. Stepped mode: the single-threaded engine runs on one dedicated worker
thread, so calls are serialized and the event loop never waits on a step.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
from typing import Any, Callable

from . import sched
from .convert import engine_field_to_proto
from .errors import ServiceError, already_exists, internal, invalid_argument, shutting_down

log = logging.getLogger("spindle.server")

THREADED = "threaded"
STEPPED = "stepped"
MODES = (THREADED, STEPPED)


def _nothing() -> None:
    return None


class EngineHost:
    """The engine of one server, in threaded or stepped mode, with async methods for the servicer."""

    def __init__(self, model_dir: str, mode: str, loop: asyncio.AbstractEventLoop,
                 on_outputs: Callable[[list[Any]], Any], device: str = "cpu", engine_mode: str = "server",
                 batch_scheduling: bool = False, **engine_options: Any):
        from spindle import engine as engine_mod  # the only module that touches the FFI library

        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        self.mode = mode
        #: The engine's stream-back thread, once it has delivered outputs and taken the serving class.
        self.stream_back_tid: int | None = None
        self._mod = engine_mod
        self._loop = loop
        # stepped mode's engine thread computes: the default scheduling class whatever its creator's (sched.py)
        self._worker = concurrent.futures.ThreadPoolExecutor(
            1, thread_name_prefix="spindle-engine", initializer=sched.compute_thread if batch_scheduling else None)
        config = engine_mod.EngineConfig(model=str(model_dir), device=device, mode=engine_mode, **engine_options)
        if mode == THREADED:
            def callback(outputs: list[Any]) -> None:
                if batch_scheduling and self.stream_back_tid is None:
                    # the engine's stream-back thread is a serving thread (sched.py)
                    self.stream_back_tid = threading.get_native_id()
                    sched.serving_thread()
                try:
                    loop.call_soon_threadsafe(on_outputs, outputs)
                except RuntimeError:  # the event loop is closed: the server is gone
                    pass
            self.engine = engine_mod.ThreadedEngine(config, callback)
        else:
            self.engine = engine_mod.Engine(config)
        limits = dict(getattr(self.engine, "limits", {}) or {})
        #: Longest prompt + output the engine accepts for one sequence.
        self.max_sequence_length = int(limits.get("max_single_sequence_length") or 0) or None
        #: Sequences the engine runs at once.
        self.max_num_sequence = int(limits.get("max_num_sequence") or 0) or None
        #: How long the idle engine collects a burst of requests before its first step (threaded mode).
        self.admission_window_us = int(limits.get("admission_window_us") or 0)
        #: The least time between two output batches of the stream-back loop (threaded mode).
        self.output_interval_us = int(limits.get("output_interval_us") or 0)
        #: The most outputs per second the stream-back loop delivers over all paced requests (0: no bound).
        self.output_budget_per_s = int(limits.get("output_budget_per_s") or 0)
        #: Bytes of model weights, and how many of them the OS holds in 2 MB pages.
        self.weight_bytes = int(limits.get("weight_bytes") or 0)
        self.weight_huge_page_bytes = int(limits.get("weight_huge_page_bytes") or 0)

    def _translate(self, exc: Exception) -> ServiceError:
        mod = self._mod
        if isinstance(exc, getattr(mod, "DuplicateRequestError", ())):
            return already_exists(str(getattr(exc, "request_id", "") or exc))
        if isinstance(exc, getattr(mod, "EngineShutdownError", ())):
            return shutting_down()
        if isinstance(exc, getattr(mod, "InvalidRequestError", ())):
            field = engine_field_to_proto(str(getattr(exc, "field", "") or "config"))
            message = str(getattr(exc, "message", "") or exc)
            return invalid_argument([(field, message)])
        return internal(f"engine error: {exc}")

    async def _run(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await self._loop.run_in_executor(self._worker, fn, *args)

    async def add_request(self, request_id: str, token_ids: list[int], generation_config: Any,
                          seed: int | None = None) -> None:
        try:
            if self.mode == THREADED:
                self.engine.add_request(request_id, token_ids, generation_config, seed)
            else:
                await self._run(self.engine.add_request, request_id, token_ids, generation_config, seed)
        except ServiceError:
            raise
        except Exception as exc:  # noqa: BLE001 - every engine failure becomes a typed status
            err = self._translate(exc)
            if err.code.name == "INTERNAL":
                log.exception("engine rejected request %s", request_id)
            raise err from exc

    def abort_request(self, request_id: str) -> None:
        """Never blocks: threaded engines queue the abort; stepped ones run it on the engine thread."""
        if self.mode == THREADED:
            self.engine.abort_request(request_id)
        else:
            self._worker.submit(self.engine.abort_request, request_id)

    async def barrier(self) -> None:
        """Wait until every engine call queued so far (aborts included) has run (stepped mode)."""
        if self.mode == STEPPED:
            await self._run(_nothing)

    async def step(self) -> list[Any]:
        return list(await self._run(self.engine.step))

    async def empty(self) -> bool:
        return bool(await self._run(self.engine.empty))

    async def reset(self) -> None:
        await self._run(self.engine.reset)

    async def metrics(self) -> Any:
        return await self._run(self.engine.metrics)

    def shutdown(self) -> None:
        try:
            if self.mode == THREADED:
                self.engine.shutdown()
            elif hasattr(self.engine, "shutdown"):
                self._worker.submit(self.engine.shutdown).result()
        finally:
            self._worker.shutdown(wait=True)
