"""The dispatcher with a fake engine: batching across callers, results by index,
failures, admission, deadlines and cancellation. No model, milliseconds."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

import pytest
from waiting import eventually_async

from brew.engines.base import CallerOutcome, CallerWork, score_callers_concurrently
from brew.types import CandidateLogprobs, GroupResult, ScoringGroup
from serving.config import BatchingConfig
from serving.dispatcher import Dispatcher
from serving.errors import (
    DeadlineExceededError,
    EngineFailedError,
    NotReadyError,
    OverloadedError,
    QueueFullError,
    ShedError,
    ShuttingDownError,
)

pytestmark = pytest.mark.asyncio


class FakeEngine:
    """Answers each candidate with logprobs that encode its prefix and index,
    after `delay` seconds; records every batch and every caller's call; can
    be made to fail."""

    model_name = "fake"
    max_model_len = 4096

    def __init__(self, delay: float = 0.0, fail: BaseException | None = None) -> None:
        self.delay = delay
        self.fail = fail
        self.batches: list[list[int]] = []  # per score_batch call: each caller's candidates
        self.calls: list[tuple[float, int]] = []  # (start time, candidates) per caller
        self.cancelled = 0
        self.running = 0

    async def score_batch(self, batch: Sequence[CallerWork]) -> list[CallerOutcome]:
        self.batches.append([work.candidates for work in batch])
        return await score_callers_concurrently(self.score, batch)

    async def score(self, groups: Sequence[ScoringGroup]) -> list[GroupResult]:
        self.calls.append((time.monotonic(), sum(g.num_candidates for g in groups)))
        self.running += 1
        try:
            await asyncio.sleep(self.delay)  # the fake engine's work time: what deadlines and cancels cut
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        finally:
            self.running -= 1
        if self.fail is not None:
            raise self.fail
        return [
            GroupResult(tuple(
                CandidateLogprobs(label_logprobs=(float(g.prefix_ids[0]), float(i)), prompt_tokens=1, cached_tokens=0)
                for i in range(g.num_candidates)
            ))
            for g in groups
        ]

    async def check_health(self) -> None:
        pass

    async def close(self) -> None:
        pass


def group(tag: int, candidates: int) -> ScoringGroup:
    return ScoringGroup(prefix_ids=(tag,), suffix_ids=tuple((9,) for _ in range(candidates)), label_ids=(1, 2))


async def started(engine: FakeEngine, **config: float) -> Dispatcher:
    dispatcher = Dispatcher(engine, BatchingConfig(**config))
    dispatcher.start()
    return dispatcher


async def test_concurrent_callers_are_dispatched_in_one_batch_and_get_their_own_results():
    engine = FakeEngine(delay=0.01)
    sizes: list[int] = []
    dispatcher = Dispatcher(engine, BatchingConfig(collect_window_ms=20), on_batch=sizes.append)
    dispatcher.start()
    outcomes = await asyncio.gather(*(dispatcher.score([group(tag, 3), group(tag + 100, 2)]) for tag in range(5)))
    await dispatcher.close()
    assert sizes == [25]  # one batch for all five callers
    assert engine.batches == [[5] * 5]  # handed to the engine whole, in one call
    assert sorted(candidates for _, candidates in engine.calls) == [5] * 5  # each caller's work its own
    for tag, outcome in enumerate(outcomes):
        first, second = outcome.results
        assert [c.label_logprobs for c in first.candidates] == [(tag, 0), (tag, 1), (tag, 2)]
        assert [c.label_logprobs for c in second.candidates] == [(tag + 100, 0), (tag + 100, 1)]
        assert outcome.queue_seconds >= 0 and outcome.engine_seconds >= 0.01


async def test_batches_respect_the_size_limit_in_candidates():
    sizes: list[int] = []
    dispatcher = Dispatcher(FakeEngine(), BatchingConfig(max_batch_candidates=8, collect_window_ms=10),
                      on_batch=sizes.append)
    dispatcher.start()
    await asyncio.gather(*(dispatcher.score([group(tag, 3)]) for tag in range(6)))
    await dispatcher.close()
    assert sum(sizes) == 18 and max(sizes) <= 8


async def test_a_failing_engine_fails_each_caller_of_the_batch_and_reports_it():
    failures: list[BaseException] = []
    engine = FakeEngine(fail=RuntimeError("device lost"))
    dispatcher = Dispatcher(engine, BatchingConfig(collect_window_ms=10), on_engine_failure=failures.append)
    dispatcher.start()
    outcomes = await asyncio.gather(*(dispatcher.score([group(tag, 2)]) for tag in range(3)), return_exceptions=True)
    await dispatcher.close()
    assert all(isinstance(o, EngineFailedError) and "device lost" in str(o) for o in outcomes)
    assert len(failures) == 3


async def test_a_full_queue_refuses_at_once_and_keeps_what_it_admitted():
    engine = FakeEngine(delay=0.05)
    dispatcher = await started(engine, max_batch_candidates=4, max_queue_candidates=8, max_inflight_batches=1)
    admitted = [asyncio.ensure_future(dispatcher.score([group(tag, 4)])) for tag in range(2)]
    await asyncio.sleep(0)  # one turn of the loop: both calls join the queue
    with pytest.raises(QueueFullError, match="queue full"):
        await dispatcher.score([group(9, 4)])
    with pytest.raises(QueueFullError, match="at most 8"):
        await dispatcher.score([group(9, 9)])
    assert [len(o.results[0].candidates) for o in await asyncio.gather(*admitted)] == [4, 4]
    await dispatcher.close()


async def test_a_deadline_during_engine_work_cancels_that_work():
    engine = FakeEngine(delay=1.0)
    dispatcher = await started(engine, collect_window_ms=0)
    with pytest.raises(DeadlineExceededError):
        await dispatcher.score([group(1, 2)], deadline=time.monotonic() + 0.05)
    await eventually_async(lambda: (engine.cancelled, engine.running), equals=(1, 0))
    await dispatcher.close()


async def test_an_expired_request_never_reaches_the_engine():
    engine = FakeEngine(delay=0.1)
    dispatcher = await started(engine, max_batch_candidates=2, max_inflight_batches=1, collect_window_ms=0)
    first = asyncio.ensure_future(dispatcher.score([group(1, 2)]))
    await eventually_async(lambda: engine.calls)  # the first batch occupies the only slot
    with pytest.raises(DeadlineExceededError):
        await dispatcher.score([group(2, 2)], deadline=time.monotonic() + 0.03)
    assert dispatcher.stats.queued_candidates == 0  # gone from the queue: nothing left to dispatch
    await first
    assert [candidates for _, candidates in engine.calls] == [2]
    await dispatcher.close()


async def test_a_deadline_the_queue_cannot_meet_is_refused_before_queueing():
    engine = FakeEngine(delay=0.05)
    dispatcher = await started(engine, max_batch_candidates=4, collect_window_ms=0)
    await dispatcher.score([group(1, 4)])  # teaches the dispatcher about 50 ms per batch
    with pytest.raises(DeadlineExceededError, match="cannot be met"):
        await dispatcher.score([group(2, 4)], deadline=time.monotonic() + 0.001)
    assert len(engine.calls) == 1
    await dispatcher.close()


async def test_a_cancelled_caller_aborts_its_engine_work_only():
    engine = FakeEngine(delay=0.2)
    dispatcher = await started(engine, collect_window_ms=10)
    leaving = asyncio.ensure_future(dispatcher.score([group(1, 2)]))
    staying = asyncio.ensure_future(dispatcher.score([group(2, 2)]))
    await eventually_async(lambda: len(engine.calls), equals=2)
    leaving.cancel()
    outcome = await staying
    assert engine.cancelled == 1
    assert [c.label_logprobs for c in outcome.results[0].candidates] == [(2, 0), (2, 1)]
    await dispatcher.close()


async def test_after_close_nothing_is_admitted():
    dispatcher = await started(FakeEngine())
    await dispatcher.close()
    with pytest.raises(ShuttingDownError):
        await dispatcher.score([group(1, 1)])


async def test_overload_is_refused_at_once_and_what_was_admitted_finishes_in_time():
    engine = FakeEngine(delay=0.05)
    dispatcher = await started(engine, max_batch_candidates=4, max_inflight_batches=1,
                               collect_window_ms=0)
    await dispatcher.score([group(0, 4)])  # teaches the dispatcher about 80 candidates/s
    deadline = time.monotonic() + 0.4
    calls = [asyncio.ensure_future(dispatcher.score([group(tag, 4)], deadline=deadline))
             for tag in range(1, 21)]
    await asyncio.sleep(0)  # every call has been admitted or refused
    refused = [call for call in calls if call.done()]
    assert refused and all(isinstance(call.exception(), OverloadedError) for call in refused)
    admitted = [call for call in calls if not call.done()]
    assert len(admitted) >= 3
    outcomes = await asyncio.gather(*admitted, return_exceptions=True)
    assert all(not isinstance(o, BaseException) for o in outcomes), outcomes
    assert time.monotonic() <= deadline
    assert len(engine.calls) == 1 + len(admitted)  # no engine work for a refused call
    await dispatcher.close()


async def test_a_request_that_can_no_longer_finish_in_time_is_shed_before_any_engine_work():
    engine = FakeEngine(delay=0.1)
    dispatcher = await started(engine, max_batch_candidates=4, max_inflight_batches=1,
                               collect_window_ms=0)
    await dispatcher.score([group(0, 4)])  # about 40 candidates/s
    engine.delay = 0.3  # the engine slows down after admission looked
    slow = asyncio.ensure_future(dispatcher.score([group(1, 4)]))
    await eventually_async(lambda: len(engine.calls), equals=2)
    with pytest.raises(ShedError, match="shed from the queue, no engine work was spent"):
        await dispatcher.score([group(2, 4)], deadline=time.monotonic() + 0.33)
    await slow
    assert [candidates for _, candidates in engine.calls] == [4, 4]
    await dispatcher.close()


async def test_closing_with_an_error_fails_the_queued_callers_with_it():
    engine = FakeEngine(delay=0.1)
    dispatcher = await started(engine, max_batch_candidates=2, max_inflight_batches=1,
                               collect_window_ms=0)
    running = asyncio.ensure_future(dispatcher.score([group(1, 2)]))
    await eventually_async(lambda: engine.calls)
    queued = asyncio.ensure_future(dispatcher.score([group(2, 2)]))
    await eventually_async(lambda: dispatcher.stats.queued_candidates, equals=2)
    await dispatcher.close(NotReadyError("engine is restarting"))
    with pytest.raises(NotReadyError, match="restarting"):
        await queued
    running.cancel()


async def test_a_reservation_holds_queue_room_until_its_request_joins_the_queue():
    dispatcher = await started(FakeEngine(), max_batch_candidates=4, max_queue_candidates=8)
    first, second = dispatcher.reserve(4, None), dispatcher.reserve(4, None)
    with pytest.raises(QueueFullError, match="queue full: 8 of 8"):
        dispatcher.reserve(4, None)  # a burst is judged as the queue it will become
    outcome = await dispatcher.score([group(1, 4)], reservation=first)
    assert len(outcome.results[0].candidates) == 4
    third = dispatcher.reserve(4, None)  # the first one's room is free again
    second.release()
    third.release()
    assert dispatcher.stats.reserved_candidates == 0
    await dispatcher.close()
