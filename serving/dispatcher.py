"""The dispatcher: collects concurrent callers into engine batches.

Requests from concurrent callers (all tasks of each) wait in one queue
measured in candidates. A dispatch loop waits a short collect window (or until
a batch is full), takes a batch with `collect_batch`, and hands the engine the
whole batch in one `score_batch` call: each caller is a `CallerWork`, so an
engine may pack callers into one forward pass, or (vLLM) start them all in
the same loop tick so its scheduler runs them in the same steps. Each caller
keeps its own fate: its results arrive as soon as the engine delivers them,
and its deadline or cancellation abandons its work alone.

Double buffering: with an engine that prepares batches ahead
(brew.engines.base.PreparesBatches: the torch engine), a batch's host work
(its plan, its pass inputs, pinned on CUDA) runs as soon as it is
collected, while the batch before it computes; the prepared batches then
run on the engine one at a time, in the order they were collected. With
`max_inflight_batches` 2 (the default) batch k+1 is collected and prepared
while batch k runs, so the device goes from one batch to the next without
waiting for the host. A request's own host work (decode, render,
tokenize) is done before it joins the queue (serving.service), on worker
threads, so it overlaps the engine already.

Self-protection lives here, its decisions in serving.admission:
  - admission: a request the queue has no room for (hard cap or adaptive
    limit), or whose deadline or SLO the queue's expected wait makes impossible,
    is refused at once (QueueFullError, OverloadedError -> RESOURCE_EXHAUSTED);
    admitted work is unaffected. The service asks at the door (`reserve`),
    before the request is rendered, so a refusal costs no rendering; the
    reservation counts as queued work while the request is prepared, so a
    burst that arrives at once is judged as the queue it will become;
  - deadlines: requests whose deadline has passed, or would pass before
    their batch finished, are dropped from the queue before any engine work
    (DeadlineExceededError, ShedError); a running request past its deadline
    is abandoned, which aborts it in the engine;
  - engine failure: every caller the engine failed gets EngineFailedError,
    and `on_engine_failure` tells the server (health -> NOT_SERVING).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from brew.engines.base import CallerOutcome, CallerWork, PreparesBatches, ScoringEngine
from brew.types import GroupResult, ScoringGroup
from brew.errors import BrewError
from serving.admission import AdmissionPolicy
from serving.collect import Queued, collect_batch
from serving.config import BatchingConfig
from serving.errors import DeadlineExceededError, EngineFailedError, ShedError, ShuttingDownError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Dispatched:
    """One caller's results, with how long it queued and how long its engine work took."""

    results: list[GroupResult]
    queue_seconds: float
    engine_seconds: float


@dataclass(eq=False)
class _Caller:
    work: CallerWork
    future: asyncio.Future[Dispatched]
    enqueued: float
    started: float | None = None  # when its batch went to the engine


@dataclass
class DispatcherStats:
    """Live numbers the metrics layer reads."""

    queued_candidates: int = 0
    inflight_candidates: int = 0
    reserved_candidates: int = 0  # admitted at the door, being prepared
    reserved_requests: int = 0


class Reservation:
    """Room a request admitted at the door holds while it is prepared;
    released when it joins the queue, or fails before."""

    def __init__(self, stats: DispatcherStats, candidates: int) -> None:
        self._stats = stats
        self.candidates = candidates
        self._held = True
        stats.reserved_candidates += candidates
        stats.reserved_requests += 1

    def release(self) -> None:
        if self._held:
            self._held = False
            self._stats.reserved_candidates -= self.candidates
            self._stats.reserved_requests -= 1


