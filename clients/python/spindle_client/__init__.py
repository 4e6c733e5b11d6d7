"""Python client of the Spindle gRPC service (spindle.v1.EngineService).

    from spindle_client import SyncClient
    with SyncClient("127.0.0.1:50051") as client:
        print(client.generate("Once upon a time", max_tokens=30, temperature=0).text)
"""

from .aio import AsyncClient, AsyncGenerationStream
from .errors import (AlreadyExistsError, CancelledError, DeadlineExceededError, FailedPreconditionError,
                     FieldViolation, InternalError, InvalidArgumentError, NotFoundError, ResourceExhaustedError,
                     SpindleError, UnavailableError, from_rpc_error)
from .sync import GenerationStream, SyncClient
from .types import Choice, Delta, GenerationResult, ResultBuilder, Usage

__all__ = [
    "AsyncClient", "AsyncGenerationStream", "SyncClient", "GenerationStream", "GenerationResult", "Choice", "Delta",
    "Usage", "ResultBuilder", "SpindleError", "InvalidArgumentError", "AlreadyExistsError", "NotFoundError",
    "ResourceExhaustedError", "FailedPreconditionError", "UnavailableError", "DeadlineExceededError",
    "CancelledError", "InternalError", "FieldViolation", "from_rpc_error",
]
