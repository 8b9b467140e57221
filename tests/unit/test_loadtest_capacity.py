"""Capacity search on a fake replica whose p99 is a known function of the rate,
and on fakes with noisy windows: confirmation, its verdicts and its bound."""

from __future__ import annotations

import json
import random
from collections.abc import Mapping, Sequence

import pytest

from sweep_samples import step_summary

from loadtest.capacity import (
    FORMAT, RateVerdict, Sweep, SweepStep, check_confirm, meets_slo, search_capacity, sweep_rates,
    write_sweep_json,
)
from loadtest.summary import Summary


def knee_at(limit: float, noise: Mapping[float, Sequence[bool]] | None = None):
    """A replica that keeps its SLO up to `limit` requests/s; `noise` scripts
    the first windows at some rates (True: good, False: bad) regardless."""
    measured: list[float] = []
    scripted = {rate: list(outcomes) for rate, outcomes in (noise or {}).items()}

    async def measure(rate: float) -> Summary:
        measured.append(rate)
        good = scripted[rate].pop(0) if scripted.get(rate) else rate <= limit
        return step_summary(rate, 0.1 if good else 0.9)

    return measure, measured


def test_meets_slo_needs_p99_within_the_slo_and_no_errors():
    assert meets_slo(step_summary(1, 0.49))
    assert not meets_slo(step_summary(1, 0.51))
    assert not meets_slo(step_summary(1, 0.1, errors=1))


@pytest.mark.asyncio
async def test_search_doubles_then_bisects():
    measure, measured = knee_at(37)
    sweep = await search_capacity(measure, 5, bisect_steps=3, confirm=0)
    assert measured == [5, 10, 20, 40, 30, 35, 37.5]
    assert sweep.capacity is not None and sweep.capacity.rate == 35
    assert [step.good for step in sweep.steps] == [True, True, True, False, True, True, False]


@pytest.mark.asyncio
async def test_search_halves_when_the_start_rate_is_too_high():
    measure, measured = knee_at(37)
    sweep = await search_capacity(measure, 80, bisect_steps=2, confirm=0)
    assert measured == [80, 40, 20, 30, 35]
    assert sweep.capacity is not None and sweep.capacity.rate == 35


@pytest.mark.asyncio
async def test_search_gives_up_after_max_brackets():
    measure, measured = knee_at(1e9)
    sweep = await search_capacity(measure, 1, max_brackets=4, confirm=0)
    assert measured == [1, 2, 4, 8]
    assert sweep.capacity is not None and sweep.capacity.rate == 8
    measure, measured = knee_at(0.001)
    assert (await search_capacity(measure, 1, max_brackets=3, confirm=0)).capacity is None


@pytest.mark.asyncio
async def test_a_given_sweep_is_measured_in_ascending_order():
    measure, measured = knee_at(25)
    sweep = await sweep_rates(measure, [40, 10, 20, 30], confirm=0)
    assert measured == [10, 20, 30, 40]
    assert sweep.capacity is not None and sweep.capacity.rate == 20
    # Confirmed: each bad rate gets a second bad window, the capacity a second good one.
    measure, measured = knee_at(25)
    sweep = await sweep_rates(measure, [40, 10, 20, 30, 20])
    assert measured == [10, 20, 30, 30, 40, 40, 20]
    assert sweep.capacity_verdict is not None and sweep.capacity_verdict.rate == 20
    assert len(sweep.capacity_verdict.windows) == 2


@pytest.mark.asyncio
async def test_a_truly_bad_rate_is_confirmed_bad_and_the_capacity_confirmed_good():
    measure, measured = knee_at(37)
    sweep = await search_capacity(measure, 5, bisect_steps=3)
    assert measured == [5, 10, 20, 40, 40, 30, 35, 37.5, 37.5, 35]
    verdicts = {v.rate: (v.good, len(v.windows)) for v in sweep.verdicts()}
    assert verdicts[40] == verdicts[37.5] == (False, 2)
    assert verdicts[35] == (True, 2)
    assert sweep.capacity is not None and sweep.capacity.rate == 35


@pytest.mark.asyncio
async def test_a_single_noisy_bad_window_no_longer_stops_the_search():
    # The knee is at 20 requests/s, but the first window at 8 comes out bad.
    measure, measured = knee_at(20, noise={8: [False]})
    sweep = await search_capacity(measure, 4, bisect_steps=2)
    assert measured[:4] == [4, 8, 8, 8]  # bad, then good: a third window decides
    assert sweep.capacity is not None and sweep.capacity.rate == 20
    # Without confirmation that one window put the knee below 8, never probing higher.
    measure, measured = knee_at(20, noise={8: [False]})
    unconfirmed = await search_capacity(measure, 4, bisect_steps=2, confirm=0)
    assert measured == [4, 8, 6, 7]
    assert unconfirmed.capacity is not None and unconfirmed.capacity.rate == 7


