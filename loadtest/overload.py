"""The overload sweep: goodput and errors against offered load, past capacity.

A server that degrades gracefully keeps scoring at about its capacity when
offered more: the excess is refused early (RESOURCE_EXHAUSTED in
milliseconds), not queued until every caller's deadline has passed. The
sweep measures exactly that: from a capacity (given, or found by
loadtest.capacity's search), one open-loop run at each multiple of it
(default 0.5x .. 5x), and per step

- goodput: OK answers per second (an OK answer is within its deadline: the
  client gives up at the deadline), also in candidates/s, and the answers
  OK within the SLO per second (from the intended send), with the p99 of
  the OK answers;
- errors per second by status, and how fast each kind came back;
- both rates relative to the same rate at capacity (the 1x step, or the
  nearest step at or below 1x). The sweep `holds` when OK within the SLO
  stays at or above HOLD_SHARE of its rate at capacity for every step past
  capacity: an answer that comes after the SLO is of no use to a page that
  renders within it, however long the caller's deadline.

Like the capacity search, the sweep takes the measurement as a callable
(rate -> Summary), so it is tested without a server. overload.json holds
the capacity, every step and the verdict; loadtest.plots draws
overload.png from it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from loadtest.measure import Measure
from loadtest.summary import Summary

FORMAT = "brew.loadtest.overload/1"
DEFAULT_MULTIPLES = (0.5, 1.0, 1.5, 2.0, 3.0, 5.0)
# Past capacity, goodput must stay at least this share of goodput at capacity.
HOLD_SHARE = 0.8
REFUSED = "RESOURCE_EXHAUSTED"


@dataclass(frozen=True)
class OverloadStep:
    multiple: float  # of capacity
    rate: float  # requests/s offered
    summary: Summary

    @property
    def ok_per_s(self) -> float:
        """Goodput: OK answers per second (each within its deadline)."""
        return self.summary.ok_requests_per_s

    @property
    def within_slo_per_s(self) -> float:
        """OK answers within the SLO (from the intended send) per second."""
        summary = self.summary
        return (summary.goodput or 0.0) * summary.total / summary.wall_s if summary.wall_s > 0 else 0.0

    def errors_per_s(self) -> dict[str, float]:
        wall = self.summary.wall_s
        return {status: count / wall for status, count in self.summary.errors.items()} if wall > 0 else {}

    def to_json(self, reference: OverloadStep | None) -> dict[str, object]:
        summary = self.summary
        refused = summary.error_latency.get(REFUSED)
        return {
            "multiple": self.multiple,
            "rate": self.rate,
            "offered_per_s": summary.requests_per_s,
            "ok_per_s": self.ok_per_s,
            "ok_candidates_per_s": summary.candidates_per_s,
            "within_slo_per_s": self.within_slo_per_s,
            "goodput_vs_capacity": _ratio(self.ok_per_s, None if reference is None else reference.ok_per_s),
            "within_slo_vs_capacity": _ratio(self.within_slo_per_s,
                                             None if reference is None else reference.within_slo_per_s),
            "errors": dict(summary.errors),
            "errors_per_s": self.errors_per_s(),
            "refused_ms": None if refused is None else {"p50": refused.p50, "p99": refused.p99},
            "p99_ms": summary.p99_ms,
            "summary": summary.to_json(),
        }


@dataclass(frozen=True)
class OverloadSweep:
    capacity: float  # requests/s
    capacity_source: str  # "given" or "searched"
    steps: tuple[OverloadStep, ...]  # ascending multiples

    @property
    def reference(self) -> OverloadStep | None:
        """The step goodput is compared with: 1x, else the highest below it."""
        at_or_below = [step for step in self.steps if step.multiple <= 1.0]
        return max(at_or_below, key=lambda step: step.multiple, default=None)

    def share_of_capacity(self, step: OverloadStep) -> float | None:
        """OK answers per second relative to the rate at capacity."""
        reference = self.reference
        return _ratio(step.ok_per_s, None if reference is None else reference.ok_per_s)

    def slo_share_of_capacity(self, step: OverloadStep) -> float | None:
        """OK answers within the SLO per second relative to the rate at capacity."""
        reference = self.reference
        return _ratio(step.within_slo_per_s, None if reference is None else reference.within_slo_per_s)

    @property
    def holds(self) -> bool | None:
        """OK within the SLO past capacity stays at HOLD_SHARE of its rate at
        capacity (None: nothing to compare)."""
        shares = [self.slo_share_of_capacity(step) for step in self.steps if step.multiple > 1.0]
        if not shares or any(share is None for share in shares):
            return None
        return all(share is not None and share >= HOLD_SHARE for share in shares)

    def to_json(self) -> dict[str, object]:
        reference = self.reference
        return {
            "format": FORMAT,
            "capacity": {"rate": self.capacity, "source": self.capacity_source},
            "reference_multiple": None if reference is None else reference.multiple,
            "hold_share": HOLD_SHARE,
            "holds": self.holds,
            "steps": [step.to_json(reference) for step in self.steps],
        }


def _ratio(value: float, reference: float | None) -> float | None:
    return None if reference is None or reference <= 0 else value / reference


def parse_multiples(values: Sequence[float]) -> tuple[float, ...]:
    """Ascending, distinct, positive multiples of capacity."""
    multiples = tuple(sorted(set(values)))
    if not multiples or multiples[0] <= 0:
        raise ValueError(f"multiples of capacity must be positive, got {list(values)}")
    return multiples


async def sweep_overload(measure: Measure, capacity: float, multiples: Sequence[float],
                         capacity_source: str = "given") -> OverloadSweep:
    """One run at each multiple of `capacity` (requests/s), lowest first."""
    if not capacity > 0:
        raise ValueError(f"capacity must be a positive rate, got {capacity}")
    steps = []
    for multiple in parse_multiples(multiples):
        rate = capacity * multiple
        steps.append(OverloadStep(multiple, rate, await measure(rate)))
    return OverloadSweep(capacity, capacity_source, tuple(steps))


def format_overload(sweep: OverloadSweep) -> str:
    """The table printed after a sweep."""
    slo = sweep.steps[0].summary.slo_ms if sweep.steps else 0.0
    lines = [f"capacity {sweep.capacity:g} requests/s ({sweep.capacity_source}); SLO {slo:g} ms",
             f"{'load':>6} {'offered/s':>10} {'OK/s':>8} {'vs 1x':>7} {'in SLO/s':>9} {'vs 1x':>7} "
             f"{'OK p99 ms':>10} {'refused/s':>10} {'refused p99 ms':>15}  other errors"]
    for step in sweep.steps:
        refused = step.summary.error_latency.get(REFUSED)
        others = ", ".join(f"{status} {count}" for status, count in step.summary.errors.items()
                           if status != REFUSED) or "none"
        lines.append(
            f"{step.multiple:>5g}x {step.summary.requests_per_s:>10.1f} {step.ok_per_s:>8.1f} "
            f"{_percent(sweep.share_of_capacity(step)):>7} {step.within_slo_per_s:>9.1f} "
            f"{_percent(sweep.slo_share_of_capacity(step)):>7} {_ms(step.summary.p99_ms):>10} "
            f"{step.errors_per_s().get(REFUSED, 0.0):>10.1f} {_ms(None if refused is None else refused.p99):>15}  "
            f"{others}"
        )
    threshold = f"{HOLD_SHARE:.0%} of its rate at capacity"
    verdict = {True: f"holds: OK within the SLO past capacity stays at or above {threshold}",
               False: f"does not hold: OK within the SLO past capacity falls below {threshold}",
               None: "no verdict: no step at or below capacity answered OK within the SLO"}[sweep.holds]
    return "\n".join([*lines, verdict])


def _percent(share: float | None) -> str:
    return "-" if share is None else f"{share:.0%}"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def write_overload_json(sweep: OverloadSweep, path: Path) -> None:
    path.write_text(json.dumps(sweep.to_json(), indent=2) + "\n", encoding="utf-8")
