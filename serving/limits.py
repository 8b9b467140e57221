"""Per-request limits, checked before any work is spent.

Each violation is a LimitExceededError (INVALID_ARGUMENT) that names the
limit and its value, so a caller knows what to change. The checks read only
a request's shape (task and candidate counts, history length): O(tasks),
cheap enough for the event loop, before the request is decoded.
"""

from __future__ import annotations

from dataclasses import dataclass

from brew.types import ScoreRequest
from serving.config import Limits
from serving.errors import LimitExceededError


@dataclass(frozen=True)
class RequestShape:
    """What the service reads of a request before decoding it: its id, each
    task's name with its candidate count, and the history length."""

    request_id: str
    tasks: tuple[tuple[str, int], ...]
    history_items: int

    @classmethod
    def of(cls, request: ScoreRequest) -> RequestShape:
        return cls(request.request_id, tuple((t.task, len(t.candidates)) for t in request.tasks),
                   len(request.member.history))

    @property
    def candidates(self) -> int:
        return sum(count for _, count in self.tasks)


def check_limits(shape: RequestShape, limits: Limits) -> None:
    if len(shape.tasks) > limits.max_tasks_per_request:
        raise LimitExceededError(
            f"request has {len(shape.tasks)} tasks, over the limit "
            f"max_tasks_per_request={limits.max_tasks_per_request}"
        )
    if shape.candidates > limits.max_candidates_per_request:
        raise LimitExceededError(
            f"request has {shape.candidates} candidates, over the limit "
            f"max_candidates_per_request={limits.max_candidates_per_request}; split it"
        )
    if shape.history_items > limits.max_history_items:
        raise LimitExceededError(
            f"member history has {shape.history_items} items, over the limit "
            f"max_history_items={limits.max_history_items}; send the most recent ones"
        )


def check_message_size(size: int, max_message_bytes: int) -> None:
    """The encoded request's size against the limit (a transport measures it)."""
    if size > max_message_bytes:
        raise LimitExceededError(f"request is {size} bytes, over the limit max_message_bytes={max_message_bytes}")