class Dispatcher:
    def __init__(
        self,
        engine: ScoringEngine,
        config: BatchingConfig,
        on_batch: Callable[[int], None] | None = None,
        on_engine_failure: Callable[[BaseException], None] | None = None,
        admission: AdmissionPolicy | None = None,
        on_admitted: Callable[[int], None] | None = None,
    ) -> None:
        self._engine = engine
        self._config = config
        self.admission = admission or AdmissionPolicy(config)
        self._on_batch = on_batch or (lambda size: None)
        self._on_engine_failure = on_engine_failure or (lambda error: None)
        self._on_admitted = on_admitted or (lambda candidates: None)
        self._queue: list[Queued[_Caller]] = []
        self._wakeup = asyncio.Event()
        self._slots = asyncio.Semaphore(config.max_inflight_batches)
        self._engine_turn = asyncio.Lock()  # prepared batches run one at a time, in order (FIFO)
        self._loop_task: asyncio.Task[None] | None = None
        self._batches: set[asyncio.Task[list[CallerOutcome]]] = set()  # the loop keeps only weak references
        self._accepting = True
        self._waiting = 0  # callers inside score(): queued or in a running batch
        self.stats = DispatcherStats()

    def start(self) -> None:
        self._loop_task = asyncio.create_task(self._dispatch_loop(), name="brew-dispatcher")

    @property
    def engine(self) -> ScoringEngine:
        return self._engine

    async def close(self, error: BrewError | None = None) -> None:
        """Stop admitting, fail whatever is still queued (with `error`, by
        default ShuttingDownError), stop the loop."""
        self._accepting = False
        for queued in self._queue:
            if not queued.payload.future.done():
                queued.payload.future.set_exception(error or ShuttingDownError("server is shutting down"))
        self._queue.clear()
        self.stats.queued_candidates = 0
        if self._loop_task:
            self._loop_task.cancel()
            await asyncio.gather(self._loop_task, return_exceptions=True)

    @property
    def busy_callers(self) -> int:
        """Callers this dispatcher still owes an answer: admitted at the door
        and being prepared, queued, or in a running batch (a drain waits for 0)."""
        return self.stats.reserved_requests + self._waiting

    def stop_admitting(self) -> None:
        self._accepting = False

    def _require_accepting(self) -> None:
        if not self._accepting:
            raise ShuttingDownError("server is shutting down; retry on another replica")

    def expected_wait_seconds(self) -> float:
        """How long the work queued and in the engine now takes, at the recent throughput."""
        stats = self.stats
        return self.admission.expected_wait(stats.queued_candidates + stats.reserved_candidates,
                                            stats.inflight_candidates)

    def reserve(self, candidates: int, deadline: float | None, slo: float | None = None) -> Reservation:
        """Admit a request of `candidates` at the door, or raise its refusal
        (see serving.admission: `slo` is when its answer is due by the SLO);
        the reservation goes to `score`."""
        self._require_accepting()
        stats = self.stats
        ahead = stats.queued_candidates + stats.reserved_candidates
        self.admission.check(candidates, deadline, ahead, stats.inflight_candidates, stats.reserved_requests,
                             slo=slo)
        return Reservation(stats, candidates)

    def prepared(self, seconds: float) -> None:
        """A request was rendered and tokenized in `seconds` (admission counts rendering ahead)."""
        self.admission.prepared(seconds)

    async def score(self, groups: Sequence[ScoringGroup], deadline: float | None = None,
                    reservation: Reservation | None = None) -> Dispatched:
        """Queue the groups, wait for their batch; `deadline` is time.monotonic()-based.
        Without a `reservation` from `reserve`, admission is asked here."""
        work = CallerWork(groups)
        self._require_accepting()
        (reservation or self.reserve(work.candidates, deadline)).release()
        self._on_admitted(work.candidates)
        now = time.monotonic()
        caller = _Caller(work=work, future=asyncio.get_running_loop().create_future(), enqueued=now)
        self._queue.append(Queued(payload=caller, candidates=work.candidates, deadline=deadline))
        self.stats.queued_candidates += work.candidates
        self._wakeup.set()
        self._waiting += 1
        try:
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a
            # cancellation that races the timeout (serving.supervisor).
            async with asyncio.timeout(None if deadline is None else max(0.0, deadline - now)):
                return await asyncio.shield(caller.future)
        except TimeoutError:
            self._abandon(caller)
            raise DeadlineExceededError("deadline exceeded; the request was aborted in the engine") from None
        except asyncio.CancelledError:
            self._abandon(caller)
            raise
        finally:
            self._waiting -= 1

    def _abandon(self, caller: _Caller) -> None:
        """The caller left (deadline or cancellation): free its queue place or
        abandon its engine work."""
        for index, queued in enumerate(self._queue):
            if queued.payload is caller:
                del self._queue[index]
                self.stats.queued_candidates -= queued.candidates
                break
        caller.work.abandon()
        if not caller.future.done():
            caller.future.cancel()

    async def _dispatch_loop(self) -> None:
        while True:
            await self._wakeup.wait()
            if self.stats.queued_candidates < self._config.max_batch_candidates:
                await asyncio.sleep(self._config.collect_window_ms / 1000.0)
            await self._slots.acquire()
            now = time.monotonic()
            queued_before = self.stats.queued_candidates
            max_batch = self._config.max_batch_candidates
            needed = self.admission.time_needed(min(queued_before, max_batch), self.stats.inflight_candidates)
            collected = collect_batch(self._queue, max_batch, now, needed)
            self._queue = collected.remaining
            for queued in collected.expired:
                self.stats.queued_candidates -= queued.candidates
                self._expire(queued, now, needed)
            self.stats.queued_candidates -= collected.batch_candidates
            if not self._queue:
                self._wakeup.clear()
            if not collected.batch:
                self._slots.release()
                continue
            callers = [q.payload for q in collected.batch]
            self.admission.batch_dispatched(collected.batch_candidates,
                                            head_wait=now - min(c.enqueued for c in callers),
                                            queued_before=queued_before)
            saturated = bool(self._queue) or collected.batch_candidates >= max_batch
            self._launch(callers, collected.batch_candidates, saturated)

    @staticmethod
    def _expire(queued: Queued[_Caller], now: float, needed: float) -> None:
        """Fail a request taken out of the queue for its deadline: passed, or too close to finish."""
        if queued.payload.future.done():
            return
        if queued.deadline is not None and queued.deadline > now:
            error: DeadlineExceededError = ShedError(
                f"deadline cannot be met: {queued.deadline - now:.3f}s were left and its batch needs about "
                f"{needed:.3f}s of engine time; shed from the queue, no engine work was spent"
            )
        else:
            error = DeadlineExceededError("deadline exceeded while queued; no engine work was spent")
        queued.payload.future.set_exception(error)

    def _launch(self, callers: list[_Caller], candidates: int, saturated: bool) -> None:
        """Hand the whole batch to the engine in one call."""
        started = time.monotonic()
        self.stats.inflight_candidates += candidates
        self._on_batch(candidates)
        undelivered = len(callers)
        scored = 0  # candidates of the callers that got results

        def delivered(caller: _Caller, outcome: CallerOutcome) -> None:
            nonlocal undelivered, scored
            self._resolve(caller, outcome)
            undelivered -= 1
            if not isinstance(outcome, BaseException):
                scored += caller.work.candidates
            if not undelivered:  # the batch is over for every caller: account for it once
                self.admission.batch_finished(scored, candidates, saturated)
                self.stats.inflight_candidates -= candidates
                self._slots.release()

        for caller in callers:
            caller.started = started
            caller.work.on_delivered = lambda outcome, caller=caller: delivered(caller, outcome)
        batch = asyncio.create_task(self._score_batch([caller.work for caller in callers]))
        self._batches.add(batch)
        batch.add_done_callback(lambda task: self._batch_finished(task, callers))

    async def _score_batch(self, works: list[CallerWork]) -> list[CallerOutcome]:
        """The engine's work on one batch: prepared ahead, then run in its
        turn, where the engine prepares batches; else one score_batch."""
        engine = self._engine
        if not isinstance(engine, PreparesBatches):
            return await engine.score_batch(works)
        prepared = await engine.prepare_batch(works)  # overlaps the batch running before this one
        async with self._engine_turn:
            return await engine.run_prepared(prepared)

    def _batch_finished(self, task: asyncio.Task[list[CallerOutcome]], callers: list[_Caller]) -> None:
        """Deliver what the engine did not deliver early: its outcomes, or its
        failure (or cancellation) to every caller still waiting."""
        self._batches.discard(task)
        if task.cancelled():
            outcomes: Sequence[CallerOutcome] = [asyncio.CancelledError()] * len(callers)
        elif task.exception() is not None:
            outcomes = [task.exception()] * len(callers)  # type: ignore[list-item]
        else:
            outcomes = task.result()
            if len(outcomes) != len(callers):
                error = RuntimeError(f"engine returned {len(outcomes)} outcomes for {len(callers)} callers")
                outcomes = [error] * len(callers)
        for caller, outcome in zip(callers, outcomes, strict=True):
            caller.work.deliver(outcome)  # a no-op for callers the engine already answered

    def _resolve(self, caller: _Caller, outcome: CallerOutcome) -> None:
        if caller.future.done():
            return
        if isinstance(outcome, asyncio.CancelledError):
            caller.future.cancel()
            return
        if isinstance(outcome, BaseException):
            log.error("engine failed while scoring", exc_info=outcome)
            self._on_engine_failure(outcome)
            caller.future.set_exception(EngineFailedError(f"engine failed: {outcome}"))
            return
        assert caller.started is not None
        caller.future.set_result(Dispatched(
            results=outcome, queue_seconds=caller.started - caller.enqueued,
            engine_seconds=time.monotonic() - caller.started,
        ))
