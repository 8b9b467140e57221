"""Capacity-search windows built by hand, for the tests of the search and of
the side-by-side runs that drive it."""

from __future__ import annotations

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
