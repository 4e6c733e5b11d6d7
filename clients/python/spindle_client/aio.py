"""AsyncClient: the asyncio client of spindle.v1.EngineService (same surface as SyncClient)."""

from __future__ import annotations

from typing import Any, AsyncIterator, Mapping, Sequence

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from .errors import from_rpc_error
from .sync import DEFAULT_MAX_MESSAGE_BYTES, DEFAULT_TARGET, channel_options, generate_request
from .types import Delta, GenerationResult, ResultBuilder, make_config, make_prompt
from .v1 import engine_pb2 as pb
from .v1 import engine_pb2_grpc as pb_grpc


class AsyncGenerationStream:
    """Async-iterates the deltas of a streamed generation; ``result`` holds the full result once it ended."""

    def __init__(self, call: Any):
        self._call = call
        self._builder = ResultBuilder()
        self.result: GenerationResult | None = None

    @property
    def request_id(self) -> str:
        return self._builder.request_id

    async def __aiter__(self) -> AsyncIterator[Delta]:
        try:
            async for msg in self._call:
                for delta in self._builder.add(msg):
                    yield delta
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from None
        self.result = self._builder.result()

    def cancel(self) -> None:
        self._call.cancel()


class AsyncClient:
    """Asyncio client. Use as ``async with AsyncClient(...) as client``, or await ``close``."""

    def __init__(self, target: str = DEFAULT_TARGET, *, timeout: float | None = None,
                 max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES, channel: grpc.aio.Channel | None = None):
        self.target = target
        self.timeout = timeout
        self._channel = channel or grpc.aio.insecure_channel(target, options=channel_options(max_message_bytes))
        self._stub = pb_grpc.EngineServiceStub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    async def close(self) -> None:
        await self._channel.close()

    async def _call(self, method: Any, request: Any, timeout: float | None) -> Any:
        try:
            return await method(request, timeout=timeout if timeout is not None else self.timeout)
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from None

    def stream(self, prompt: Any = None, *, messages: Sequence[Mapping[str, str]] | None = None,
               token_ids: Sequence[int] | None = None, request_id: str = "", timeout: float | None = None,
               **config: Any) -> AsyncGenerationStream:
        request = generate_request(prompt, messages=messages, token_ids=token_ids, request_id=request_id, **config)
        return AsyncGenerationStream(self._stub.Generate(request, timeout=timeout if timeout is not None else self.timeout))

    async def generate(self, prompt: Any = None, *, messages: Sequence[Mapping[str, str]] | None = None,
                       token_ids: Sequence[int] | None = None, request_id: str = "", timeout: float | None = None,
                       **config: Any) -> GenerationResult:
        request = generate_request(prompt, messages=messages, token_ids=token_ids, request_id=request_id, **config)
        builder = ResultBuilder()
        collect = builder.collect
        try:
            async for msg in self._stub.Generate(request, timeout=timeout if timeout is not None else self.timeout):
                collect(msg)
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from None
        return builder.result()

    def follow(self, request_id: str, timeout: float | None = None) -> AsyncGenerationStream:
        call = self._stub.FollowRequest(pb.FollowRequestRequest(request_id=request_id),
                                        timeout=timeout if timeout is not None else self.timeout)
        return AsyncGenerationStream(call)

    async def add_request(self, prompt: Any = None, *, messages: Sequence[Mapping[str, str]] | None = None,
                          token_ids: Sequence[int] | None = None, request_id: str = "",
                          timeout: float | None = None, **config: Any) -> pb.AddRequestResponse:
        request = pb.AddRequestRequest(request_id=request_id,
                                       prompt=make_prompt(prompt, messages=messages, token_ids=token_ids),
                                       config=make_config(**config))
        return await self._call(self._stub.AddRequest, request, timeout)

    async def abort_request(self, request_id: str, timeout: float | None = None) -> bool:
        resp = await self._call(self._stub.AbortRequest, pb.AbortRequestRequest(request_id=request_id), timeout)
        return resp.was_live

    async def step(self, timeout: float | None = None) -> pb.StepResponse:
        return await self._call(self._stub.Step, pb.StepRequest(), timeout)

    async def reset(self, timeout: float | None = None) -> int:
        return (await self._call(self._stub.Reset, pb.ResetRequest(), timeout)).aborted_requests

    async def metrics(self, timeout: float | None = None) -> pb.MetricsResponse:
        return await self._call(self._stub.Metrics, pb.MetricsRequest(), timeout)

    async def model_info(self, timeout: float | None = None) -> pb.GetModelInfoResponse:
        return await self._call(self._stub.GetModelInfo, pb.GetModelInfoRequest(), timeout)

    async def tokenize(self, text: str | None = None, *, messages: Sequence[Mapping[str, str]] | None = None,
                       timeout: float | None = None) -> list[int]:
        if (text is None) == (messages is None):
            raise TypeError("give exactly one of text or messages")
        request = (pb.TokenizeRequest(text=text) if text is not None
                   else pb.TokenizeRequest(chat=make_prompt(messages=messages).chat))
        return list((await self._call(self._stub.Tokenize, request, timeout)).token_ids)

    async def detokenize(self, token_ids: Sequence[int], skip_special_tokens: bool = False,
                         timeout: float | None = None) -> str:
        request = pb.DetokenizeRequest(token_ids=list(token_ids), skip_special_tokens=skip_special_tokens)
        return (await self._call(self._stub.Detokenize, request, timeout)).text

    async def health(self, service: str = "", timeout: float | None = None) -> str:
        resp = await self._call(self._health.Check, health_pb2.HealthCheckRequest(service=service), timeout)
        return health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status)
