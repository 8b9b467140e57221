"""The side-by-side report: one markdown row per system, with the medians of
its repeats, its ratio to vLLM's endpoint and the share of the machine's
compute limit it reached.
"""

from __future__ import annotations

from collections.abc import Sequence

from loadtest.bench.sidebyside_results import ComputeLimit, SystemResult
from loadtest.bench.sidebyside_systems import BASELINE


def _fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def markdown_table(results: Sequence[SystemResult], candidates_per_request: int,
                   limit: ComputeLimit | None = None) -> str:
    """Medians of the repeats, candidates/s at capacity as a ratio to the
    baseline, and (with `limit`) the share of the machine's matmul FLOP/s
    that the needed work at that rate amounts to."""
    baseline = next((r for r in results if r.system == BASELINE), None)
    base_cps = SystemResult.median(baseline.capacity_candidates_per_s) if baseline else None
    lines = [
        f"| system | capacity (req/s) | candidates/s at capacity | p99 at capacity (ms) "
        f"| × {BASELINE} | % of matmul peak | p99 at {results[0].fixed_rate:g} req/s (ms) "
        f"| errors at the fixed rate |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        cps = SystemResult.median(r.capacity_candidates_per_s)
        ratio = f"{cps / base_cps:.2f}" if cps and base_cps else "-"
        share = f"{100 * cps * limit.flops_per_candidate / limit.matmul_flops_per_s:.2f}" if cps and limit else "-"
        errors = sum(sum(e.values()) for e in r.fixed_errors)
        lines.append(f"| {r.system} | {_fmt(r.capacity_rate, 2)} | {_fmt(cps)} | "
                     f"{_fmt(SystemResult.median(r.capacity_p99_ms))} | {ratio} | {share} | "
                     f"{_fmt(SystemResult.median(r.fixed_p99_ms))} | {errors} |")
    notes = f"\n\n{candidates_per_request} candidates per request; medians of the repeats."
    if limit:
        notes += (f" Work per candidate {limit.flops_per_candidate / 1e6:.2f} MFLOP with the prefix shared "
                  f"({limit.naive_flops_per_candidate / 1e6:.2f} MFLOP from scratch); matmul peak "
                  f"{limit.matmul_flops_per_s / 1e9:.1f} GFLOP/s fp32 on {limit.threads} threads.")
    return "\n".join(lines) + notes + "\n"
