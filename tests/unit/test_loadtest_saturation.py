"""Saturation throughput and the p99 at fractions of it, on fake runs."""

from __future__ import annotations

import json

import pytest

from loadtest.capacity import Sweep, SweepStep, write_sweep_json
from loadtest.records import RequestRecord
from loadtest.saturation import format_saturation, measure_saturation, saturation_callers
from loadtest.summary import RunInfo, Summary, summarize


def run_summary(ok: int, latency_s: float, wall_s: float = 10.0, candidates: int = 16) -> Summary:
    """`ok` requests of `candidates` answered in `latency_s` over `wall_s`."""
    records = [RequestRecord(i, f"r{i}", candidates, i * 0.01, i * 0.01, i * 0.01 + latency_s, "OK")
               for i in range(ok)]
    run = RunInfo(mode="closed-loop", target="t", timeout_s=2.0, seed=0)
    return summarize(records, wall_s=wall_s, slo_s=0.5, run=run, started_at="t")


def test_callers_are_twice_what_the_batcher_keeps_in_flight_within_the_deadline():
    assert saturation_callers(16) == 64  # 2 batches of 256 candidates = 32 requests of 16
    assert saturation_callers(100) == 12  # 512 / 100 rounds up to 6
    assert saturation_callers(1000) == 2
    # No more than the capacity rate answers within half the deadline.
    assert saturation_callers(16, capacity_rate=24, timeout_s=5) == 60
    assert saturation_callers(16, capacity_rate=1.4, timeout_s=5) == 3
    assert saturation_callers(16, capacity_rate=0.1, timeout_s=5) == 1
    assert saturation_callers(16, capacity_rate=None, timeout_s=5) == 64
    with pytest.raises(ValueError):
        saturation_callers(0)


@pytest.mark.asyncio
async def test_fractions_are_taken_of_the_closed_loop_request_rate():
    callers_seen: list[int] = []
    rates: list[float] = []

    async def closed_loop(callers: int) -> Summary:
        callers_seen.append(callers)
        return run_summary(ok=200, latency_s=0.8)  # 20 requests/s, 320 candidates/s

    async def open_loop(rate: float) -> Summary:
        rates.append(rate)
        return run_summary(ok=round(rate * 10), latency_s=rate / 100)

    saturation = await measure_saturation(closed_loop, open_loop, 64, fractions=(0.9, 0.5, 0.7))
    assert callers_seen == [64]
    assert rates == pytest.approx([10.0, 14.0, 18.0])  # lowest fraction first
    assert (saturation.requests_per_s, saturation.candidates_per_s) == (20.0, 320.0)
    assert saturation.p99_ms == pytest.approx(800, rel=1e-3)
    assert [p.fraction for p in saturation.points] == [0.5, 0.7, 0.9]
    assert saturation.points[2].summary.p99_ms == pytest.approx(180, rel=1e-3)
    assert "at 90% of it (18.00 requests/s open-loop): p99 180" in format_saturation(saturation)


@pytest.mark.asyncio
async def test_nothing_answered_means_no_fraction_runs():
    async def closed_loop(callers: int) -> Summary:
        return run_summary(ok=0, latency_s=0.1)

    async def open_loop(rate: float) -> Summary:
        raise AssertionError("no rate to take a fraction of")

    saturation = await measure_saturation(closed_loop, open_loop, 4)
    assert saturation.points == () and saturation.p99_ms is None


@pytest.mark.asyncio
@pytest.mark.parametrize(("fractions", "callers"), [((), 4), ((0.5, 1.5), 4), ((0.5,), 0)])
async def test_bad_fractions_or_callers_are_refused(fractions, callers):
    with pytest.raises(ValueError):
        await measure_saturation(None, None, callers, fractions)  # type: ignore[arg-type]


@pytest.mark.asyncio
async def test_the_saturation_goes_into_sweep_json(tmp_path):
    async def closed_loop(callers: int) -> Summary:
        return run_summary(ok=100, latency_s=0.6)

    async def open_loop(rate: float) -> Summary:
        return run_summary(ok=50, latency_s=0.1)

    saturation = await measure_saturation(closed_loop, open_loop, 8, fractions=(0.5,))
    write_sweep_json(Sweep((SweepStep(5, run_summary(50, 0.1)),)), tmp_path / "sweep.json", saturation)
    document = json.loads((tmp_path / "sweep.json").read_text())["saturation"]
    assert (document["callers"], document["requests_per_s"], document["candidates_per_s"]) == (8, 10.0, 160.0)
    assert document["fractions"][0]["fraction"] == 0.5 and document["fractions"][0]["rate"] == 5.0
