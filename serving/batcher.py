"""Micro-batching across callers, with admission control and deadlines.

Requests from concurrent callers (all tasks of each) wait in one queue
measured in candidates. A dispatch loop waits a short collect window (or until
a batch is full), takes a batch with `collect_batch`, and launches it: every
caller of the batch gets its own engine call, started in the same loop tick,
so the engine runs them in the same steps (vLLM batches concurrent requests)
while one caller's cancellation or deadline aborts only that caller's work.

Self-protection lives here:
  - admission: a request that would overflow the queue is refused at once
    (QueueFullError -> RESOURCE_EXHAUSTED); admitted work is unaffected;
  - deadlines: expired requests are dropped from the queue before any engine
    work; a running request past its deadline is cancelled, which aborts it in
    the engine (DeadlineExceededError);
  - early rejection: a request whose deadline is shorter than the queue's
    expected wait is refused without queueing;
  - engine failure: every caller of the failed call gets EngineFailedError,
    and `on_engine_failure` tells the server (health -> NOT_SERVING).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from brew.engines.base import ScoringEngine
from brew.errors import BrewError
from brew.types import GroupResult, ScoringGroup
from serving.collect import Queued, collect_batch

log = logging.getLogger(__name__)

# Weight of the newest batch in the moving average of engine time per batch.
BATCH_TIME_SMOOTHING = 0.3


class QueueFullError(BrewError):
    """The queue cannot admit the request now (RESOURCE_EXHAUSTED)."""


class DeadlineExceededError(BrewError):
    """The request's deadline passed, or cannot be met (DEADLINE_EXCEEDED)."""


class EngineFailedError(BrewError):
    """The engine failed while scoring (UNAVAILABLE)."""


class ShuttingDownError(BrewError):
    """The batcher no longer admits work (UNAVAILABLE)."""


@dataclass(frozen=True)
class BatcherConfig:
    max_batch_candidates: int = 256
    collect_window_seconds: float = 0.004
    max_queue_candidates: int = 4096
    max_inflight_batches: int = 2


@dataclass(frozen=True)
class BatchOutcome:
    results: list[GroupResult]
    queue_seconds: float
    engine_seconds: float


@dataclass
class _Entry:
    groups: Sequence[ScoringGroup]
    future: asyncio.Future[BatchOutcome]
    enqueued: float
    task: asyncio.Task[list[GroupResult]] | None = None


@dataclass
class BatcherStats:
    """Live numbers the metrics layer reads."""

    queued_candidates: int = 0
    inflight_candidates: int = 0
    batches: int = 0
    batch_candidates: list[int] = field(default_factory=list)


