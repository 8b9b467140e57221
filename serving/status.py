"""The status table: which gRPC code answers which failure.

| failure                                   | code               |
|-------------------------------------------|--------------------|
| bad input, a request over a limit         | INVALID_ARGUMENT   |
| queue full, overloaded (the queue's wait  | RESOURCE_EXHAUSTED |
|   would outlast the deadline)             |                    |
| deadline passed or cannot be met, shed    | DEADLINE_EXCEEDED  |
|   from the queue at dispatch              |                    |
| not ready, draining, engine failed        | UNAVAILABLE        |
| a task definition broken at request time  | FAILED_PRECONDITION|
| new prompts failed their checks (reload)  | FAILED_PRECONDITION|
| anything else                             | INTERNAL (logged with its traceback) |

Only UNAVAILABLE is worth retrying as is; RESOURCE_EXHAUSTED after a backoff.
The errors and their rejection reasons are transport-neutral (brew.errors,
serving.errors); only the codes are gRPC's.
"""

from __future__ import annotations

import grpc

from brew.errors import InvalidRequestError, TaskConfigError
from serving.errors import (
    DeadlineExceededError,
    EngineFailedError,
    NotReadyError,
    PromptReloadError,
    QueueFullError,
    ShuttingDownError,
    reason_of,
)

# First match wins; subclasses before their bases.
STATUS_TABLE: tuple[tuple[type[BaseException], grpc.StatusCode], ...] = (
    (InvalidRequestError, grpc.StatusCode.INVALID_ARGUMENT),
    (QueueFullError, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (DeadlineExceededError, grpc.StatusCode.DEADLINE_EXCEEDED),
    (ShuttingDownError, grpc.StatusCode.UNAVAILABLE),
    (NotReadyError, grpc.StatusCode.UNAVAILABLE),
    (EngineFailedError, grpc.StatusCode.UNAVAILABLE),
    (TaskConfigError, grpc.StatusCode.FAILED_PRECONDITION),
    (PromptReloadError, grpc.StatusCode.FAILED_PRECONDITION),
)


def code_for(error: BaseException) -> grpc.StatusCode:
    for kind, code in STATUS_TABLE:
        if isinstance(error, kind):
            return code
    return grpc.StatusCode.INTERNAL


def status_for(error: BaseException) -> tuple[grpc.StatusCode, str]:
    """The gRPC code and the rejection reason (a metric label) of an error."""
    code = code_for(error)
    return code, reason_of(error) if code is not grpc.StatusCode.INTERNAL else "internal"
