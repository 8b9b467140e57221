"""PNG plots of the scaling sweeps (matplotlib, Agg: no display needed).

Per-candidate cost against candidates per group and against history tokens,
both on log axes, one solid line per engine. Grey lines are the compute
floors at the highest matmul FLOP/s measured for any engine's thread count:
the time the FLOPs a group needs would take at the machine's limit, with
and without prefix sharing. The gap between
the floors is what sharing can save; the gap between an engine and its floor
is what it leaves on the table.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; before pyplot is imported
import matplotlib.pyplot as plt  # noqa: E402

from loadtest.bench.scaling.points import SCALING_ENGINES, ScalingPoint, ScalingSweeps  # noqa: E402
from loadtest.bench.scaling.results import ScalingResult  # noqa: E402


def _plot(results: Sequence[ScalingResult], points: Sequence[ScalingPoint], x: Callable[[ScalingPoint], int],
          xlabel: str, title: str, path: Path) -> Path:
    figure, axes = plt.subplots(figsize=(8, 5))
    wanted = set(points)
    engines = [e for e in SCALING_ENGINES if any(r.engine == e for r in results)]
    for engine in engines:
        measured = sorted((x(r.point), r.s_per_candidate) for r in results
                          if r.engine == engine and r.point in wanted and r.s_per_candidate is not None)
        if measured:
            axes.plot(*zip(*measured, strict=True), marker="o", label=engine)
    floors = {(r.point, r.needed_flops, r.naive_flops) for r in results if r.point in wanted}
    peak_flops = max((r.peak_flops for r in results), default=0.0)
    if floors and peak_flops > 0:
        ordered = sorted(floors, key=lambda f: x(f[0]))
        xs = [x(p) for p, _, _ in ordered]
        axes.plot(xs, [needed / p.candidates / peak_flops for p, needed, _ in ordered], linestyle="--",
                  color="gray", label=f"floor with sharing ({peak_flops / 1e9:.0f} GFLOP/s)")
        axes.plot(xs, [naive / p.candidates / peak_flops for p, _, naive in ordered], linestyle=":",
                  color="gray", label="floor without sharing")
    axes.set_xscale("log", base=2)
    axes.set_yscale("log")
    axes.set_xlabel(xlabel)
    axes.set_ylabel("seconds per candidate")
    axes.set_title(title)
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize="small")
    figure.tight_layout()
    figure.savefig(path, dpi=100, format="png")
    plt.close(figure)
    return path


def plot_scaling(results: Sequence[ScalingResult], sweeps: ScalingSweeps, out: Path) -> list[Path]:
    """Both plots into `out`; returns their paths."""
    return [
        _plot(results, sweeps.candidates_points(), lambda p: p.candidates, "candidates per group",
              f"Cost per candidate vs candidates (history {sweeps.fixed_history} tokens)",
              out / "cost_vs_candidates.png"),
        _plot(results, sweeps.history_points(), lambda p: p.history_tokens, "history tokens (shared prefix)",
              f"Cost per candidate vs history ({sweeps.fixed_candidates} candidates)",
              out / "cost_vs_history.png"),
    ]
