"""Calls accepted ahead: several requested calls outstanding per method in gRPC core, not one.

A grpc.aio server asks gRPC core for the next call of each method one at a time: it requests a call,
waits for core to match it with an incoming one (a completion-queue event, picked up by grpc's poller
thread and handed to the event loop), starts the handler, and only then requests the next. A client that
opens 16 streams at once has them matched one per turn of the event loop, each turn queued behind the
handlers started before it. With a no-op Generate handler this alone put the median of 16 Go streams'
first messages 2.9-3.6 ms after their start; with 15 more calls requested ahead it was 1.4-1.6 ms
(`bench/grpc_floor.py`).

``AcceptAhead`` keeps ``ahead`` extra requested calls outstanding for the given methods, each in its own
task that hands every call it gets to grpc.aio's own RPC handling (``_handle_rpc`` under
``_schedule_rpc_coro``, exactly what the server's main loop does) and requests the next. Core matches a
burst's calls to all of them at once. These are grpc.aio internals: ``supported()`` checks that the
installed grpcio has them with the expected signatures, and without them the server simply accepts calls
the stock way (``AcceptAhead.active`` is False and a warning says why).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Iterable, Mapping

import grpc

log = logging.getLogger("spindle.server")

# The grpc.aio internals used, with the parameters they must have.
_SIGNATURES = {
    "_handle_rpc": ("method_name", "method_resolver", "interceptors", "rpc_state", "loop", "concurrency_exceeded"),
    "_schedule_rpc_coro": ("rpc_coro", "rpc_state", "loop", "method_name"),
}


def _params(func: Any) -> tuple[str, ...]:
    code = func.__code__
    return tuple(code.co_varnames[:code.co_argcount])


def supported() -> str | None:
    """None when the installed grpcio has the internals AcceptAhead uses, else why not."""
    try:
        from grpc._cython import cygrpc  # pylint: disable=import-outside-toplevel
        for name, params in _SIGNATURES.items():
            if _params(getattr(cygrpc, name)) != params:
                return f"grpc._cython.cygrpc.{name} takes {_params(getattr(cygrpc, name))}, not {params}"
        if _params(cygrpc.AioServer._make_request_call_future) != ("self", "method_bytes"):
            return "grpc._cython.cygrpc.AioServer._make_request_call_future has another signature"
        for name in ("_MethodResolver", "RPCState"):
            getattr(cygrpc, name)
        if not callable(getattr(cygrpc.AioServer, "is_running", None)):
            return "grpc._cython.cygrpc.AioServer has no is_running"
    except (ImportError, AttributeError) as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


class HandlerCapture:
    """Stands in for the server while generated ``add_*Servicer_to_server`` functions register a servicer,
    passing everything on and keeping the registered method handlers by full method name."""

    def __init__(self, server: grpc.aio.Server):
        self.server = server
        self.handlers: dict[str, grpc.RpcMethodHandler] = {}

    def add_generic_rpc_handlers(self, handlers: Iterable[Any]) -> None:
        self.server.add_generic_rpc_handlers(handlers)

    def add_registered_method_handlers(self, service_name: str, handlers: Mapping[str, grpc.RpcMethodHandler]) -> None:
        self.handlers.update({f"/{service_name}/{method}": h for method, h in handlers.items()})
        self.server.add_registered_method_handlers(service_name, handlers)


class AcceptAhead:
    """Extra requested calls for ``methods`` ({full method name: handler}) of a started grpc.aio server.

    ``start`` after ``server.start()``; the tasks end by themselves when core fails their requested calls
    at shutdown, and ``close`` (after ``server.stop``) waits for them. ``accepted`` counts the calls they
    took (the server's own loop takes the others). The calls taken here pass no server interceptors and
    no ``maximum_concurrent_rpcs`` limit: use it on servers that have neither (Spindle's)."""

    def __init__(self, server: grpc.aio.Server, methods: Mapping[str, grpc.RpcMethodHandler], ahead: int):
        self.server = server
        self.methods = dict(methods)
        self.ahead = max(0, int(ahead))
        self.active = False
        self.accepted = 0
        self._tasks: set[asyncio.Task] = set()
        self._rpc_tasks: set[asyncio.Task] = set()

    def start(self) -> bool:
        if self.ahead == 0 or not self.methods:
            return False
        reason = supported()
        aio = getattr(self.server, "_server", None)
        if reason is None and aio is None:
            reason = "the grpc.aio server has no core server object"
        if reason is not None:
            log.warning("accepting one call at a time per method (the grpc.aio internals for more are missing: %s)",
                        reason)
            return False
        from grpc._cython import cygrpc  # pylint: disable=import-outside-toplevel
        resolver = cygrpc._MethodResolver([], self.methods)  # pylint: disable=protected-access
        loop = asyncio.get_running_loop()
        for method in self.methods:
            for _ in range(self.ahead):
                task = loop.create_task(self._accept(cygrpc, aio, resolver, method), name=f"accept {method}")
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        self.active = True
        return True

    async def _accept(self, cygrpc: Any, aio: Any, resolver: Any, method: str) -> None:
        loop = asyncio.get_running_loop()
        method_bytes = method.encode()
        while aio.is_running():
            try:
                rpc_state = await aio._make_request_call_future(method_bytes)  # pylint: disable=protected-access
            except asyncio.CancelledError:
                raise
            except Exception:  # pylint: disable=broad-except
                return  # core failed the requested call: the server is shutting down
            self.accepted += 1
            coro = cygrpc._handle_rpc(method, resolver, (), rpc_state, loop, False)  # pylint: disable=protected-access
            rpc = loop.create_task(cygrpc._schedule_rpc_coro(coro, rpc_state, loop, method),  # pylint: disable=protected-access
                                   name="rpc_task")
            self._rpc_tasks.add(rpc)
            rpc.add_done_callback(self._rpc_tasks.discard)

    async def close(self) -> None:
        """After the server stopped: end the accept tasks still waiting (core no longer matches calls)."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self.active = False
