"""SyncClient: a blocking client of spindle.v1.EngineService."""

from __future__ import annotations

from typing import Any, Iterator, Mapping, Sequence

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from .errors import from_rpc_error
from .types import Delta, GenerationResult, ResultBuilder, make_config, make_prompt
from .v1 import engine_pb2 as pb
from .v1 import engine_pb2_grpc as pb_grpc

DEFAULT_TARGET = "127.0.0.1:50051"
DEFAULT_MAX_MESSAGE_BYTES = 4 * 1024 * 1024


# The HTTP/2 window of a stream: fixed instead of grown by bandwidth-delay probing, which pings the server
# for every burst of data received, i.e. for nearly every message of a generation stream.
STREAM_WINDOW_BYTES = 4 * 1024 * 1024


def channel_options(max_message_bytes: int) -> list[tuple[str, int]]:
    return [("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.http2.bdp_probe", 0), ("grpc.http2.lookahead_bytes", STREAM_WINDOW_BYTES)]


def generate_request(prompt: Any = None, *, messages: Sequence[Mapping[str, str]] | None = None,
                     token_ids: Sequence[int] | None = None, request_id: str = "",
                     **config: Any) -> pb.GenerateRequest:
    return pb.GenerateRequest(request_id=request_id or "",
                              prompt=make_prompt(prompt, messages=messages, token_ids=token_ids),
                              config=make_config(**config))


class GenerationStream:
    """Iterates the deltas of a streamed generation; ``result`` holds the full result once it ended."""

    def __init__(self, call: Any):
        self._call = call
        self._builder = ResultBuilder()
        self.result: GenerationResult | None = None

    @property
    def request_id(self) -> str:
        return self._builder.request_id

    def __iter__(self) -> Iterator[Delta]:
        try:
            for msg in self._call:
                yield from self._builder.add(msg)
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from None
        self.result = self._builder.result()

    def cancel(self) -> None:
        """Cancel the call; the server aborts the request in the engine."""
        self._call.cancel()


class SyncClient:
    """Blocking client. Use as a context manager, or call ``close``."""

    def __init__(self, target: str = DEFAULT_TARGET, *, timeout: float | None = None,
                 max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES, channel: grpc.Channel | None = None):
        self.target = target
        self.timeout = timeout
        self._channel = channel or grpc.insecure_channel(target, options=channel_options(max_message_bytes))
        self._stub = pb_grpc.EngineServiceStub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)

    def __enter__(self) -> "SyncClient":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        self._channel.close()

    def _call(self, method: Any, request: Any, timeout: float | None) -> Any:
        try:
            return method(request, timeout=timeout if timeout is not None else self.timeout)
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from None

    # -- generation --------------------------------------------------------------------------------------
    def stream(self, prompt: Any = None, *, messages: Sequence[Mapping[str, str]] | None = None,
               token_ids: Sequence[int] | None = None, request_id: str = "", timeout: float | None = None,
               **config: Any) -> GenerationStream:
        """Start a generation; iterate the result for Delta objects. Options are GenerationConfig fields."""
        request = generate_request(prompt, messages=messages, token_ids=token_ids, request_id=request_id, **config)
        call = self._stub.Generate(request, timeout=timeout if timeout is not None else self.timeout)
        return GenerationStream(call)

    def generate(self, prompt: Any = None, *, messages: Sequence[Mapping[str, str]] | None = None,
                 token_ids: Sequence[int] | None = None, request_id: str = "", timeout: float | None = None,
                 **config: Any) -> GenerationResult:
        """Generate to the end and return the collected result (text, token ids, finish reason, usage...)."""
        request = generate_request(prompt, messages=messages, token_ids=token_ids, request_id=request_id, **config)
        builder = ResultBuilder()
        collect = builder.collect
        try:
            for msg in self._stub.Generate(request, timeout=timeout if timeout is not None else self.timeout):
                collect(msg)
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from None
        return builder.result()

    def follow(self, request_id: str, timeout: float | None = None) -> GenerationStream:
        """Follow the outputs of a request queued with ``add_request`` (threaded servers)."""
        call = self._stub.FollowRequest(pb.FollowRequestRequest(request_id=request_id),
                                        timeout=timeout if timeout is not None else self.timeout)
        return GenerationStream(call)

    # -- engine verbs ------------------------------------------------------------------------------------
    def add_request(self, prompt: Any = None, *, messages: Sequence[Mapping[str, str]] | None = None,
                    token_ids: Sequence[int] | None = None, request_id: str = "", timeout: float | None = None,
                    **config: Any) -> pb.AddRequestResponse:
        request = pb.AddRequestRequest(request_id=request_id,
                                       prompt=make_prompt(prompt, messages=messages, token_ids=token_ids),
                                       config=make_config(**config))
        return self._call(self._stub.AddRequest, request, timeout)

    def abort_request(self, request_id: str, timeout: float | None = None) -> bool:
        """Abort a request; returns whether it was still live."""
        return self._call(self._stub.AbortRequest, pb.AbortRequestRequest(request_id=request_id), timeout).was_live

    def step(self, timeout: float | None = None) -> pb.StepResponse:
        """Advance a stepped server's engine by one step; returns what it produced."""
        return self._call(self._stub.Step, pb.StepRequest(), timeout)

    def reset(self, timeout: float | None = None) -> int:
        """Abort every request; returns how many were live."""
        return self._call(self._stub.Reset, pb.ResetRequest(), timeout).aborted_requests

    def metrics(self, timeout: float | None = None) -> pb.MetricsResponse:
        return self._call(self._stub.Metrics, pb.MetricsRequest(), timeout)

    # -- utilities ---------------------------------------------------------------------------------------
    def model_info(self, timeout: float | None = None) -> pb.GetModelInfoResponse:
        return self._call(self._stub.GetModelInfo, pb.GetModelInfoRequest(), timeout)

    def tokenize(self, text: str | None = None, *, messages: Sequence[Mapping[str, str]] | None = None,
                 timeout: float | None = None) -> list[int]:
        if (text is None) == (messages is None):
            raise TypeError("give exactly one of text or messages")
        if text is not None:
            request = pb.TokenizeRequest(text=text)
        else:
            request = pb.TokenizeRequest(chat=make_prompt(messages=messages).chat)
        return list(self._call(self._stub.Tokenize, request, timeout).token_ids)

    def detokenize(self, token_ids: Sequence[int], skip_special_tokens: bool = False,
                   timeout: float | None = None) -> str:
        request = pb.DetokenizeRequest(token_ids=list(token_ids), skip_special_tokens=skip_special_tokens)
        return self._call(self._stub.Detokenize, request, timeout).text

    def health(self, service: str = "", timeout: float | None = None) -> str:
        """The grpc.health.v1 status name ("SERVING", "NOT_SERVING", ...)."""
        resp = self._call(self._health.Check, health_pb2.HealthCheckRequest(service=service), timeout)
        return health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status)
