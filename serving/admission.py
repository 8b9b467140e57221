"""Admission: which work the dispatcher takes, decided by time.

A pure policy over a clock (injectable, so tests drive it with a fake one);
the dispatcher asks it at the door, at dispatch and after every batch.

At the door (`check`), in this order:
  - a request larger than the whole queue (`max_queue_candidates`), or one
    that does not fit under that hard cap now: QueueFullError;
  - a deadline shorter than the request's own engine time at the best
    throughput seen: DeadlineExceededError (a retry cannot help);
  - a finish time that the work ahead (being rendered, queued, or in the
    engine) makes impossible: OverloadedError, in microseconds, instead of
    waiting out the deadline in the queue. The finish time is the
    admission target's (`admission_target`): under `slo` (the default) the
    earlier of the deadline and the request's SLO (`slo`: the server's
    slo_ms from arrival, or its task's own), so what is admitted is
    answered in time and a caller with a long deadline, or none, does not
    push the others past the SLO; under `deadline`, the deadline alone. A
    request whose own work alone does not fit in the SLO is judged by its
    deadline (no queue could bring it within the SLO: refusing it would
    only starve it). The work is counted as the
    engine does it: a batch finishes as a whole (its callers' work is
    interleaved, or scheduled into the same steps) and batches in flight
    share the engine, so a request is scored when the work in flight, the
    queue ahead of it and its own batch are done (its batch filled to the
    recent batch size if it waits for a slot), at the recent throughput;
    before that, the requests admitted ahead of it and itself are rendered
    one after another (Python holds the GIL while it renders), at the
    recent time per request. Admission is the cautious side: the estimate
    must fit in DEADLINE_SHARE of the time left to the deadline, SLO_SHARE
    of the time left to the SLO (headroom for what it does not see: the
    transport, a batch slower than the last ones; the SLO's is larger, as
    it bounds the p99 of the answers, not each one). An idle
    server never refuses this way: the next batch measures the engine;
  - a queue over the adaptive limit: QueueFullError. A request that finds
    the queue empty is always let in, so a large one never starves.

At dispatch (`time_needed`): a queued request whose deadline falls before
its batch could finish is shed without any engine work (the dispatcher
raises ShedError), so stale requests make room for fresh ones. Shedding is
the hopeful side: a batch is counted alone, with half the work in flight.

The adaptive limit (AIMD on CoDel's signal): after every dispatch the
policy sees how long the oldest request of the batch waited. Above
the target (`target_queue_delay_ms`; under the `slo` target at most half
the server's SLO, so a standing queue leaves the engine the other half)
the queue is standing, not absorbing a burst:
the limit shrinks by DECREASE_FACTOR. Within the target, while the queue
uses at least half the limit, it grows by a quarter batch. It moves between
one batch (`max_batch_candidates`: batches stay full, so throughput is
kept) and `max_queue_candidates`; it starts at the latter. The limit is in
candidates but follows the engine: a fast engine clears a long queue within
the target, a slow one keeps about a batch waiting.

Throughput is candidates scored per second of engine-busy time: the
candidates and the seconds between batch finishes are summed with
exponentially fading weights (batches in flight together finish close
together, so a single interval says little; the sums do). Only intervals
that end with a saturated batch (full, or with work left waiting) may lower
it: an idle engine's small batches would make it look slow. When callers of
a batch left (deadline, cancellation), only the candidates delivered count,
over their share of the interval; a batch nobody received says nothing of
the engine's speed (everybody's deadline passed), and taking it for speed
would lock the server into refusing. Until a first interval is measured
nothing is refused on time grounds. The own-work check uses the best
throughput seen since the last `forget`, so a transient slowdown never
locks out a request that the engine at its best would serve.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from serving.config import AdmissionTarget, BatchingConfig
from serving.errors import DeadlineExceededError, OverloadedError, QueueFullError

# Weight of the newest interval in the throughput sums, and of the newest batch in the mean batch size.
SMOOTHING = 0.15
# The adaptive limit's multiplicative decrease, per batch whose head waited too long.
DECREASE_FACTOR = 0.8
# Its additive increase, per batch within the target while the queue is in use, in batches.
INCREASE_BATCHES = 0.25
# The share of the time left to its deadline a request's estimated completion may use.
DEADLINE_SHARE = 0.8
# The share of the time left to its SLO, smaller: the SLO is judged on the p99 of the answers, and
# real completions spread around the estimate (measured on the vLLM engine past 2x its capacity:
# the answers' p99 about 1.5x what admission aimed at).
SLO_SHARE = 0.6
# Under the slo target, the adaptive limit's queue-delay target is at most this share of the SLO.
SLO_QUEUE_SHARE = 0.5


class AdmissionPolicy:
    """Admission decisions, the adaptive queue limit and the throughput estimate."""

    def __init__(self, config: BatchingConfig, clock: Callable[[], float] = time.monotonic,
                 slo_seconds: float | None = None) -> None:
        """`slo_seconds`: the server's SLO (bounds the queue-delay target under the slo admission target)."""
        self._clock = clock
        self._by_slo = config.admission_target is AdmissionTarget.SLO
        self._max_queue = config.max_queue_candidates
        self._min_limit = min(config.max_batch_candidates, config.max_queue_candidates)
        self._step = max(1, round(config.max_batch_candidates * INCREASE_BATCHES))
        self._target = config.target_queue_delay_ms / 1000.0
        if self._by_slo and slo_seconds is not None:
            self._target = min(self._target, SLO_QUEUE_SHARE * slo_seconds)
        self._max_inflight = config.max_inflight_batches
        self._limit = self._max_queue
        self._scored = 0.0  # candidates scored, fading sum over measured intervals
        self._busy = 0.0  # engine-busy seconds, fading sum over the same intervals
        self._peak = 0.0  # the best throughput reached
        self._batch_size = 0.0  # candidates per batch, recently
        self._prepare_seconds = 0.0  # rendering and tokenizing one request, recently
        self._inflight_batches = 0
        self._mark = 0.0  # start of the current interval: the last finish, or when the engine got busy

    @property
    def limit(self) -> int:
        """The adaptive queue limit, in candidates."""
        return self._limit

    @property
    def target_queue_delay(self) -> float:
        """The queue delay the adaptive limit aims at, in seconds."""
        return self._target

    @property
    def throughput(self) -> float | None:
        """Recent throughput in candidates per second; None before a first measurement."""
        return self._scored / self._busy if self._busy > 0 else None

    def expected_wait(self, queued: int, inflight: int) -> float:
        """Seconds the work queued and in the engine takes at the recent throughput."""
        return self._seconds(queued + inflight)

    def time_needed(self, candidates: int, inflight: int = 0) -> float:
        """At dispatch: seconds until a batch of `candidates` could finish,
        next to `inflight` candidates already in the engine (half done, on
        average). 0 before a first measurement."""
        return self._seconds(candidates + inflight / 2)

    def completion(self, candidates: int, queued: int, inflight: int, preparing: int = 0) -> float:
        """Seconds until a request of `candidates` joining `queued` (with
        `preparing` requests admitted ahead of it still being rendered)
        would be scored: the rendering ahead and its own, then the work in
        flight, the queue up to and including it and, if it has to wait for
        a batch slot, the rest of its batch (later requests join it meanwhile)."""
        ahead = queued + candidates
        if queued or self._inflight_batches >= self._max_inflight:
            fill = max(1.0, self._batch_size)
            ahead = max(ahead, math.ceil(ahead / fill) * fill)
        return (preparing + 1) * self._prepare_seconds + self._seconds(inflight + ahead)

    def _seconds(self, candidates: float) -> float:
        throughput = self.throughput
        return candidates / throughput if throughput else 0.0

    def check(self, candidates: int, deadline: float | None, queued: int, inflight: int,
              preparing: int = 0, slo: float | None = None) -> None:
        """Raise the refusal for a request of `candidates` joining `queued`
        (with `inflight` in the engine, and `preparing` requests admitted and
        being rendered, whose candidates `queued` counts), or return if it is
        admitted. `deadline` and `slo` (when its answer is due by the SLO)
        are clock times; None: none."""
        if candidates > self._max_queue:
            raise QueueFullError(
                f"request has {candidates} candidates; the queue holds at most {self._max_queue}"
            )
        if queued + candidates > self._max_queue:
            raise QueueFullError(
                f"queue full: {queued} of {self._max_queue} candidates waiting; retry with backoff"
            )
        if self._peak:
            now = self._clock()
            own = candidates / self._peak
            if deadline is not None and own > deadline - now:
                raise DeadlineExceededError(
                    f"deadline cannot be met: scoring {candidates} candidates takes about {own:.3f}s, "
                    f"{max(deadline - now, 0.0):.3f}s were left"
                )
            due, bound, share = self._due(own, now, deadline, slo)
            done = self.completion(candidates, queued, inflight, preparing)
            if due is not None and (queued or inflight) and done > share * (due - now):
                raise OverloadedError(
                    f"overloaded: with the work queued and in the engine this request would be scored in "
                    f"about {done:.3f}s, its {bound} leaves {max(due - now, 0.0):.3f}s; retry with backoff or on "
                    "another replica"
                )
        if queued and queued + candidates > self._limit:
            raise QueueFullError(
                f"queue full: {queued} candidates waiting, over the adaptive limit of {self._limit} "
                "(it keeps queue delay near its target); retry with backoff"
            )

    def _due(self, own: float, now: float, deadline: float | None,
             slo: float | None) -> tuple[float | None, str, float]:
        """When a request whose own work takes `own` seconds must be scored
        by, what sets it ("deadline" or "SLO"), and the share of the time
        left its estimated completion may use: the admission target's
        finish time (see the module's docstring)."""
        if self._by_slo and slo is not None and own <= SLO_SHARE * (slo - now) and (
                deadline is None or slo < deadline):
            return slo, "SLO", SLO_SHARE
        return deadline, "deadline", DEADLINE_SHARE

    def prepared(self, seconds: float) -> None:
        """A request was rendered and tokenized in `seconds`."""
        previous = self._prepare_seconds
        self._prepare_seconds = previous + SMOOTHING * (seconds - previous) if previous else seconds

    def batch_dispatched(self, candidates: int, head_wait: float, queued_before: int) -> None:
        """A batch went to the engine: its oldest request waited `head_wait`
        seconds; `queued_before` candidates were queued when it was taken."""
        if self._inflight_batches == 0:
            self._mark = self._clock()
        self._inflight_batches += 1
        self._batch_size += SMOOTHING * (candidates - self._batch_size) if self._batch_size else candidates
        if head_wait > self._target:
            self._limit = max(self._min_limit, int(self._limit * DECREASE_FACTOR))
        elif queued_before * 2 >= self._limit:
            self._limit = min(self._max_queue, self._limit + self._step)

    def batch_finished(self, scored: int, candidates: int, saturated: bool) -> None:
        """A batch of `candidates` is over, `scored` of them delivered to
        their callers; `saturated`: it was full or left work waiting."""
        now = self._clock()
        self._inflight_batches = max(0, self._inflight_batches - 1)
        elapsed, self._mark = now - self._mark, now
        if elapsed <= 0 or scored <= 0:
            return
        elapsed *= scored / candidates
        current = self.throughput
        if not saturated and current is not None and scored / elapsed <= current:
            return
        fade = 1.0 - SMOOTHING
        self._scored = fade * self._scored + scored
        self._busy = fade * self._busy + elapsed
        self._peak = max(self._peak, self._scored / self._busy)

    def forget(self) -> None:
        """Drop what was measured (after a warm-up, which pays for lazy
        initialisation and says nothing about the engine's speed)."""
        self._scored = self._busy = self._peak = 0.0
        self._batch_size = self._prepare_seconds = 0.0
        self._limit = self._max_queue
