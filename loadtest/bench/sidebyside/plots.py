"""The side-by-side chart: every system's capacity sweep on one set of axes
(matplotlib, Agg), read back from the sweep.json each system's search wrote.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; before pyplot is imported
import matplotlib.pyplot as plt  # noqa: E402

from loadtest.plots import label_sweep_axes, save_png  # noqa: E402


def sweep_points(path: Path) -> list[tuple[float, float, bool]]:
    """(candidates/s, p99 ms, good) per rate of a saved sweep, in rate order:
    the verdict on the rate and its median window's figures (a sweep saved
    before rates had verdicts: every window)."""
    document = json.loads(path.read_text(encoding="utf-8"))
    rates = sorted(document.get("rates", document["steps"]), key=lambda rate: rate["rate"])
    return [(rate["candidates_per_s"], rate["p99_ms"], rate["good"])
            for rate in rates if rate["p99_ms"] is not None]


def plot_sweeps(sweeps: dict[str, Sequence[tuple[float, float, bool]]], slo_s: float, path: Path) -> Path:
    """Several systems' sweeps on one chart (side-by-side runs), each step as
    (candidates/s, p99 ms, good), in rate order; the curve furthest right
    under the SLO line serves the most."""
    figure, axes = plt.subplots(figsize=(9, 4.5))
    for name, steps in sweeps.items():
        line, = axes.plot([x for x, _, _ in steps], [y for _, y, _ in steps], marker="o", linewidth=1, label=name)
        bad = [(x, y) for x, y, good in steps if not good]
        if bad:
            axes.scatter(*zip(*bad), marker="X", s=60, color=line.get_color(), zorder=3)
    axes.axhline(slo_s * 1000, color="tab:red", linestyle="--", linewidth=1, label=f"SLO {slo_s * 1000:g} ms")
    axes.set_yscale("log")
    label_sweep_axes(axes, "Capacity sweeps, same workload and machine (X: over the SLO or errors)")
    return save_png(figure, path)
