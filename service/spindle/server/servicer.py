"""spindle.v1.EngineService: a thin layer over the request table, the engine host and convert."""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
from typing import Any, AsyncIterator

import grpc
from spindle_client.v1 import engine_pb2 as pb
from spindle_client.v1 import engine_pb2_grpc as pb_grpc

import spindle
from spindle.tokenizer import TokenizerError

from . import convert
from .encoder import PromptEncoder
from .engine_host import STEPPED, THREADED, EngineHost
from .errors import FieldErrors, ServiceError, internal, invalid_argument, not_found, shutting_down, wrong_mode
from .model import ServedModel
from .requests import LiveRequest, OutputQueue, RequestTable, build_response

log = logging.getLogger("spindle.server")

# How long an ended RPC waits for the engine to confirm an abort (the request's KV pages are free then).
ABORT_CONFIRM_S = 10.0


def _status_errors(method):
    """Turn ServiceError (and unexpected exceptions) into a google.rpc.Status ending the RPC."""
    if inspect.isasyncgenfunction(method):
        @functools.wraps(method)
        async def stream(self, request, context):
            try:
                async for item in method(self, request, context):
                    yield item
            except (asyncio.CancelledError, grpc.aio.AbortError):
                raise
            except Exception as exc:  # noqa: BLE001
                await _abort(context, method.__name__, exc)
        return stream

    @functools.wraps(method)
    async def unary(self, request, context):
        try:
            return await method(self, request, context)
        except (asyncio.CancelledError, grpc.aio.AbortError):
            raise
        except Exception as exc:  # noqa: BLE001
            await _abort(context, method.__name__, exc)
    return unary


async def _abort(context: grpc.aio.ServicerContext, name: str, exc: Exception) -> None:
    """End the RPC with the status for ``exc``: its own for a ServiceError, INTERNAL (logged) otherwise."""
    if isinstance(exc, ServiceError):
        await context.abort_with_status(exc.to_grpc_status())
        return
    log.exception("%s failed", name, exc_info=exc)
    await context.abort_with_status(internal(f"{type(exc).__name__}: {exc}").to_grpc_status())


