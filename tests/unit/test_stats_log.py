"""The periodic throughput line: rates over an interval from running totals."""

from __future__ import annotations

import asyncio
import logging

import pytest
from waiting import eventually_async

from serving.metrics import ServiceMetrics, Totals, latency_buckets
from serving.stats_log import Throughput, ThroughputLogger, format_line


def test_rates_are_deltas_over_the_interval():
    before = Totals(requests=10, candidates=100, prompt_tokens=1000, cached_tokens=500, batches=5, batch_candidates=100)
    after = Totals(requests=30, candidates=300, prompt_tokens=5000, cached_tokens=3500, batches=9, batch_candidates=300)
    rates = Throughput.between(before, after, seconds=2.0)
    assert rates.candidates_per_second == 100.0
    assert rates.prompt_tokens_per_second == 2000.0
    assert rates.requests_per_second == 10.0
    assert rates.mean_batch_candidates == 50.0
    assert rates.cache_hit_share == 0.75


def test_an_idle_interval_has_zero_rates_not_a_division_error():
    rates = Throughput.between(Totals(), Totals(), seconds=10.0)
    assert rates == Throughput(0.0, 0.0, 0.0, 0.0, 0.0)


def test_the_line_names_every_number():
    line = format_line(Throughput(412.0, 51630.0, 3.1, 38.5, 0.712), queued=12, inflight=64)
    assert line == ("brew stats: 412.0 candidates/s, 51630 prompt tokens/s, 3.1 requests/s, mean batch 38.5 "
                    "candidates, queue 12 candidates, in flight 64 candidates, cache hits 71.2%")


def test_the_slo_is_a_latency_bucket():
    assert 0.123 in latency_buckets(0.123)
    assert list(latency_buckets(0.5)) == sorted(set(latency_buckets(0.5)))


@pytest.mark.asyncio
async def test_the_logger_logs_while_busy_and_stays_quiet_when_idle(caplog):
    metrics = ServiceMetrics(slo_seconds=0.5, model="m")
    intervals: list[int] = []  # one entry per interval the logger has looked at

    def queued() -> int:
        intervals.append(1)
        return 0

    logger = ThroughputLogger(metrics, interval_seconds=0.01, queued=queued, inflight=lambda: 0)
    with caplog.at_level(logging.INFO, logger="brew.stats"):
        running = asyncio.ensure_future(logger.run())
        await eventually_async(lambda: len(intervals) >= 3)
        assert not caplog.records  # idle: nothing logged
        metrics.task_scored("job_apply", candidates=8, prompt_tokens=800, cached_tokens=600)
        metrics.batch_dispatched(8)
        await eventually_async(lambda: len(caplog.records), equals=1)
        looked = len(intervals)
        await eventually_async(lambda: len(intervals) >= looked + 2)  # idle again: still one line
        logger.stop()
        await running
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "mean batch 8.0 candidates" in lines[0] and "cache hits 75.0%" in lines[0]
