"""Pure batch collection: which queued requests go into the next engine batch.

No asyncio, no model: given the queue (oldest first), the batch size limit in
candidates, the current time and the engine time the batch will need,
return the batch to dispatch, the requests whose deadline has passed or
would pass before the batch finished, and what stays queued. The batcher
calls it; the tests call it with plain numbers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Queued(Generic[T]):
    """A queued request: its payload, size in candidates and absolute deadline
    (monotonic seconds; None for no deadline)."""

    payload: T
    candidates: int
    deadline: float | None


@dataclass(frozen=True)
class Collected(Generic[T]):
    batch: list[Queued[T]]
    expired: list[Queued[T]]
    remaining: list[Queued[T]]

    @property
    def batch_candidates(self) -> int:
        return sum(q.candidates for q in self.batch)


def collect_batch(queue: Sequence[Queued[T]], max_candidates: int, now: float,
                  time_needed: float = 0.0) -> Collected[T]:
    """Fill a batch in arrival order up to `max_candidates`.

    Expired requests are taken out wherever they are: those whose deadline
    is not after `now + time_needed` (the batch's expected engine time), so
    no engine work is spent on a request that cannot finish in time. A request larger than
    the whole batch limit still goes alone when it reaches the head of the
    queue (admission bounds request size separately), so nothing starves.
    Requests that do not fit wait, in order, for the next batch: no
    overtaking, so a large request is never passed over indefinitely.
    """
    batch: list[Queued[T]] = []
    expired: list[Queued[T]] = []
    remaining: list[Queued[T]] = []
    size = 0
    full = False
    for queued in queue:
        if queued.deadline is not None and queued.deadline <= now + time_needed:
            expired.append(queued)
        elif not full and (not batch or size + queued.candidates <= max_candidates):
            batch.append(queued)
            size += queued.candidates
        else:
            full = True
            remaining.append(queued)
    return Collected(batch=batch, expired=expired, remaining=remaining)
