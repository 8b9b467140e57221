"""Capacity search on a fake replica whose p99 is a known function of the rate."""

from __future__ import annotations

import json

import pytest

from loadtest.capacity import (
    FORMAT, Sweep, SweepStep, meets_slo, search_capacity, sweep_rates, write_sweep_json,
)
from loadtest.records import RequestRecord
from loadtest.summary import RunInfo, Summary, summarize

SLO_S = 0.5


def step_summary(rate: float, latency_s: float, errors: int = 0) -> Summary:
    """Twenty requests answered in `latency_s` (so p99 = latency_s), plus
    `errors` DEADLINE_EXCEEDED ones."""
    records = [RequestRecord(i, f"r{i}", 4, i * 0.05, i * 0.05, i * 0.05 + latency_s, "OK")
               for i in range(20)]
    records += [RequestRecord(20 + i, "e", 4, 1.0, 1.0, 3.0, "DEADLINE_EXCEEDED") for i in range(errors)]
    run = RunInfo(mode="open-loop", target="t", timeout_s=2.0, seed=0, rate=rate)
    return summarize(records, wall_s=1.0, slo_s=SLO_S, run=run, started_at="t")


def knee_at(limit: float):
    """A replica that keeps its SLO up to `limit` requests/s."""
    measured: list[float] = []

    async def measure(rate: float) -> Summary:
        measured.append(rate)
        return step_summary(rate, 0.1 if rate <= limit else 0.9)

    return measure, measured


def test_meets_slo_needs_p99_within_the_slo_and_no_errors():
    assert meets_slo(step_summary(1, 0.49))
    assert not meets_slo(step_summary(1, 0.51))
    assert not meets_slo(step_summary(1, 0.1, errors=1))


@pytest.mark.asyncio
async def test_search_doubles_then_bisects():
    measure, measured = knee_at(37)
    sweep = await search_capacity(measure, 5, bisect_steps=3)
    assert measured == [5, 10, 20, 40, 30, 35, 37.5]
    assert sweep.capacity is not None and sweep.capacity.rate == 35
    assert [step.good for step in sweep.steps] == [True, True, True, False, True, True, False]


@pytest.mark.asyncio
async def test_search_halves_when_the_start_rate_is_too_high():
    measure, measured = knee_at(37)
    sweep = await search_capacity(measure, 80, bisect_steps=2)
    assert measured == [80, 40, 20, 30, 35]
    assert sweep.capacity is not None and sweep.capacity.rate == 35


@pytest.mark.asyncio
async def test_search_gives_up_after_max_brackets():
    measure, measured = knee_at(1e9)
    sweep = await search_capacity(measure, 1, max_brackets=4)
    assert measured == [1, 2, 4, 8]
    assert sweep.capacity is not None and sweep.capacity.rate == 8
    measure, measured = knee_at(0.001)
    assert (await search_capacity(measure, 1, max_brackets=3)).capacity is None


@pytest.mark.asyncio
async def test_a_given_sweep_is_measured_in_ascending_order():
    measure, measured = knee_at(25)
    sweep = await sweep_rates(measure, [40, 10, 20, 30])
    assert measured == [10, 20, 30, 40]
    assert sweep.capacity is not None and sweep.capacity.rate == 20


def test_capacity_ignores_a_good_step_above_a_bad_one():
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
    assert [(s["rate"], s["good"]) for s in document["steps"]] == [(10, True), (20, False)]
    assert document["steps"][1]["summary"]["format"] == "brew.loadtest.summary/1"
