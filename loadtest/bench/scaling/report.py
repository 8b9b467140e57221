"""The scaling benchmark's report: the markdown tables of both sweeps and the
scaling.json document (format "brew.loadtest.scaling/1"; keys are only ever
added). Each row ends with the CPU milliseconds per candidate of the
benchmark's own process and of its children (vLLM's engine core and worker)
over the timed calls.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from brew.engines import EngineKind
from loadtest.bench.scaling.points import SCALING_ENGINES, ScalingPoint, ScalingSettings, ScalingSweeps
from loadtest.bench.scaling.results import ScalingResult

if TYPE_CHECKING:
    from loadtest.bench.flops import DecoderShape

FORMAT = "brew.loadtest.scaling/1"


def _fmt(value: float | None, spec: str) -> str:
    return "—" if value is None else format(value, spec)


def format_table(results: Sequence[ScalingResult], points: Sequence[ScalingPoint]) -> str:
    """A markdown table of `points`, one row per engine and point, in the given
    point order; "vs naive" is the naive engine's time over this engine's at
    the same point, where both were measured."""
    naive = {r.point: r.median_s for r in results if r.engine == EngineKind.NAIVE}
    engines = [e for e in SCALING_ENGINES if any(r.engine == e for r in results)]
    engines += sorted({r.engine for r in results} - set(engines))
    by_key = {(r.engine, r.point): r for r in results}
    lines = [
        "| engine | candidates | history | ms/call | ms/candidate | candidates/s | % of matmul peak "
        "| cached | vs naive | FLOPs saved by sharing | CPU ms/candidate, this process "
        "| CPU ms/candidate, children |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for point in points:
        for engine in engines:
            result = by_key.get((engine, point))
            if result is None:
                continue
            saved = f"{result.naive_flops / result.needed_flops:.1f}x"
            head = f"| {engine} | {point.candidates} | {point.history_tokens} |"
            if result.skipped:
                lines.append(f"{head} skipped | — | — | — | — | — | {saved} | — | — |")
                continue
            share, cached, naive_s = result.flop_share, result.cached_share, naive.get(point)
            own, children = result.own_cpu_s_per_candidate, result.children_cpu_s_per_candidate
            lines.append(
                f"{head} {result.median_s * 1000:.1f} | {result.s_per_candidate * 1000:.2f} "
                f"| {result.candidates_per_s:.1f} | {_fmt(None if share is None else share * 100, '.1f')} "
                f"| {'—' if cached is None else f'{cached * 100:.0f}%'} "
                f"| {'—' if naive_s is None else f'{naive_s / result.median_s:.1f}x'} | {saved} "
                f"| {_fmt(None if own is None else own * 1000, '.2f')} "
                f"| {_fmt(None if children is None else children * 1000, '.2f')} |"
            )
    return "\n".join(lines)


def format_report(results: Sequence[ScalingResult], sweeps: ScalingSweeps, engine_threads: Mapping[str, int],
                  peaks: Mapping[int, float], device_label: str | None = None) -> str:
    """Both sweeps' tables, each under a heading that names the fixed axis,
    after the matmul FLOP/s each engine's share is taken against (on a GPU,
    `device_label` names it: the engines compute there, not on threads)."""
    peak_lines = [f"- {engine}: {device_label or f'{threads} thread(s)'}, "
                  f"fp32 matmul {peaks[threads] / 1e9:.1f} GFLOP/s"
                  for engine, threads in engine_threads.items()]
    return "\n\n".join([
        "Share of peak is taken against:\n" + "\n".join(peak_lines),
        f"### Candidates per group (history {sweeps.fixed_history} tokens)",
        format_table(results, sweeps.candidates_points()),
        f"### History tokens ({sweeps.fixed_candidates} candidates)",
        format_table(results, sweeps.history_points()),
    ])


def scaling_json(results: Iterable[ScalingResult], settings: ScalingSettings, shape: DecoderShape,
                 positions: int, engine_threads: Mapping[str, int], peaks: Mapping[int, float],
                 label_ids: tuple[int, int], device_label: str | None = None,
                 torch_options: Mapping[str, object] | None = None) -> dict[str, object]:
    """The scaling.json document: the machine, the model, the settings and every result."""
    sweeps = settings.sweeps
    return {
        "format": FORMAT,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": len(os.sched_getaffinity(0)), "device": device_label or "cpu",
                    "engine_threads": dict(engine_threads),
                    "matmul_flops_by_threads": {str(t): f for t, f in sorted(peaks.items())},
                    "vllm_cpu_omp_threads_bind": os.environ.get("VLLM_CPU_OMP_THREADS_BIND", "auto")},
        "model": {**vars(shape), "max_position_embeddings": positions, "weights": "random"},
        "settings": {"repeats": settings.repeats, "seed": settings.seed,
                     "suffix_tokens": settings.suffix_tokens,
                     "label_ids": list(label_ids), "token_caps": dict(settings.token_caps),
                     "torch_options": dict(torch_options or {}),
                     "candidates": list(sweeps.candidates), "fixed_history": sweeps.fixed_history,
                     "history_tokens": list(sweeps.history), "fixed_candidates": sweeps.fixed_candidates},
        "results": [r.to_json() for r in results],
    }
