"""Typed exceptions for the Spindle client, carrying the gRPC status and the google.rpc details."""

from __future__ import annotations

from dataclasses import dataclass

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status


@dataclass(frozen=True)
class FieldViolation:
    """One bad field of a request, as the server named it (e.g. ``config.temperature``)."""

    field: str
    description: str


class SpindleError(Exception):
    """A failed call: ``code`` (grpc.StatusCode), ``message``, ``reason`` (ErrorInfo), ``field_violations``."""

    def __init__(self, code: grpc.StatusCode, message: str, reason: str = "",
                 field_violations: tuple[FieldViolation, ...] = (), metadata: dict[str, str] | None = None,
                 retry_delay_s: float | None = None):
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message
        self.reason = reason
        self.field_violations = tuple(field_violations)
        self.metadata = dict(metadata or {})
        self.retry_delay_s = retry_delay_s

    @property
    def fields(self) -> list[str]:
        """The names of the offending fields."""
        return [v.field for v in self.field_violations]


class InvalidArgumentError(SpindleError):
    """A field of the request is invalid (see ``field_violations``), or the prompt is too long."""


class AlreadyExistsError(SpindleError):
    """The request id is already used by a live request."""


class NotFoundError(SpindleError):
    """No live request has that id."""


class ResourceExhaustedError(SpindleError):
    """The server holds too many requests; retry after ``retry_delay_s``."""


class FailedPreconditionError(SpindleError):
    """The call is not allowed in the server's mode (threaded vs stepped)."""


class UnavailableError(SpindleError):
    """The server is unreachable, still loading the model, or shutting down."""


class DeadlineExceededError(SpindleError):
    """The call's deadline passed."""


class CancelledError(SpindleError):
    """The call was cancelled."""


class InternalError(SpindleError):
    """The server failed (an engine error or a broken invariant)."""


_BY_CODE = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgumentError,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExistsError,
    grpc.StatusCode.NOT_FOUND: NotFoundError,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhaustedError,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPreconditionError,
    grpc.StatusCode.UNAVAILABLE: UnavailableError,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceededError,
    grpc.StatusCode.CANCELLED: CancelledError,
    grpc.StatusCode.INTERNAL: InternalError,
}


def from_rpc_error(error: grpc.RpcError) -> SpindleError:
    """The typed exception for a failed call, with the details of its google.rpc.Status."""
    code = error.code() if callable(getattr(error, "code", None)) else grpc.StatusCode.UNKNOWN
    message = error.details() if callable(getattr(error, "details", None)) else str(error)
    reason, violations, metadata, retry = "", [], {}, None
    try:
        status = rpc_status.from_call(error)
    except (ValueError, AttributeError):
        status = None
    if status is not None:
        message = status.message or message
        for detail in status.details:
            if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                bad = error_details_pb2.BadRequest()
                detail.Unpack(bad)
                violations.extend(FieldViolation(v.field, v.description) for v in bad.field_violations)
            elif detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
                reason, metadata = info.reason, dict(info.metadata)
            elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
                ri = error_details_pb2.RetryInfo()
                detail.Unpack(ri)
                retry = ri.retry_delay.seconds + ri.retry_delay.nanos / 1e9
    cls = _BY_CODE.get(code, SpindleError)
    return cls(code, message or "", reason, tuple(violations), metadata, retry)
