"""Admission: which work the dispatcher takes, decided by time.

A pure policy over a clock (injectable, so tests drive it with a fake one);
the dispatcher asks it at the door, at dispatch and after every batch.

At the door (`check`), in this order:
  - a request larger than the whole queue (`max_queue_candidates`), or one
    that does not fit under the hard cap now: QueueFullError;
  - a deadline shorter than the request's own engine time, even on an idle
    engine: DeadlineExceededError (a retry cannot help);
  - a deadline that the work already queued makes impossible: the expected
    wait (queue work / recent throughput) plus its own engine time run past
    it: OverloadedError, in microseconds, instead of waiting out the
    deadline in the queue;
  - a queue over the adaptive limit: QueueFullError. A request that finds
    the queue empty is always let in, so a large one never starves.

At dispatch (`time_needed`): a queued request whose deadline falls before
its batch could finish is shed without any engine work (the dispatcher
raises ShedError), so stale requests make room for fresh ones.

The adaptive limit (AIMD on CoDel's signal): after every dispatch the
policy sees how long the oldest request of the batch waited. Above
`target_queue_delay_seconds` the queue is standing, not absorbing a burst:
the limit shrinks by DECREASE_FACTOR. Within the target, while the queue
uses at least half the limit, it grows by a quarter batch. It moves between
one batch (`max_batch_candidates`: batches stay full, so throughput is
kept) and `max_queue_candidates`; it starts at the latter. The limit is in
candidates but follows the engine: a fast engine clears a long queue within
the target, a slow one keeps about a batch waiting.

Throughput is candidates per second of engine-busy time, smoothed over
batches. Only saturated batches (full, or with work left waiting) may lower
it: an idle engine's small batches would otherwise make it look slow, and a
pessimistic estimate refuses work that would have made its deadline. Until
a first batch is measured nothing is refused on time grounds.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from serving.config import BatchingConfig
from serving.errors import DeadlineExceededError, OverloadedError, QueueFullError

# Weight of the newest sample in the moving average of throughput.
THROUGHPUT_SMOOTHING = 0.3
# The adaptive limit's multiplicative decrease, per batch whose head waited too long.
DECREASE_FACTOR = 0.8
# Its additive increase, per batch within the target while the queue is in use, in batches.
INCREASE_BATCHES = 0.25
# Finishes closer together than this are one throughput sample.
MIN_SAMPLE_SECONDS = 0.001


class AdmissionPolicy:
    """Admission decisions, the adaptive queue limit and the throughput estimate."""

    def __init__(self, config: BatchingConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._max_queue = config.max_queue_candidates
        self._min_limit = min(config.max_batch_candidates, config.max_queue_candidates)
        self._step = max(1, round(config.max_batch_candidates * INCREASE_BATCHES))
        self._target = config.target_queue_delay_seconds
        self._limit = self._max_queue
        self._throughput: float | None = None  # candidates per engine-busy second
        self._inflight_batches = 0
        self._mark = 0.0  # start of the current throughput sample
        self._done = 0  # candidates finished since `_mark`

    @property
    def limit(self) -> int:
        """The adaptive queue limit, in candidates."""
        return self._limit

    @property
    def throughput(self) -> float | None:
        """Recent throughput in candidates per second; None before a first batch."""
        return self._throughput

    def expected_wait(self, queued: int, inflight: int) -> float:
        """Seconds until the work ahead of a new request is done: what is
        queued, and on average half of what is in the engine."""
        if not self._throughput:
            return 0.0
        return (queued + inflight / 2) / self._throughput

    def time_needed(self, candidates: int) -> float:
        """Engine seconds `candidates` take at the recent throughput (0 before a first batch)."""
        return candidates / self._throughput if self._throughput else 0.0

    def check(self, candidates: int, deadline: float | None, queued: int, inflight: int) -> None:
        """Raise the refusal for a request of `candidates` joining `queued`
        (with `inflight` in the engine), or return if it is admitted."""
        if candidates > self._max_queue:
            raise QueueFullError(
                f"request has {candidates} candidates; the queue holds at most {self._max_queue}"
            )
        if queued + candidates > self._max_queue:
            raise QueueFullError(
                f"queue full: {queued} of {self._max_queue} candidates waiting; retry with backoff"
            )
        if deadline is not None and self._throughput:
            left = deadline - self._clock()
            own = self.time_needed(candidates)
            if own > left:
                raise DeadlineExceededError(
                    f"deadline cannot be met: scoring {candidates} candidates takes about {own:.3f}s, "
                    f"{max(left, 0.0):.3f}s were left"
                )
            wait = self.expected_wait(queued, inflight)
            if wait + own > left:
                raise OverloadedError(
                    f"overloaded: the queue needs about {wait:.3f}s before this request could be scored, "
                    f"its deadline leaves {max(left, 0.0):.3f}s; retry with backoff or on another replica"
                )
        if queued and queued + candidates > self._limit:
            raise QueueFullError(
                f"queue full: {queued} candidates waiting, over the adaptive limit of {self._limit} "
                "(it keeps queue delay near its target); retry with backoff"
            )

    def batch_dispatched(self, candidates: int, head_wait: float, queued_before: int) -> None:
        """A batch went to the engine: its oldest request waited `head_wait`
        seconds; `queued_before` candidates were queued when it was taken."""
        if self._inflight_batches == 0:
            self._mark, self._done = self._clock(), 0
        self._inflight_batches += 1
        if head_wait > self._target:
            self._limit = max(self._min_limit, int(self._limit * DECREASE_FACTOR))
        elif queued_before * 2 >= self._limit:
            self._limit = min(self._max_queue, self._limit + self._step)

    def batch_finished(self, candidates: int, saturated: bool) -> None:
        """A batch's engine work is over; `saturated`: it was full or left work waiting."""
        now = self._clock()
        self._inflight_batches = max(0, self._inflight_batches - 1)
        self._done += candidates
        elapsed = now - self._mark
        if elapsed < MIN_SAMPLE_SECONDS:
            if not self._inflight_batches:
                self._done = 0  # too short to measure, and nothing left to merge it with
            return
        sample = self._done / elapsed
        self._mark, self._done = now, 0
        if self._throughput is None:
            self._throughput = sample
        elif saturated or sample > self._throughput:
            self._throughput += THROUGHPUT_SMOOTHING * (sample - self._throughput)

    def forget(self) -> None:
        """Drop what was measured (after a warm-up, which pays for lazy
        initialisation and says nothing about the engine's speed)."""
        self._throughput = None
        self._limit = self._max_queue
