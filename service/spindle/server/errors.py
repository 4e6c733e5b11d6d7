"""Service errors and their google.rpc.Status form (BadRequest field violations, ErrorInfo, RetryInfo).

Every failure the server reports is a ``ServiceError``: a status code, a message, an ErrorInfo reason in
the ``spindle.dev`` domain and, for INVALID_ARGUMENT, the list of offending fields.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

DOMAIN = "spindle.dev"


class ServiceError(Exception):
    """An error with a gRPC status code, an ErrorInfo reason and optional field violations."""

    def __init__(self, code: grpc.StatusCode, reason: str, message: str,
                 violations: Sequence[tuple[str, str]] = (), metadata: dict[str, str] | None = None,
                 retry_after_s: float | None = None):
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.violations = list(violations)
        self.metadata = dict(metadata or {})
        self.retry_after_s = retry_after_s

    def to_status_proto(self) -> status_pb2.Status:
        details = []
        if self.violations:
            bad = error_details_pb2.BadRequest(field_violations=[
                error_details_pb2.BadRequest.FieldViolation(field=f, description=d) for f, d in self.violations])
            details.append(_pack(bad))
        details.append(_pack(error_details_pb2.ErrorInfo(reason=self.reason, domain=DOMAIN, metadata=self.metadata)))
        if self.retry_after_s is not None:
            secs = int(self.retry_after_s)
            delay = duration_pb2.Duration(seconds=secs, nanos=int((self.retry_after_s - secs) * 1e9))
            details.append(_pack(error_details_pb2.RetryInfo(retry_delay=delay)))
        return status_pb2.Status(code=getattr(code_pb2, self.code.name), message=self.message, details=details)

    def to_grpc_status(self) -> grpc.Status:
        return rpc_status.to_status(self.to_status_proto())


def _pack(message) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


class FieldErrors:
    """Collects field violations while validating a request; ``raise_if_any`` turns them into one error."""

    def __init__(self) -> None:
        self.violations: list[tuple[str, str]] = []

    def add(self, field: str, description: str) -> None:
        self.violations.append((field, description))

    def __bool__(self) -> bool:
        return bool(self.violations)

    def raise_if_any(self) -> None:
        if self.violations:
            raise invalid_argument(self.violations)


def invalid_argument(violations: Iterable[tuple[str, str]], reason: str = "INVALID_FIELD",
                     metadata: dict[str, str] | None = None) -> ServiceError:
    violations = list(violations)
    message = "; ".join(f"{f}: {d}" for f, d in violations) or "invalid request"
    return ServiceError(grpc.StatusCode.INVALID_ARGUMENT, reason, message, violations, metadata)


def prompt_too_long(field: str, prompt_tokens: int, limit: int) -> ServiceError:
    return invalid_argument(
        [(field, f"the prompt has {prompt_tokens} tokens; sequences are limited to {limit} tokens (prompt "
                 f"and output), so the prompt must have at most {limit - 1}")],
        reason="PROMPT_TOO_LONG", metadata={"prompt_tokens": str(prompt_tokens), "context_window_size": str(limit)})


def already_exists(request_id: str) -> ServiceError:
    return ServiceError(grpc.StatusCode.ALREADY_EXISTS, "DUPLICATE_REQUEST_ID",
                        f"request_id {request_id!r} is already live on this server",
                        [("request_id", "already in use by a live request")], {"request_id": request_id})


def not_found(request_id: str) -> ServiceError:
    return ServiceError(grpc.StatusCode.NOT_FOUND, "UNKNOWN_REQUEST",
                        f"no live request with request_id {request_id!r}", [("request_id", "no live request")],
                        {"request_id": request_id})


def queue_full(live: int, limit: int) -> ServiceError:
    return ServiceError(grpc.StatusCode.RESOURCE_EXHAUSTED, "QUEUE_FULL",
                        f"the server holds {live} requests, its limit is {limit}; retry later",
                        metadata={"live_requests": str(live), "max_queued_requests": str(limit)}, retry_after_s=1.0)


def shutting_down() -> ServiceError:
    return ServiceError(grpc.StatusCode.UNAVAILABLE, "SHUTTING_DOWN", "the server is shutting down")


def wrong_mode(rpc: str, mode: str, needed: str) -> ServiceError:
    return ServiceError(grpc.StatusCode.FAILED_PRECONDITION, "WRONG_MODE",
                        f"{rpc} needs a server in {needed} mode; this server runs in {mode} mode",
                        metadata={"mode": mode, "required_mode": needed})


def internal(message: str) -> ServiceError:
    return ServiceError(grpc.StatusCode.INTERNAL, "ENGINE_ERROR", message)
