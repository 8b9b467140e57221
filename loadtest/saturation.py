"""Saturation throughput, and the p99 at fixed fractions of it.

A capacity search answers "how many requests/s within the SLO", but its
answer sits at a knee, where one Poisson window can move p99 twofold. Two
figures are steadier and say more about a replica:

- the saturation throughput: what the replica sustains when it is never
  idle. A closed-loop run with enough callers (by default twice the requests
  a Brew server keeps in its engine at once, but no more than keep the mean
  wait within half the deadline: `saturation_callers`) gives its OK
  requests/s and candidates/s, and the p99 the callers waited for them.
- the p99 at fixed fractions of it (50%, 70% and 90% by default): open-loop
  runs at those shares of the saturation request rate, so systems are
  compared at the same relative load rather than each at its own knee.

`measure_saturation` is pure over two callables (callers -> Summary of a
closed-loop run; rate -> Summary of an open-loop run), so it is tested
without a server.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from loadtest.measure import ClosedLoop, Measure
from loadtest.summary import Summary

DEFAULT_FRACTIONS = (0.5, 0.7, 0.9)
# What a Brew server keeps in its engine at once with its default batching
# settings (serving.config.BatchingConfig): batches of at most 256
# candidates, at most 2 in flight.
BATCH_CANDIDATES = 256
INFLIGHT_BATCHES = 2


def saturation_callers(candidates_per_request: float, capacity_rate: float | None = None,
                       timeout_s: float | None = None, batch_candidates: int = BATCH_CANDIDATES,
                       inflight_batches: int = INFLIGHT_BATCHES) -> int:
    """Twice the requests the server's batcher keeps in flight: enough callers
    that a full batch is always waiting behind the ones being scored.

    Given the capacity rate found and the per-request deadline, no more than
    capacity x deadline / 2: by Little's law N callers served at X requests/s
    wait N / X seconds each, so this keeps the mean wait near half the
    deadline. More callers would only queue, and past the deadline their
    requests fail, which would measure the deadline rather than the server
    (a naive engine at 1.4 requests/s cannot answer 64 callers within 5 s)."""
    if not candidates_per_request > 0:
        raise ValueError(f"candidates per request must be positive, got {candidates_per_request}")
    callers = 2 * max(1, math.ceil(batch_candidates * inflight_batches / candidates_per_request))
    if capacity_rate and timeout_s:
        callers = min(callers, max(1, math.floor(capacity_rate * timeout_s / 2)))
    return callers


def check_fractions(fractions: Sequence[float]) -> tuple[float, ...]:
    if not fractions or not all(0 < f <= 1 for f in fractions):
        raise ValueError(f"fractions of the saturation throughput must be in (0, 1], got {list(fractions)}")
    return tuple(sorted(fractions))


@dataclass(frozen=True)
class FractionPoint:
    """An open-loop run at a fixed fraction of the saturation request rate."""

    fraction: float
    rate: float  # requests/s offered
    summary: Summary


@dataclass(frozen=True)
class Saturation:
    callers: int
    summary: Summary  # the closed-loop run
    points: tuple[FractionPoint, ...]  # lowest fraction first; none when nothing was answered OK

    @property
    def requests_per_s(self) -> float:
        return self.summary.ok_requests_per_s

    @property
    def candidates_per_s(self) -> float:
        return self.summary.candidates_per_s

    @property
    def p99_ms(self) -> float | None:
        return self.summary.p99_ms

    def to_json(self) -> dict[str, object]:
        return {
            "callers": self.callers,
            "requests_per_s": self.requests_per_s,
            "candidates_per_s": self.candidates_per_s,
            "p99_ms": self.p99_ms,
            "errors": dict(self.summary.errors),
            "fractions": [
                {"fraction": p.fraction, "rate": p.rate, "candidates_per_s": p.summary.candidates_per_s,
                 "p99_ms": p.summary.p99_ms, "errors": dict(p.summary.errors)}
                for p in self.points
            ],
        }


async def measure_saturation(closed_loop: ClosedLoop, open_loop: Measure, callers: int,
                             fractions: Sequence[float] = DEFAULT_FRACTIONS) -> Saturation:
    """A closed-loop run with `callers`, then one open-loop run at each
    fraction of the OK requests/s it sustained."""
    fractions = check_fractions(fractions)
    if callers < 1:
        raise ValueError(f"a closed-loop run needs at least one caller, got {callers}")
    summary = await closed_loop(callers)
    rate = summary.ok_requests_per_s
    points = [FractionPoint(f, f * rate, await open_loop(f * rate)) for f in fractions] if rate > 0 else []
    return Saturation(callers, summary, tuple(points))


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} ms"


def format_saturation(saturation: Saturation) -> str:
    """The lines printed after a capacity command."""
    lines = [f"saturation: {saturation.requests_per_s:.2f} requests/s = {saturation.candidates_per_s:.1f} "
             f"candidates/s at p99 {_ms(saturation.p99_ms)} ({saturation.callers} closed-loop callers)"]
    lines += [f"  at {p.fraction:.0%} of it ({p.rate:.2f} requests/s open-loop): p99 {_ms(p.summary.p99_ms)}"
              + (f", errors {dict(p.summary.errors)}" if p.summary.errors else "")
              for p in saturation.points]
    return "\n".join(lines)
