"""The status table: which gRPC code answers which failure.

| failure                                   | code               |
|-------------------------------------------|--------------------|
| bad input, a request over a limit         | INVALID_ARGUMENT   |
| queue full                                | RESOURCE_EXHAUSTED |
| deadline passed or cannot be met          | DEADLINE_EXCEEDED  |
| not ready, draining, engine failed        | UNAVAILABLE        |
| a task definition broken at request time  | FAILED_PRECONDITION|
| anything else                             | INTERNAL (logged with its traceback) |

Only UNAVAILABLE is worth retrying as is; RESOURCE_EXHAUSTED after a backoff.
"""

from __future__ import annotations

import grpc

from brew.errors import BrewError, InvalidRequestError, TaskConfigError
from serving.batcher import DeadlineExceededError, EngineFailedError, QueueFullError, ShuttingDownError


class NotReadyError(BrewError):
    """The model is not loaded and warmed up yet, or health is NOT_SERVING."""


# First match wins; subclasses before their bases.
STATUS_TABLE: tuple[tuple[type[BaseException], grpc.StatusCode, str], ...] = (
    (InvalidRequestError, grpc.StatusCode.INVALID_ARGUMENT, "invalid_argument"),
    (QueueFullError, grpc.StatusCode.RESOURCE_EXHAUSTED, "queue_full"),
    (DeadlineExceededError, grpc.StatusCode.DEADLINE_EXCEEDED, "deadline"),
    (ShuttingDownError, grpc.StatusCode.UNAVAILABLE, "shutting_down"),
    (NotReadyError, grpc.StatusCode.UNAVAILABLE, "not_ready"),
    (EngineFailedError, grpc.StatusCode.UNAVAILABLE, "engine_failed"),
    (TaskConfigError, grpc.StatusCode.FAILED_PRECONDITION, "task_config"),
)


def status_for(error: BaseException) -> tuple[grpc.StatusCode, str]:
    """The gRPC code and the rejection reason (a metric label) of an error."""
    for kind, code, reason in STATUS_TABLE:
        if isinstance(error, kind):
            return code, reason
    return grpc.StatusCode.INTERNAL, "internal"
