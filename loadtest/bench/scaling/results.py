"""One engine at one point of the scaling sweeps: the timed calls, the FLOPs
the group needs, and the rates and shares derived from them.

The type the measurement produces and the report and plots read, kept apart
from both so that neither imports the other.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping
from dataclasses import dataclass, field

from loadtest.bench.scaling.points import ScalingPoint

THIS_PROCESS = "this process"  # the benchmark's own process, where the engine runs in-process


@dataclass(frozen=True)
class ScalingResult:
    """One engine at one point: wall seconds of each timed call, or why it was skipped."""

    engine: str
    point: ScalingPoint
    needed_flops: int  # with prefix sharing (loadtest.bench.flops.shared_group_flops)
    naive_flops: int  # every prompt from scratch
    peak_flops: float  # measured matmul FLOP/s on the threads this engine computes on
    seconds: tuple[float, ...] = ()
    cached_share: float | None = None  # prompt tokens the engine reported as not recomputed
    skipped: str | None = None
    # CPU seconds over the timed calls: THIS_PROCESS, and each child by its
    # command line (vLLM's engine core and worker; loadtest.host_cost)
    cpu_s: Mapping[str, float] = field(default_factory=dict)

    @property
    def median_s(self) -> float | None:
        return statistics.median(self.seconds) if self.seconds else None

    @property
    def s_per_candidate(self) -> float | None:
        median = self.median_s
        return None if median is None else median / self.point.candidates

    @property
    def candidates_per_s(self) -> float | None:
        median = self.median_s
        return None if not median else self.point.candidates / median

    @property
    def own_cpu_s_per_candidate(self) -> float | None:
        """CPU seconds of this process per candidate scored in the timed calls."""
        return self._per_candidate(self.cpu_s.get(THIS_PROCESS))

    @property
    def children_cpu_s_per_candidate(self) -> float | None:
        """CPU seconds of all its children per candidate scored in the timed calls."""
        return self._per_candidate(sum(s for label, s in self.cpu_s.items() if label != THIS_PROCESS))

    def _per_candidate(self, seconds: float | None) -> float | None:
        scored = self.point.candidates * len(self.seconds)
        return None if seconds is None or not self.cpu_s or not scored else seconds / scored

    @property
    def flop_share(self) -> float | None:
        """Needed FLOPs per second reached, as a share of the measured matmul FLOP/s."""
        median = self.median_s
        return None if not median or self.peak_flops <= 0 else self.needed_flops / median / self.peak_flops

    def to_json(self) -> dict[str, object]:
        return {
            "engine": self.engine,
            "candidates": self.point.candidates,
            "history_tokens": self.point.history_tokens,
            "skipped": self.skipped,
            "seconds": list(self.seconds),
            "median_s": self.median_s,
            "s_per_candidate": self.s_per_candidate,
            "candidates_per_s": self.candidates_per_s,
            "needed_flops": self.needed_flops,
            "naive_flops": self.naive_flops,
            "peak_flops": self.peak_flops,
            "flop_share": self.flop_share,
            "cached_share": self.cached_share,
            "cpu_s": dict(self.cpu_s),
            "own_cpu_s_per_candidate": self.own_cpu_s_per_candidate,
            "children_cpu_s_per_candidate": self.children_cpu_s_per_candidate,
        }
