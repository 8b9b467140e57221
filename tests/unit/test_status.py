"""The status table: every failure's gRPC code and rejection reason."""

from __future__ import annotations

import grpc
import pytest

from brew.errors import (
    BrewError,
    EmptyCandidatesError,
    InvalidRequestError,
    PromptTooLongError,
    TaskConfigError,
    TemplateFieldError,
    UnknownTaskError,
)
from serving.errors import (
    DeadlineExceededError,
    EngineFailedError,
    NotReadyError,
    OverloadedError,
    QueueFullError,
    ShedError,
    ShuttingDownError,
)
from serving.status import status_for

Code = grpc.StatusCode


@pytest.mark.parametrize(
    ("error", "code", "reason"),
    [
        (InvalidRequestError("member is missing"), Code.INVALID_ARGUMENT, "invalid_argument"),
        (UnknownTaskError("unknown task 'x'"), Code.INVALID_ARGUMENT, "invalid_argument"),
        (EmptyCandidatesError("no candidates"), Code.INVALID_ARGUMENT, "invalid_argument"),
        (TemplateFieldError("lacks a field"), Code.INVALID_ARGUMENT, "invalid_argument"),
        (PromptTooLongError("too long"), Code.INVALID_ARGUMENT, "invalid_argument"),
        (QueueFullError("queue full"), Code.RESOURCE_EXHAUSTED, "queue_full"),
        (OverloadedError("overloaded"), Code.RESOURCE_EXHAUSTED, "overloaded"),
        (DeadlineExceededError("deadline"), Code.DEADLINE_EXCEEDED, "deadline"),
        (ShedError("shed at dispatch"), Code.DEADLINE_EXCEEDED, "shed"),
        (ShuttingDownError("draining"), Code.UNAVAILABLE, "shutting_down"),
        (NotReadyError("warming up"), Code.UNAVAILABLE, "not_ready"),
        (EngineFailedError("device lost"), Code.UNAVAILABLE, "engine_failed"),
        (TaskConfigError("label word is 2 tokens"), Code.FAILED_PRECONDITION, "task_config"),
    ],
)
def test_each_failure_has_its_code(error, code, reason):
    assert status_for(error) == (code, reason)


@pytest.mark.parametrize(
    "error", [RuntimeError("bug"), KeyError("x"), BrewError("unclassified"), ValueError()]
)
def test_anything_else_is_internal(error):
    assert status_for(error) == (Code.INTERNAL, "internal")
