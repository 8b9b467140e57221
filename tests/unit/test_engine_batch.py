"""The engine batch interface without a model: one caller's work, its early
delivery, its abandonment, and the concurrent form every non-packing engine uses."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest
from waiting import TIMEOUT_SECONDS, eventually_async

from brew.engines.base import CallerWork, score_callers_concurrently
from brew.types import CandidateLogprobs, GroupResult, ScoringGroup

def group(tag: int) -> ScoringGroup:
    return ScoringGroup(prefix_ids=(tag,), suffix_ids=((1,), (2,)), label_ids=(5, 6))


async def slow_score(groups: Sequence[ScoringGroup]) -> list[GroupResult]:
    """Takes as many hundredths of a second as the first prefix id says; tag 0 fails."""
    tag = groups[0].prefix_ids[0]
    await asyncio.sleep(tag / 100)
    if tag == 0:
        raise RuntimeError("boom")
    return [GroupResult((CandidateLogprobs((float(tag),), 1, 0),)) for _ in groups]


@pytest.mark.asyncio
async def test_each_caller_gets_its_own_outcome_delivered_as_soon_as_it_is_known():
    delivered: list[tuple[int, object]] = []
    batch = [CallerWork([group(tag)], on_delivered=lambda outcome, tag=tag: delivered.append((tag, outcome)))
             for tag in (5, 0, 1)]
    outcomes = await score_callers_concurrently(slow_score, batch)
    assert [tag for tag, _ in delivered] == [0, 1, 5]  # in the order they finished, not the batch order
    assert isinstance(outcomes[1], RuntimeError) and "boom" in str(outcomes[1])
    assert outcomes[0][0].candidates[0].label_logprobs == (5.0,)
    assert outcomes[2][0].candidates[0].label_logprobs == (1.0,)


@pytest.mark.asyncio
async def test_an_abandoned_caller_stops_and_the_others_finish():
    started: list[int] = []

    async def watched_score(groups: Sequence[ScoringGroup]) -> list[GroupResult]:
        started.append(groups[0].prefix_ids[0])
        return await slow_score(groups)

    leaving, staying = CallerWork([group(6000)]), CallerWork([group(2)])
    run = asyncio.ensure_future(score_callers_concurrently(watched_score, [leaving, staying]))
    await eventually_async(lambda: sorted(started), equals=[2, 6000])  # both callers' work is in flight
    leaving.abandon()
    outcomes = await asyncio.wait_for(run, timeout=TIMEOUT_SECONDS)  # does not wait for the leaver's 60 s
    assert isinstance(outcomes[0], asyncio.CancelledError)
    assert outcomes[1][0].candidates[0].label_logprobs == (2.0,)


def test_abandon_hooks_run_once_and_late_hooks_at_once():
    work = CallerWork([group(1)])
    calls: list[str] = []
    work.on_abandon(lambda: calls.append("early"))
    work.abandon()
    work.abandon()
    work.on_abandon(lambda: calls.append("late"))
    assert work.abandoned and calls == ["early", "late"] and work.candidates == 2


def test_only_the_first_delivery_counts():
    seen: list[object] = []
    work = CallerWork([group(1)], on_delivered=seen.append)
    work.deliver([])
    work.deliver(RuntimeError("late"))
    assert seen == [[]]
