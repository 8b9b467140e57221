"""Capacity search: the highest open-loop rate one replica serves within its SLO.

A window is one open-loop run at one rate (its Summary). A window is good
when every request was answered OK (no error of any kind, client rejections
included) and the p99 latency measured from the intended send time is within
the SLO. A rate is judged on the majority of its windows: one window decides
a good rate on the way up, but a bad window is confirmed at once with up to
`confirm` more windows (2 by default: the best of three), and the capacity
found is confirmed the same way before the search ends. A single noisy
window (a 15 s Poisson window at the knee can double its p99) thus neither
stops the search early nor becomes the capacity. Percentiles do not pool, so
the windows vote rather than being merged.

Capacity is the highest good rate below the lowest bad one: a good rate
above a bad one is noise, not capacity. Its figures are those of its median
window.

Two ways to choose the rates:

- a given list, measured in ascending order;
- a search: from a start rate, double while good (halve while bad) until one
  good and one bad rate bracket the knee, then bisect that bracket a few
  times; a capacity that fails its confirmation falls back to the next good
  rate below, and the gap between them is bisected once more. Each rate
  costs one window, three at most.

The search takes the measurement as a callable (rate -> Summary), so the
search logic is tested without a server. `sweep.json` holds the capacity,
the verdict on every rate and every window's summary: the whole
throughput/latency curve, and the saturation throughput when it was measured
(loadtest.saturation).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from loadtest.measure import Measure
from loadtest.saturation import Saturation
from loadtest.summary import Summary

FORMAT = "brew.loadtest.sweep/1"  # keys are only ever added
# Closed-loop callers of the warm-up before a sweep: enough to saturate a
# replica, so every batch shape the sweep will meet has been seen once.
WARMUP_CONCURRENCY = 32
# Extra windows that confirm a bad window, or the capacity: the best of three.
DEFAULT_CONFIRM = 2


def meets_slo(summary: Summary) -> bool:
    """Every request OK, and p99 (from intended send) within the SLO."""
    return (
        summary.total > 0
        and not summary.errors
        and summary.p99_ms is not None
        and summary.p99_ms <= summary.slo_ms
    )


def check_confirm(confirm: int) -> int:
    """`confirm` extra windows make 1 + confirm in all: an odd number, so one
    verdict always holds a majority."""
    if confirm < 0 or confirm % 2:
        raise ValueError(f"confirm must be an even number of extra windows (0, 2, 4, ...), got {confirm}")
    return confirm


@dataclass(frozen=True)
class SweepStep:
    """One window: one open-loop run at one rate."""

    rate: float  # requests/s offered
    summary: Summary

    @property
    def good(self) -> bool:
        return meets_slo(self.summary)


@dataclass(frozen=True)
class RateVerdict:
    """Every window measured at one rate and the verdict on them: good when
    most of them are good (a tie, which a search with an even `confirm`
    never leaves, is bad)."""

    rate: float
    windows: tuple[SweepStep, ...]  # in the order measured

    @property
    def good_windows(self) -> int:
        return sum(1 for window in self.windows if window.good)

    @property
    def good(self) -> bool:
        return 2 * self.good_windows > len(self.windows)

    @property
    def median(self) -> SweepStep:
        """The window whose figures stand for the rate: the middle one, good
        windows ranked before bad ones and then by p99 (of two, the worse),
        so a good rate is represented by a good window."""
        ranked = sorted(self.windows, key=lambda w: (not w.good, w.summary.p99_ms or float("inf")))
        return ranked[len(ranked) // 2]


@dataclass(frozen=True)
class Sweep:
    steps: tuple[SweepStep, ...]  # every window, in the order measured

    def verdicts(self) -> list[RateVerdict]:
        """One verdict per rate measured, lowest rate first."""
        rates = sorted({step.rate for step in self.steps})
        return [RateVerdict(rate, tuple(s for s in self.steps if s.rate == rate)) for rate in rates]

    @property
    def capacity_verdict(self) -> RateVerdict | None:
        """The highest good rate below the lowest bad one; None if no rate is good."""
        verdicts = self.verdicts()
        ceiling = min((v.rate for v in verdicts if not v.good), default=float("inf"))
        return max((v for v in verdicts if v.good and v.rate < ceiling), key=lambda v: v.rate, default=None)

    @property
    def capacity(self) -> SweepStep | None:
        """The median window of the capacity rate; None if no rate is good."""
        verdict = self.capacity_verdict
        return None if verdict is None else verdict.median

    def to_json(self) -> dict[str, object]:
        verdict = self.capacity_verdict
        return {
            "format": FORMAT,
            "capacity": None if verdict is None else {
                "rate": verdict.rate,
                "requests_per_s": verdict.median.summary.ok_requests_per_s,
                "candidates_per_s": verdict.median.summary.candidates_per_s,
                "p99_ms": verdict.median.summary.p99_ms,
                "slo_ms": verdict.median.summary.slo_ms,
                "windows": len(verdict.windows),
                "good_windows": verdict.good_windows,
            },
            "rates": [  # the verdict on each rate, with its median window's figures
                {"rate": v.rate, "good": v.good, "windows": len(v.windows), "good_windows": v.good_windows,
                 "candidates_per_s": v.median.summary.candidates_per_s, "p99_ms": v.median.summary.p99_ms}
                for v in self.verdicts()
            ],
            "steps": [
                {
                    "rate": step.rate,
                    "good": step.good,
                    "candidates_per_s": step.summary.candidates_per_s,
                    "p99_ms": step.summary.p99_ms,
                    "errors": dict(step.summary.errors),
                    "summary": step.summary.to_json(),
                }
                for step in self.steps
            ],
        }


class _Windows:
    """The windows measured so far, and the rules for measuring more."""

    def __init__(self, measure: Measure, confirm: int) -> None:
        self.measure = measure
        self.needed = check_confirm(confirm) // 2 + 1  # windows of one kind that settle a rate
        self.steps: list[SweepStep] = []

    def sweep(self) -> Sweep:
        return Sweep(tuple(self.steps))

    async def probe(self, rate: float) -> bool:
        """One window at `rate`: good is taken as it is; bad is confirmed at once."""
        self.steps.append(SweepStep(rate, await self.measure(rate)))
        return self.steps[-1].good or await self.settle(rate)

    async def settle(self, rate: float) -> bool:
        """More windows at `rate` until good or bad ones hold a majority of 1 + confirm."""
        while True:
            windows = [step.good for step in self.steps if step.rate == rate]
            if windows.count(True) >= self.needed or windows.count(False) >= self.needed:
                return windows.count(True) >= self.needed
            self.steps.append(SweepStep(rate, await self.measure(rate)))

    async def confirm_capacity(self) -> None:
        """Settle the capacity rate; when it fails, the next good rate below
        it is the capacity, settled in turn."""
        while (verdict := self.sweep().capacity_verdict) is not None:
            if await self.settle(verdict.rate):
                return


async def sweep_rates(measure: Measure, rates: Sequence[float], *, confirm: int = DEFAULT_CONFIRM) -> Sweep:
    """Measure each given rate, lowest first; confirm bad windows and the capacity."""
    windows = _Windows(measure, confirm)
    for rate in sorted(set(rates)):
        await windows.probe(rate)
    await windows.confirm_capacity()
    return windows.sweep()


async def search_capacity(
    measure: Measure, start_rate: float, *, max_brackets: int = 10, bisect_steps: int = 3,
    confirm: int = DEFAULT_CONFIRM,
) -> Sweep:
    """Double (or halve) from `start_rate` until a good and a bad rate bracket
    the knee (at most `max_brackets` rates), then bisect `bisect_steps` times;
    then confirm the capacity. Should the capacity fail its confirmation, it
    falls back to the next good rate below, which can be half of it (the
    doubling's rates are the only ones probed down there): the gap between
    the two is bisected again, `bisect_steps` times, once. Each rate is
    measured in 1 + `confirm` windows at most, so the search costs at most
    (1 + confirm) x (max_brackets + 2 x bisect_steps) windows."""
    if not start_rate > 0:
        raise ValueError(f"start rate must be positive, got {start_rate}")
    windows = _Windows(measure, confirm)
    good: float | None = None
    bad: float | None = None
    rate = start_rate
    for _ in range(max_brackets):
        if await windows.probe(rate):
            good, rate = rate, rate * 2
        else:
            bad, rate = rate, rate / 2
        if good is not None and bad is not None:
            break
    if good is not None and bad is not None:
        await _bisect(windows, good, bad, bisect_steps)
    candidate = windows.sweep().capacity_verdict
    await windows.confirm_capacity()
    found = windows.sweep().capacity_verdict
    if candidate is not None and found is not None and found.rate < candidate.rate:
        ceiling = min(v.rate for v in windows.sweep().verdicts() if not v.good and v.rate > found.rate)
        await _bisect(windows, found.rate, ceiling, bisect_steps)
        await windows.confirm_capacity()
    return windows.sweep()


async def _bisect(windows: _Windows, good: float, bad: float, steps: int) -> None:
    for _ in range(steps):
        middle = (good + bad) / 2
        if await windows.probe(middle):
            good = middle
        else:
            bad = middle


def write_sweep_json(sweep: Sweep, path: Path, saturation: Saturation | None = None) -> None:
    """sweep.json: the sweep, and the saturation throughput when it was measured."""
    document = sweep.to_json()
    if saturation is not None:
        document["saturation"] = saturation.to_json()
    path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
