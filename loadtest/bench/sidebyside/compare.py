"""Two side-by-side runs of the same systems, compared: does a capacity
figure reproduce, or did it move more than run-to-run noise allows?

    brew loadtest sidebyside --out runs/sidebyside/b --compare runs/sidebyside/a [--tolerance 0.2]

A reader of one run cannot tell a regression from noise; two consecutive
runs on the same tree can. Per system in both runs: the capacity rate each
search found, the median candidates/s at it and the median saturation
candidates/s, each run's figure and the gap between them, the larger over
the smaller, minus one. A system holds when its capacity gap is within the
tolerance; a system in one run only is listed, not judged.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from loadtest.bench.cells import number_cell
from loadtest.bench.sidebyside.results import SystemResult


def gap(first: float | None, second: float | None) -> float | None:
    """How far apart two positive figures are: larger / smaller - 1 (0.2: 20%)."""
    if first is None or second is None or min(first, second) <= 0:
        return None
    return max(first, second) / min(first, second) - 1


@dataclass(frozen=True)
class Comparison:
    markdown: str
    systems_judged: int
    systems_outside: tuple[str, ...]  # capacity gap over the tolerance, or no capacity in a run

    @property
    def reproduced(self) -> bool:
        return self.systems_judged > 0 and not self.systems_outside


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.0f}%"


def compare_runs(first: Sequence[SystemResult], second: Sequence[SystemResult], tolerance: float = 0.2,
                 names: tuple[str, str] = ("first", "second")) -> Comparison:
    """The comparison table of two runs' results and which systems moved."""
    later = {r.system: r for r in second}
    a, b = names
    lines = [
        f"| system | capacity req/s, {a} | {b} | candidates/s at capacity, {a} | {b} | gap | "
        f"saturation candidates/s, {a} | {b} | gap | within {100 * tolerance:.0f}% |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    outside: list[str] = []
    judged = 0
    for one in first:
        two = later.get(one.system)
        if two is None:
            continue
        judged += 1
        capacity = (SystemResult.median(one.capacity_candidates_per_s),
                    SystemResult.median(two.capacity_candidates_per_s))
        saturation = (SystemResult.median(one.saturation_candidates_per_s),
                      SystemResult.median(two.saturation_candidates_per_s))
        capacity_gap = gap(*capacity)
        holds = capacity_gap is not None and capacity_gap <= tolerance
        if not holds:
            outside.append(one.system)
        lines.append("| " + " | ".join([
            one.system, number_cell(one.capacity_rate, 2), number_cell(two.capacity_rate, 2),
            number_cell(capacity[0]), number_cell(capacity[1]), _pct(capacity_gap),
            number_cell(saturation[0]), number_cell(saturation[1]), _pct(gap(*saturation)),
            "yes" if holds else "no",
        ]) + " |")
    unmatched = sorted({r.system for r in first} ^ set(later))
    note = f"\nIn one run only, not compared: {', '.join(unmatched)}.\n" if unmatched else ""
    return Comparison("\n".join(lines) + "\n" + note, judged, tuple(outside))