class Batcher:
    def __init__(
        self,
        engine: ScoringEngine,
        config: BatcherConfig,
        on_batch: Callable[[int], None] | None = None,
        on_engine_failure: Callable[[BaseException], None] | None = None,
    ) -> None:
        self._engine = engine
        self._config = config
        self._on_batch = on_batch or (lambda size: None)
        self._on_engine_failure = on_engine_failure or (lambda error: None)
        self._queue: list[Queued[_Entry]] = []
        self._wakeup = asyncio.Event()
        self._slots = asyncio.Semaphore(config.max_inflight_batches)
        self._loop_task: asyncio.Task[None] | None = None
        self._accepting = True
        self._recent_batch_seconds = 0.0  # moving average of engine time per batch
        self.stats = BatcherStats()

    def start(self) -> None:
        self._loop_task = asyncio.create_task(self._dispatch_loop(), name="brew-batcher")

    async def close(self) -> None:
        """Stop admitting, fail whatever is still queued, stop the loop."""
        self._accepting = False
        for queued in self._queue:
            if not queued.payload.future.done():
                queued.payload.future.set_exception(ShuttingDownError("server is shutting down"))
        self._queue.clear()
        self.stats.queued_candidates = 0
        if self._loop_task:
            self._loop_task.cancel()
            await asyncio.gather(self._loop_task, return_exceptions=True)

    def stop_admitting(self) -> None:
        self._accepting = False

    def expected_wait_seconds(self, extra_candidates: int = 0) -> float:
        """A rough forecast of when `extra_candidates` joining the queue now
        would be scored: the batches needed to clear the queue up to and
        including them, at the recent engine time per batch."""
        batches = math.ceil((self.stats.queued_candidates + extra_candidates) / self._config.max_batch_candidates)
        return batches * self._recent_batch_seconds

    async def score(self, groups: Sequence[ScoringGroup], deadline: float | None = None) -> BatchOutcome:
        """Queue the groups, wait for their batch; `deadline` is time.monotonic()-based."""
        if not self._accepting:
            raise ShuttingDownError("server is shutting down; retry on another replica")
        candidates = sum(g.num_candidates for g in groups)
        self._admit(candidates, deadline)
        now = time.monotonic()
        entry = _Entry(groups=groups, future=asyncio.get_running_loop().create_future(), enqueued=now)
        self._queue.append(Queued(payload=entry, candidates=candidates, deadline=deadline))
        self.stats.queued_candidates += candidates
        self._wakeup.set()
        try:
            if deadline is None:
                return await asyncio.shield(entry.future)
            return await asyncio.wait_for(asyncio.shield(entry.future), timeout=max(0.0, deadline - now))
        except TimeoutError:
            self._abandon(entry)
            raise DeadlineExceededError("deadline exceeded; the request was aborted in the engine") from None
        except asyncio.CancelledError:
            self._abandon(entry)
            raise

    def _admit(self, candidates: int, deadline: float | None) -> None:
        limit = self._config.max_queue_candidates
        if candidates > limit:
            raise QueueFullError(f"request has {candidates} candidates; the queue holds at most {limit}")
        if self.stats.queued_candidates + candidates > limit:
            raise QueueFullError(
                f"queue full: {self.stats.queued_candidates} of {limit} candidates waiting; retry with backoff"
            )
        if deadline is not None:
            wait = self.expected_wait_seconds(candidates)
            if time.monotonic() + wait > deadline:
                raise DeadlineExceededError(
                    f"deadline cannot be met: the queue needs about {wait:.3f}s before this request is scored"
                )

    def _abandon(self, entry: _Entry) -> None:
        """The caller left (deadline or cancellation): free its queue place or
        abort its engine work."""
        for index, queued in enumerate(self._queue):
            if queued.payload is entry:
                del self._queue[index]
                self.stats.queued_candidates -= queued.candidates
                break
        if entry.task is not None and not entry.task.done():
            entry.task.cancel()
        if not entry.future.done():
            entry.future.cancel()

    async def _dispatch_loop(self) -> None:
        while True:
            await self._wakeup.wait()
            if self.stats.queued_candidates < self._config.max_batch_candidates:
                await asyncio.sleep(self._config.collect_window_seconds)
            await self._slots.acquire()
            collected = collect_batch(self._queue, self._config.max_batch_candidates, time.monotonic())
            self._queue = collected.remaining
            for queued in collected.expired:
                self.stats.queued_candidates -= queued.candidates
                if not queued.payload.future.done():
                    queued.payload.future.set_exception(
                        DeadlineExceededError("deadline exceeded while queued; no engine work was spent")
                    )
            self.stats.queued_candidates -= collected.batch_candidates
            if not self._queue:
                self._wakeup.clear()
            if not collected.batch:
                self._slots.release()
                continue
            self._launch([q.payload for q in collected.batch], collected.batch_candidates)

    def _launch(self, entries: list[_Entry], candidates: int) -> None:
        started = time.monotonic()
        self.stats.batches += 1
        self.stats.inflight_candidates += candidates
        self._on_batch(candidates)
        for entry in entries:
            entry.task = asyncio.create_task(self._engine.score(entry.groups))
        pending = {e.task for e in entries if e.task is not None}

        def finished(task: asyncio.Task[list[GroupResult]], entry: _Entry) -> None:
            self._resolve(entry, task, started)
            pending.discard(task)
            if not pending:
                elapsed = time.monotonic() - started
                self._recent_batch_seconds += BATCH_TIME_SMOOTHING * (elapsed - self._recent_batch_seconds)
                self.stats.inflight_candidates -= candidates
                self._slots.release()

        for entry in entries:
            assert entry.task is not None
            entry.task.add_done_callback(lambda task, entry=entry: finished(task, entry))

    def _resolve(self, entry: _Entry, task: asyncio.Task[list[GroupResult]], started: float) -> None:
        if entry.future.done():
            return
        if task.cancelled():
            entry.future.cancel()
            return
        error = task.exception()
        if error is not None:
            log.error("engine failed while scoring", exc_info=error)
            self._on_engine_failure(error)
            entry.future.set_exception(EngineFailedError(f"engine failed: {error}"))
            return
        now = time.monotonic()
        entry.future.set_result(
            BatchOutcome(results=task.result(), queue_seconds=started - entry.enqueued, engine_seconds=now - started)
        )
