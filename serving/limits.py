"""Per-request limits, checked before any work is spent.

Each violation is an InvalidRequestError (INVALID_ARGUMENT) that names the
limit and its value, so a caller knows what to change.
"""

from __future__ import annotations

from brew.errors import InvalidRequestError
from brew.v1 import ranking_pb2 as pb
from serving.config import Limits


class LimitExceededError(InvalidRequestError):
    """A request is over one of the server's per-request limits."""


def check_limits(request: pb.ScoreCandidatesRequest, limits: Limits, max_message_bytes: int) -> None:
    size = request.ByteSize()
    if size > max_message_bytes:
        raise LimitExceededError(
            f"request is {size} bytes, over the limit max_message_bytes={max_message_bytes}"
        )
    if len(request.tasks) > limits.max_tasks_per_request:
        raise LimitExceededError(
            f"request has {len(request.tasks)} tasks, over the limit "
            f"max_tasks_per_request={limits.max_tasks_per_request}"
        )
    candidates = sum(len(task.candidates) for task in request.tasks)
    if candidates > limits.max_candidates_per_request:
        raise LimitExceededError(
            f"request has {candidates} candidates, over the limit "
            f"max_candidates_per_request={limits.max_candidates_per_request}; split it"
        )
    history = len(request.member.history)
    if history > limits.max_history_items:
        raise LimitExceededError(
            f"member history has {history} items, over the limit max_history_items={limits.max_history_items}; "
            f"send the most recent ones"
        )