@pytest.mark.asyncio
async def test_a_lucky_good_window_below_the_knee_does_not_become_the_capacity():
    # 35 looks good once, then fails twice: the capacity falls back to 30,
    # confirmed in turn; the gap between 30 and 35 is bisected once more.
    measure, measured = knee_at(30, noise={35: [True]})
    sweep = await search_capacity(measure, 5, bisect_steps=2)
    assert measured == [5, 10, 20, 40, 40, 30, 35, 35, 35, 30, 32.5, 32.5, 31.25, 31.25]
    assert sweep.capacity_verdict is not None and sweep.capacity_verdict.rate == 30
    assert (sweep.capacity_verdict.good_windows, len(sweep.capacity_verdict.windows)) == (2, 2)


@pytest.mark.asyncio
async def test_a_capacity_that_fails_confirmation_far_above_the_next_good_rate_is_searched_between():
    # The knee sits at 13; 16 looks good once (a lucky window at the knee),
    # then fails. Falling back to 8, the doubling's last good rate, would
    # halve the capacity: the gap 8-16 is bisected instead.
    measure, measured = knee_at(13, noise={16: [True]})
    sweep = await search_capacity(measure, 4, bisect_steps=3)
    assert measured[:9] == [4, 8, 16, 32, 32, 24, 24, 20, 20]
    assert measured[9:] == [18, 18, 16, 16, 8, 12, 14, 14, 13, 13]
    assert sweep.capacity_verdict is not None and sweep.capacity_verdict.rate == 13
    assert sweep.capacity_verdict.good_windows == 2
    assert max(measured) == 32 and len(measured) <= 3 * (10 + 2 * 3)


@pytest.mark.asyncio
@pytest.mark.parametrize("seed", range(20))
async def test_the_search_is_bounded_on_any_noise(seed):
    rng = random.Random(seed)
    measured: list[float] = []

    async def coin(rate: float) -> Summary:
        measured.append(rate)
        return step_summary(rate, rng.choice((0.1, 0.9)))

    sweep = await search_capacity(coin, 4, max_brackets=5, bisect_steps=3, confirm=2)
    assert len(measured) <= 3 * (5 + 2 * 3)
    assert all(len(v.windows) <= 3 for v in sweep.verdicts())
    capacity = sweep.capacity_verdict
    assert capacity is None or (capacity.good and capacity.good_windows >= 2)


def test_confirm_must_leave_a_majority():
    assert check_confirm(0) == 0 and check_confirm(4) == 4
    for odd in (1, 3, -2):
        with pytest.raises(ValueError, match="even number"):
            check_confirm(odd)


def test_a_rate_is_judged_on_the_majority_of_its_windows():
    good, bad, worse = SweepStep(8, step_summary(8, 0.2)), SweepStep(8, step_summary(8, 0.9)), \
        SweepStep(8, step_summary(8, 0.1, errors=1))
    assert RateVerdict(8, (bad, good, good)).good
    assert RateVerdict(8, (bad, good, good)).median is good
    assert not RateVerdict(8, (bad, good, worse)).good
    assert not RateVerdict(8, (bad, good)).good  # a tie is bad


def test_capacity_ignores_a_good_rate_above_a_bad_one():
    sweep = Sweep((
        SweepStep(10, step_summary(10, 0.1)),
        SweepStep(20, step_summary(20, 0.1, errors=2)),
        SweepStep(30, step_summary(30, 0.1)),  # noise above a failing rate
    ))
    assert sweep.capacity is not None and sweep.capacity.rate == 10


def test_sweep_json(tmp_path):
    sweep = Sweep((SweepStep(10, step_summary(10, 0.1)), SweepStep(20, step_summary(20, 0.9))))
    write_sweep_json(sweep, tmp_path / "sweep.json")
    document = json.loads((tmp_path / "sweep.json").read_text())
    assert document["format"] == FORMAT
    assert document["capacity"]["rate"] == 10
    assert document["capacity"]["p99_ms"] == pytest.approx(100, rel=1e-3)
    assert document["capacity"]["candidates_per_s"] == 80  # 20 requests x 4 candidates in 1 s
    assert (document["capacity"]["windows"], document["capacity"]["good_windows"]) == (1, 1)
    assert [(r["rate"], r["good"], r["windows"], r["good_windows"]) for r in document["rates"]] == [
        (10, True, 1, 1), (20, False, 1, 0)]
    assert document["rates"][1]["p99_ms"] == pytest.approx(900, rel=1e-3)
    assert [(s["rate"], s["good"]) for s in document["steps"]] == [(10, True), (20, False)]
    assert document["steps"][1]["summary"]["format"] == "brew.loadtest.summary/1"