class EngineServicer(pb_grpc.EngineServiceServicer):
    """The RPCs. ``host`` is None until the model is loaded (calls then answer UNAVAILABLE)."""

    def __init__(self, model: ServedModel, table: RequestTable, mode: str, max_message_bytes: int,
                 encoder: PromptEncoder | None = None):
        self.model = model
        #: Encodes prompts off the event loop; None: on the loop.
        self.encoder = encoder
        self.table = table
        self.mode = mode
        self.host: EngineHost | None = None
        self.max_message_bytes = max_message_bytes
        self.open_streams = 0

    # -- helpers -------------------------------------------------------------------------------------------
    def _engine(self) -> EngineHost:
        if self.host is None:
            raise ServiceError(grpc.StatusCode.UNAVAILABLE, "MODEL_LOADING", "the model is still loading")
        return self.host

    def _require(self, rpc: str, mode: str) -> None:
        if self.mode != mode:
            raise wrong_mode(rpc, self.mode, mode)

    async def _start(self, request_id: str, prompt: pb.Prompt, config: pb.GenerationConfig,
                     queue_size: int | None) -> LiveRequest:
        host = self._engine()
        max_n = int(self.model.config.get("max_batch_size") or 1)
        errors = FieldErrors()
        source: str | list[int] | None = None
        resolved = None
        try:
            source = convert.prompt_source(prompt, self.model)
        except ServiceError as err:
            errors.violations.extend(err.violations)
        try:
            resolved = convert.resolve_config(config, self.model, max_n)
        except ServiceError as err:
            errors.violations.extend(err.violations)
        ids: list[int] = []
        if source is not None:
            try:
                ids = convert.check_prompt_ids(await self._encode(source), self.model,
                                               max_sequence_length=host.max_sequence_length)
            except ServiceError as err:
                if err.reason != "INVALID_FIELD":
                    raise
                errors.violations.extend(err.violations)
        errors.raise_if_any()
        request_id = self.table.admit(request_id)
        req = LiveRequest(request_id, ids, resolved, self.model, queue_size, self.table.pacing)
        self.table.register(req)
        try:
            await host.add_request(request_id, ids, resolved.prepared, resolved.engine_kwargs["seed"])
        except BaseException:
            self.table.unregister(request_id)
            raise
        return req

    async def _encode(self, source: str | list[int], name: str = "prompt") -> list[int]:
        """Token ids of a prompt source (a text to encode, or ids as given), encoded by the PromptEncoder
        when there is one."""
        if not isinstance(source, str):
            return source
        try:
            if self.encoder is not None:
                return await self.encoder.encode(source)
            return self.model.tokenizer.encode(source)
        except TokenizerError as exc:
            raise invalid_argument([(name, str(exc))]) from exc

    async def _stream(self, req: LiveRequest, queue: OutputQueue, response_type) -> AsyncIterator[Any]:
        request_id = req.request_id
        while True:
            deltas, final = await queue.get_all()
            if final is None:
                yield build_response(response_type, request_id, deltas, None)
                continue
            failure = None
            if any(b.finish_reason == pb.FINISH_REASON_ERROR for b in final.branches):
                failure = internal(f"generation failed: {final.error_message or 'engine error'}")
            elif self.table.draining and any(b.finish_reason == pb.FINISH_REASON_ABORT for b in final.branches):
                failure = shutting_down()
            if failure is not None:
                # what was generated before the failure still reaches the client, then the status ends the RPC
                if deltas:
                    yield build_response(response_type, request_id, deltas, None)
                raise failure
            yield build_response(response_type, request_id, deltas, final)
            return

    async def _abort_and_wait(self, req: LiveRequest) -> None:
        """Abort an unfinished request and wait until the engine confirms (its KV pages are free then)."""
        if req.final is not None or self.host is None:
            return
        req.abort_sent = True
        self.host.abort_request(req.request_id)
        if self.mode == STEPPED:
            return  # a stepped engine reports the abort at its next Step
        try:
            await asyncio.wait_for(asyncio.shield(req.done.wait()), ABORT_CONFIRM_S)
        except asyncio.TimeoutError:
            log.error("engine did not confirm the abort of %s within %.0f s", req.request_id, ABORT_CONFIRM_S)

    # -- generation --------------------------------------------------------------------------------------
    @_status_errors
    async def Generate(self, request: pb.GenerateRequest, context) -> AsyncIterator[pb.GenerateResponse]:
        self._require("Generate", THREADED)
        req = await self._start(request.request_id, request.prompt, request.config, self.table.queue_size)
        self.open_streams += 1
        try:
            async for msg in self._stream(req, req.queues[0], pb.GenerateResponse):
                yield msg
        finally:
            self.open_streams -= 1
            await self._abort_and_wait(req)

    @_status_errors
    async def FollowRequest(self, request: pb.FollowRequestRequest, context) -> AsyncIterator[pb.FollowRequestResponse]:
        self._require("FollowRequest", THREADED)
        req = self.table.live.get(request.request_id)
        if req is None:
            raise not_found(request.request_id)
        queue = req.follow(self.table.queue_size)
        self.open_streams += 1
        try:
            async for msg in self._stream(req, queue, pb.FollowRequestResponse):
                yield msg
        finally:
            self.open_streams -= 1
            req.unfollow(queue)

    # -- engine verbs ------------------------------------------------------------------------------------
    @_status_errors
    async def AddRequest(self, request: pb.AddRequestRequest, context) -> pb.AddRequestResponse:
        req = await self._start(request.request_id, request.prompt, request.config, None)
        return pb.AddRequestResponse(request_id=req.request_id, prompt_token_ids=req.prompt_ids,
                                     effective_config=req.resolved.effective)

    @_status_errors
    async def AbortRequest(self, request: pb.AbortRequestRequest, context) -> pb.AbortRequestResponse:
        if not request.request_id:
            raise invalid_argument([("request_id", "must not be empty")])
        host = self._engine()
        req = self.table.live.get(request.request_id)
        host.abort_request(request.request_id)
        if req is not None:
            req.abort_sent = True
        return pb.AbortRequestResponse(was_live=req is not None)

    @_status_errors
    async def Step(self, request: pb.StepRequest, context) -> pb.StepResponse:
        self._require("Step", STEPPED)
        host = self._engine()
        outputs = await host.step()
        protos = self.table.dispatch(outputs, collect=True)
        # a stop string seen in this step aborted its request (queued on the engine thread): let that run
        # first, so the request's KV pages are free and engine_empty is current when this Step answers
        await host.barrier()
        return pb.StepResponse(outputs=protos, engine_empty=await host.empty())

    @_status_errors
    async def Reset(self, request: pb.ResetRequest, context) -> pb.ResetResponse:
        host = self._engine()
        # The engine's abort outputs may finish some requests before finish_all_locally sees them, and a
        # request may finish on its own while the reset is in flight: count what ended aborted.
        live = list(self.table.live.values())
        await host.reset()
        self.table.finish_all_locally()
        aborted = sum(1 for req in live if req.final is not None and any(
            b.finish_reason == pb.FINISH_REASON_ABORT for b in req.final.branches))
        return pb.ResetResponse(aborted_requests=aborted)

    @_status_errors
    async def Metrics(self, request: pb.MetricsRequest, context) -> pb.MetricsResponse:
        # the server's counts first: a request leaves `live` only once its end, which the engine publishes
        # together with its figures, has been dispatched here, so the engine's snapshot taken after this is
        # never older than the count (an answer with no live request shows none running in the engine)
        live, streams, draining = len(self.table.live), self.open_streams, self.table.draining
        m = await self._engine().metrics()
        return convert.metrics_proto(m, live, streams, draining)

    # -- model utilities ---------------------------------------------------------------------------------
    @_status_errors
    async def GetModelInfo(self, request: pb.GetModelInfoRequest, context) -> pb.GetModelInfoResponse:
        c = self.model.config
        bos = c.get("bos_token_id")
        return pb.GetModelInfoResponse(
            model_id=self.model.model_id, model_type=str(c.get("model_type", "")), dtype=str(c.get("dtype", "")),
            target=str(c.get("target", "")), context_window_size=self.model.context_window_size,
            vocab_size=self.model.vocab_size, max_batch_size=int(c.get("max_batch_size") or 0),
            bos_token_id=-1 if bos is None else int(bos), eos_token_ids=self.model.eos_token_ids,
            has_chat_template=self.model.has_chat_template, source=_source_text(c.get("source")),
            content_hash=str(c.get("content_hash", "")),
            mode=pb.SERVER_MODE_THREADED if self.mode == THREADED else pb.SERVER_MODE_STEPPED,
            spindle_version=spindle.__version__, max_receive_message_bytes=self.max_message_bytes,
            max_queued_requests=self.table.max_live)

    @_status_errors
    async def Tokenize(self, request: pb.TokenizeRequest, context) -> pb.TokenizeResponse:
        ids = await self._encode(convert.tokenize_source(request, self.model), "input")
        return pb.TokenizeResponse(token_ids=ids, tokens=[self.model.token_text(i) for i in ids])

    @_status_errors
    async def Detokenize(self, request: pb.DetokenizeRequest, context) -> pb.DetokenizeResponse:
        errors = FieldErrors()
        vocab = self.model.vocab_size
        for i, tok in enumerate(request.token_ids):
            if not 0 <= tok < vocab:
                errors.add(f"token_ids[{i}]", f"{tok} is not a token id in [0, {vocab})")
        errors.raise_if_any()
        return pb.DetokenizeResponse(text=self.model.decode(request.token_ids, request.skip_special_tokens))


def _source_text(source: Any) -> str:
    if isinstance(source, dict):
        return str(source.get("path") or source.get("name") or source)
    return "" if source is None else str(source)
