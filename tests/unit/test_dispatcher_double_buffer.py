"""Double buffering: batch k+1 is prepared while batch k runs on the engine.

A fake engine that prepares batches ahead (brew.engines.base.PreparesBatches)
and records, with events and an ordered log rather than timing, what the
dispatcher asked of it and when: the next batch's preparation starts and
ends while the batch before is still running, prepared batches run one at
a time in the order they were collected, and every caller gets its own
result or its own error. No model, milliseconds.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field

import pytest
from waiting import eventually_async

from brew.engines.base import CallerOutcome, CallerWork, PreparesBatches
from brew.types import CandidateLogprobs, GroupResult, ScoringGroup
from serving.config import BatchingConfig
from serving.dispatcher import Dispatcher
from serving.errors import EngineFailedError

pytestmark = pytest.mark.asyncio


def group(tag: int) -> ScoringGroup:
    return ScoringGroup(prefix_ids=(tag,), suffix_ids=((9,), (9,)), label_ids=(1, 2))


def tags(work: CallerWork) -> tuple[int, ...]:
    return tuple(g.prefix_ids[0] for g in work.groups)


def results(work: CallerWork) -> list[GroupResult]:
    """Each candidate answers (its group's tag, its index)."""
    return [GroupResult(tuple(CandidateLogprobs((float(g.prefix_ids[0]), float(i)), 1, 0)
                              for i in range(g.num_candidates))) for g in work.groups]


@dataclass
class Prepared:
    number: int  # the batch's number, in the order prepare_batch was called
    batch: Sequence[CallerWork]


@dataclass
class SteppedEngine:
    """Each run waits until the test releases it (`release[n]`); every step
    is logged as ("prepare start"|"prepare end"|"run start"|"run end", n).
    `fail_prepare`/`fail_run`: batch numbers whose step raises;
    `fail_caller_tag`: a caller whose outcome (only) is an error."""

    model_name: str = "stepped"
    max_model_len: int = 4096
    log: list[tuple[str, int]] = field(default_factory=list)
    release: dict[int, asyncio.Event] = field(default_factory=dict)
    fail_prepare: set[int] = field(default_factory=set)
    fail_run: set[int] = field(default_factory=set)
    fail_caller_tag: int | None = None
    prepared_batches: int = 0

    def gate(self, number: int) -> asyncio.Event:
        return self.release.setdefault(number, asyncio.Event())

    async def prepare_batch(self, batch: Sequence[CallerWork]) -> Prepared:
        self.prepared_batches += 1
        number = self.prepared_batches
        self.log.append(("prepare start", number))
        await asyncio.sleep(0)  # a real engine awaits its host thread here
        if number in self.fail_prepare:
            raise RuntimeError(f"prepare {number} failed")
        self.log.append(("prepare end", number))
        return Prepared(number, batch)

    async def run_prepared(self, prepared: Prepared) -> list[CallerOutcome]:
        self.log.append(("run start", prepared.number))
        await self.gate(prepared.number).wait()
        self.log.append(("run end", prepared.number))
        if prepared.number in self.fail_run:
            raise RuntimeError(f"run {prepared.number} failed")
        return [RuntimeError("this caller's own failure") if tags(work)[0] == self.fail_caller_tag
                else results(work) for work in prepared.batch]

    async def score_batch(self, batch: Sequence[CallerWork]) -> list[CallerOutcome]:
        return await self.run_prepared(await self.prepare_batch(batch))

    async def score(self, groups: Sequence[ScoringGroup]) -> list[GroupResult]:
        raise NotImplementedError

    async def check_health(self) -> None:
        pass

    async def close(self) -> None:
        pass


async def started(engine: SteppedEngine) -> Dispatcher:
    dispatcher = Dispatcher(engine, BatchingConfig(collect_window_ms=0, max_inflight_batches=2))
    dispatcher.start()
    return dispatcher


def tag_of(dispatched) -> float:
    return dispatched.results[0].candidates[0].label_logprobs[0]


async def test_the_fake_engine_is_one_that_prepares_batches():
    assert isinstance(SteppedEngine(), PreparesBatches)


async def test_the_next_batch_is_prepared_while_the_one_before_runs():
    engine = SteppedEngine()
    dispatcher = await started(engine)
    first = asyncio.ensure_future(dispatcher.score([group(1)]))
    await eventually_async(lambda: ("run start", 1) in engine.log)
    second = asyncio.ensure_future(dispatcher.score([group(2)]))
    await eventually_async(lambda: ("prepare end", 2) in engine.log)
    # batch 2 is prepared while batch 1 still runs, and waits for its turn
    assert ("run end", 1) not in engine.log and ("run start", 2) not in engine.log
    assert engine.log.index(("prepare start", 2)) > engine.log.index(("run start", 1))
    assert not first.done() and not second.done()
    engine.gate(1).set()
    assert tag_of(await first) == 1
    await eventually_async(lambda: ("run start", 2) in engine.log)
    assert engine.log.index(("run start", 2)) > engine.log.index(("run end", 1))  # one at a time
    engine.gate(2).set()
    assert tag_of(await second) == 2
    await dispatcher.close()


async def test_prepared_batches_run_in_the_order_they_were_collected():
    engine = SteppedEngine()
    for number in range(1, 6):
        engine.gate(number).set()  # every run goes through at once
    dispatcher = await started(engine)
    outcomes = []
    for tag in range(5):  # one after another: five batches
        outcomes.append(await dispatcher.score([group(tag)]))
    runs = [number for step, number in engine.log if step == "run start"]
    assert runs == sorted(runs) == [1, 2, 3, 4, 5]
    assert [tag_of(o) for o in outcomes] == [0, 1, 2, 3, 4]
    await dispatcher.close()


async def test_a_failed_preparation_fails_its_batch_alone():
    engine = SteppedEngine(fail_prepare={2})
    dispatcher = await started(engine)
    first = asyncio.ensure_future(dispatcher.score([group(1)]))
    await eventually_async(lambda: ("run start", 1) in engine.log)
    second = asyncio.ensure_future(dispatcher.score([group(2)]))
    with pytest.raises(EngineFailedError, match="prepare 2 failed"):
        await second
    assert not first.done()  # the running batch is untouched
    engine.gate(1).set()
    assert tag_of(await first) == 1
    await dispatcher.close()


async def test_a_failed_run_fails_its_callers_and_the_next_batch_still_runs():
    engine = SteppedEngine(fail_run={1})
    dispatcher = await started(engine)
    first = asyncio.ensure_future(dispatcher.score([group(1)]))
    await eventually_async(lambda: ("run start", 1) in engine.log)
    second = asyncio.ensure_future(dispatcher.score([group(2)]))
    await eventually_async(lambda: ("prepare end", 2) in engine.log)
    engine.gate(1).set()
    with pytest.raises(EngineFailedError, match="run 1 failed"):
        await first
    engine.gate(2).set()
    assert tag_of(await second) == 2
    await dispatcher.close()


async def test_callers_of_one_batch_keep_their_own_results_and_errors():
    engine = SteppedEngine(fail_caller_tag=7)
    engine.gate(1).set()
    dispatcher = Dispatcher(engine, BatchingConfig(collect_window_ms=20))
    dispatcher.start()
    calls = (dispatcher.score([group(tag), group(tag + 100)]) for tag in (5, 6, 7, 8))
    outcomes = await asyncio.gather(*calls, return_exceptions=True)
    assert engine.prepared_batches == 1  # one batch for the four callers
    for tag, outcome in zip((5, 6, 7, 8), outcomes, strict=True):
        if tag == 7:
            assert isinstance(outcome, EngineFailedError) and "own failure" in str(outcome)
        else:
            assert [g.candidates[1].label_logprobs for g in outcome.results] == [(tag, 1), (tag + 100, 1)]
    await dispatcher.close()
