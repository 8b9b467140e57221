"""What a side-by-side run found per system, and the compute limit its
throughput is judged against: the types the measurement produces and the
report reads, kept apart from both.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field

CpuByProcess = dict[str, float]  # CPU seconds per OK candidate, by process label (loadtest.host_cost)


@dataclass(frozen=True)
class Spread:
    """Run-to-run spread of one figure over its repeats."""

    low: float
    median: float
    high: float
    count: int  # repeats that produced the figure

    @classmethod
    def of(cls, values: Sequence[float | None]) -> Spread | None:
        present = [v for v in values if v is not None]
        return cls(min(present), statistics.median(present), max(present), len(present)) if present else None


@dataclass(frozen=True)
class SystemResult:
    """One system's figures, each a list with one entry per repeat (fractions:
    one list per fraction). Fields after fixed_errors were added later and
    have defaults, so older sidebyside.json files still load."""

    system: str
    capacity_rate: float | None  # requests/s; None when even the lowest rate probed broke the SLO
    capacity_candidates_per_s: list[float]  # one per repeat at the capacity rate
    capacity_p99_ms: list[float | None]
    fixed_rate: float
    fixed_candidates_per_s: list[float]
    fixed_p99_ms: list[float | None]
    fixed_errors: list[dict[str, int]]
    capacity_windows: int = 0  # windows the search measured at the capacity rate
    capacity_good_windows: int = 0
    capacity_cpu_s_per_candidate: list[CpuByProcess] = field(default_factory=list)
    fixed_cpu_s_per_candidate: list[CpuByProcess] = field(default_factory=list)
    saturation_callers: int | None = None  # closed-loop callers of the saturation runs
    saturation_requests_per_s: list[float] = field(default_factory=list)
    saturation_candidates_per_s: list[float] = field(default_factory=list)
    saturation_p99_ms: list[float | None] = field(default_factory=list)
    fractions: list[float] = field(default_factory=list)  # of the saturation requests/s, open-loop
    fraction_rates: list[list[float]] = field(default_factory=list)  # per fraction, one per repeat
    fraction_p99_ms: list[list[float | None]] = field(default_factory=list)  # per fraction, one per repeat
    resident_mib: float | None = None  # the server's process tree, after warm-up (loadtest.host_cost)

    @staticmethod
    def median(values: Sequence[float | None]) -> float | None:
        spread = Spread.of(values)
        return None if spread is None else spread.median


@dataclass(frozen=True)
class ComputeLimit:
    """The work a candidate of the workload needs and what the machine can do."""

    flops_per_candidate: float  # with the shared prefix computed once (loadtest.bench.flops)
    naive_flops_per_candidate: float  # every prompt from scratch
    matmul_flops_per_s: float  # measured, all cores, fp32
    threads: int
