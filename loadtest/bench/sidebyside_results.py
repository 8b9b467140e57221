"""What a side-by-side run found per system, and the compute limit its
throughput is judged against: the types the measurement produces and the
report reads, kept apart from both.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class SystemResult:
    system: str
    capacity_rate: float | None  # requests/s; None when even the lowest rate probed broke the SLO
    capacity_candidates_per_s: list[float]  # one per repeat at the capacity rate
    capacity_p99_ms: list[float | None]
    fixed_rate: float
    fixed_candidates_per_s: list[float]
    fixed_p99_ms: list[float | None]
    fixed_errors: list[dict[str, int]]

    @staticmethod
    def median(values: Sequence[float | None]) -> float | None:
        present = [v for v in values if v is not None]
        return statistics.median(present) if present else None


@dataclass(frozen=True)
class ComputeLimit:
    """The work a candidate of the workload needs and what the machine can do."""

    flops_per_candidate: float  # with the shared prefix computed once (loadtest.bench.flops)
    naive_flops_per_candidate: float  # every prompt from scratch
    matmul_flops_per_s: float  # measured, all cores, fp32
    threads: int
