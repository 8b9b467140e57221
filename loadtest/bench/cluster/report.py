"""The cluster benchmark's results and report: one row per arm (replicas x
routing), medians of its repeats, and the two ratios the benchmark is for:
member affinity against least request at the same replica count, and N
replicas against one (both through Envoy)."""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from loadtest.bench.cells import number_cell
from loadtest.summary import Summary

AFFINITY, LEAST_REQUEST = "affinity", "least request"
CLUSTER_ROOT = "brew cluster"  # the label of the cluster's root process in a CpuMeter


def split_cpu(cpu_s: Mapping[str, float]) -> tuple[float, float]:
    """CPU seconds of Envoy and of the replicas (every other process below
    the cluster's root: each `brew serve` and its engine processes); the root
    itself only starts and watches them."""
    envoy = sum(seconds for label, seconds in cpu_s.items() if label.split(" ", 1)[0] == "envoy")
    replicas = sum(seconds for label, seconds in cpu_s.items()
                   if label != CLUSTER_ROOT and label.split(" ", 1)[0] != "envoy")
    return envoy, replicas


@dataclass(frozen=True)
class Arm:
    replicas: int
    member_header: bool  # x-brew-member sent: Envoy's consistent hash; else least request

    @property
    def routing(self) -> str:
        return AFFINITY if self.member_header else LEAST_REQUEST

    @property
    def label(self) -> str:
        return f"{self.replicas} replica{'s' if self.replicas > 1 else ''}, {self.routing}"


def arms(replica_counts: Sequence[int]) -> list[Arm]:
    """Every replica count with affinity; with least request too where routing can differ (2+)."""
    return [arm for n in replica_counts for arm in (Arm(n, True), Arm(n, False)) if arm.member_header or n > 1]


@dataclass(frozen=True)
class ArmRun:
    """One measured run of one arm, from its summary."""

    replicas: int
    member_header: bool
    repeat: int
    candidates_per_s: float
    p50_ms: float | None
    p99_ms: float | None
    cached_token_share: float | None
    spread: Mapping[str, int]  # answers per replica
    errors: Mapping[str, int]
    envoy_cpu_ms_per_candidate: float | None = None
    replicas_cpu_ms_per_candidate: float | None = None  # all replicas together, their engines included

    @property
    def arm(self) -> Arm:
        return Arm(self.replicas, self.member_header)

    @classmethod
    def of(cls, arm: Arm, repeat: int, summary: Summary, cpu_s: Mapping[str, float] | None = None) -> ArmRun:
        envoy = replicas = None
        if cpu_s and summary.ok_candidates:
            envoy, replicas = (1000.0 * seconds / summary.ok_candidates for seconds in split_cpu(cpu_s))
        return cls(arm.replicas, arm.member_header, repeat, summary.candidates_per_s,
                   summary.latency_from_intended.p50, summary.p99_ms,
                   None if summary.server is None else summary.server.cached_token_share,
                   dict(summary.replicas), dict(summary.errors), envoy, replicas)


def _median(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


@dataclass(frozen=True)
class ArmResult:
    """The medians of an arm's repeats."""

    arm: Arm
    candidates_per_s: float | None
    p50_ms: float | None
    p99_ms: float | None
    cached_token_share: float | None
    busiest_replica_share: float | None  # of the answers; 1/replicas is an even spread
    errors: int
    envoy_cpu_ms_per_candidate: float | None = None
    replicas_cpu_ms_per_candidate: float | None = None


def arm_results(runs: Sequence[ArmRun]) -> list[ArmResult]:
    by_arm: dict[Arm, list[ArmRun]] = {}
    for run in runs:
        by_arm.setdefault(run.arm, []).append(run)
    return [ArmResult(
        arm=arm,
        candidates_per_s=_median([r.candidates_per_s for r in repeats]),
        p50_ms=_median([r.p50_ms for r in repeats]),
        p99_ms=_median([r.p99_ms for r in repeats]),
        cached_token_share=_median([r.cached_token_share for r in repeats]),
        busiest_replica_share=_median([max(r.spread.values()) / sum(r.spread.values()) if r.spread else None
                                       for r in repeats]),
        errors=sum(sum(r.errors.values()) for r in repeats),
        envoy_cpu_ms_per_candidate=_median([r.envoy_cpu_ms_per_candidate for r in repeats]),
        replicas_cpu_ms_per_candidate=_median([r.replicas_cpu_ms_per_candidate for r in repeats]),
    ) for arm, repeats in by_arm.items()]


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    return numerator / denominator if numerator is not None and denominator else None


def ratios(results: Sequence[ArmResult]) -> dict[str, float | None]:
    """affinity / least request (candidates/s and cache-hit share) at each replica
    count with both, and N replicas / 1 replica (candidates/s, with affinity)."""
    by_arm = {result.arm: result for result in results}
    found: dict[str, float | None] = {}
    for arm, result in by_arm.items():
        other = by_arm.get(Arm(arm.replicas, False))
        if arm.member_header and other is not None:
            found[f"{arm.replicas} replicas: candidates/s, affinity / least request"] = _ratio(
                result.candidates_per_s, other.candidates_per_s)
            found[f"{arm.replicas} replicas: cache-hit share, affinity / least request"] = _ratio(
                result.cached_token_share, other.cached_token_share)
    one = by_arm.get(Arm(1, True))
    for arm, result in by_arm.items():
        if one is not None and arm.member_header and arm.replicas > 1:
            found[f"candidates/s, {arm.replicas} replicas / 1 (affinity)"] = _ratio(
                result.candidates_per_s, one.candidates_per_s)
    return found


def _share(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def markdown_report(results: Sequence[ArmResult], notes: str) -> str:
    header = ("| replicas | routing | candidates/s | p50 (ms) | p99 (ms) | prompt tokens from the prefix cache "
              "| busiest replica's share of answers | CPU ms per candidate: replicas / Envoy | errors |")
    lines = [header, "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r.arm.replicas} | {r.arm.routing} | {number_cell(r.candidates_per_s)} | {number_cell(r.p50_ms)} | "
                     f"{number_cell(r.p99_ms)} | {_share(r.cached_token_share)} | {_share(r.busiest_replica_share)} | "
                     f"{number_cell(r.replicas_cpu_ms_per_candidate, 2)} / {number_cell(r.envoy_cpu_ms_per_candidate, 3)} | "
                     f"{r.errors} |")
    lines += ["", *(f"- {name}: {number_cell(value, 2)}" for name, value in ratios(results).items()), "", notes]
    return "\n".join(lines) + "\n"
