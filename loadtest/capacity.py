"""Capacity search: the highest open-loop rate one replica serves within its SLO.

A step is one open-loop run at one rate (its Summary). A step is good when
every request was answered OK (no error of any kind, client rejections
included) and the p99 latency measured from the intended send time is within
the SLO. Capacity is the highest good rate below the lowest bad one: a good
step above a bad one is noise, not capacity.

Two ways to choose the rates:

- a given list, measured in ascending order;
- a search: from a start rate, double while good (halve while bad) until one
  good and one bad rate bracket the knee, then bisect that bracket a few
  times. Each step costs one run, so the default is a handful of steps.

The search takes the measurement as a callable (rate -> Summary), so the
search logic is tested without a server. `sweep.json` holds the capacity and
every step's summary: the whole throughput/latency curve.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from loadtest.summary import Summary

FORMAT = "brew.loadtest.sweep/1"
# Closed-loop callers of the warm-up before a sweep: enough to saturate a
# replica, so every batch shape the sweep will meet has been seen once.
WARMUP_CONCURRENCY = 32

Measure = Callable[[float], Awaitable[Summary]]


def meets_slo(summary: Summary) -> bool:
    """Every request OK, and p99 (from intended send) within the SLO."""
    return (
        summary.total > 0
        and not summary.errors
        and summary.p99_ms is not None
        and summary.p99_ms <= summary.slo_ms
    )


@dataclass(frozen=True)
class SweepStep:
    rate: float  # requests/s offered
    summary: Summary

    @property
    def good(self) -> bool:
        return meets_slo(self.summary)


@dataclass(frozen=True)
class Sweep:
    steps: tuple[SweepStep, ...]  # in the order they were measured

    @property
    def capacity(self) -> SweepStep | None:
        """The highest good step below the lowest bad one; None if no step is good."""
        bad_rates = [step.rate for step in self.steps if not step.good]
        ceiling = min(bad_rates, default=float("inf"))
        good = [step for step in self.steps if step.good and step.rate < ceiling]
        return max(good, key=lambda step: step.rate, default=None)

    def to_json(self) -> dict[str, object]:
        capacity = self.capacity
        return {
            "format": FORMAT,
            "capacity": None if capacity is None else {
                "rate": capacity.rate,
                "requests_per_s": capacity.summary.ok_requests_per_s,
                "candidates_per_s": capacity.summary.candidates_per_s,
                "p99_ms": capacity.summary.p99_ms,
                "slo_ms": capacity.summary.slo_ms,
            },
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


async def sweep_rates(measure: Measure, rates: Sequence[float]) -> Sweep:
    """Measure each given rate, lowest first."""
    steps = [SweepStep(rate, await measure(rate)) for rate in sorted(rates)]
    return Sweep(tuple(steps))


async def search_capacity(
    measure: Measure, start_rate: float, *, max_brackets: int = 10, bisect_steps: int = 3
) -> Sweep:
    """Double (or halve) from `start_rate` until a good and a bad rate bracket
    the knee (at most `max_brackets` steps), then bisect `bisect_steps` times."""
    if not start_rate > 0:
        raise ValueError(f"start rate must be positive, got {start_rate}")
    steps: list[SweepStep] = []

    async def probe(rate: float) -> bool:
        steps.append(SweepStep(rate, await measure(rate)))
        return steps[-1].good

    good: float | None = None
    bad: float | None = None
    rate = start_rate
    for _ in range(max_brackets):
        if await probe(rate):
            good, rate = rate, rate * 2
        else:
            bad, rate = rate, rate / 2
        if good is not None and bad is not None:
            break
    if good is not None and bad is not None:
        for _ in range(bisect_steps):
            middle = (good + bad) / 2
            if await probe(middle):
                good = middle
            else:
                bad = middle
    return Sweep(tuple(steps))


def write_sweep_json(sweep: Sweep, path: Path) -> None:
    path.write_text(json.dumps(sweep.to_json(), indent=2) + "\n", encoding="utf-8")
