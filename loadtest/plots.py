"""PNG plots of a run and of a capacity sweep (matplotlib, Agg: no display needed).

- latency over time: every request's latency (from its intended send time)
  against that time, coloured by status, with the SLO line. Shows what a
  percentile hides: a stall, a slow start, a queue that keeps growing.
- latency percentiles: the HdrHistogram percentile curve on a "1/(1-p)" log
  axis (50%, 90%, 99%, 99.9% equally spaced), for both latency definitions;
  the gap between them is the wait that coordinated omission would hide.
- sweep: candidates/s against p99 for each rate of a capacity sweep, with the
  SLO line and the capacity point marked: where the knee is.
- overload: goodput and errors by status against offered load, past
  capacity: whether the server keeps scoring or collapses.
- soak: the resident memory of every server process over a long run, with
  the warm-up marked: whether it stays flat.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; before pyplot is imported
import matplotlib.pyplot as plt  # noqa: E402
from hdrh.histogram import HdrHistogram  # noqa: E402

from loadtest.capacity import Sweep  # noqa: E402
from loadtest.overload import OverloadSweep  # noqa: E402
from loadtest.records import OK, RequestRecord  # noqa: E402
from loadtest.soak import SoakResult  # noqa: E402

STATUS_COLOURS = {OK: "tab:blue", "DEADLINE_EXCEEDED": "tab:orange", "RESOURCE_EXHAUSTED": "tab:red",
                  "UNAVAILABLE": "tab:purple", "CLIENT_REJECTED": "black"}
# 1/(1-p) of the named percentiles
PERCENTILE_TICKS = ((1, "0%"), (2, "50%"), (10, "90%"), (100, "99%"), (1000, "99.9%"), (10_000, "99.99%"),
                    (100_000, "99.999%"))


def save_png(figure: plt.Figure, path: Path) -> Path:
    """Lay the figure out, write it to `path` as PNG and close it."""
    figure.tight_layout()
    figure.savefig(path, dpi=100, format="png")
    plt.close(figure)
    return path


def plot_latency_over_time(records: Sequence[RequestRecord], slo_s: float, path: Path) -> Path:
    figure, axes = plt.subplots(figsize=(9, 4.5))
    statuses = sorted({r.status for r in records}, key=lambda s: (s != OK, s))
    for status in statuses:
        chosen = [r for r in records if r.status == status]
        axes.scatter([r.intended for r in chosen], [r.latency_from_intended * 1000 for r in chosen], s=6,
                     color=STATUS_COLOURS.get(status, "tab:gray"), label=f"{status} ({len(chosen)})",
                     alpha=0.7)
    axes.axhline(slo_s * 1000, color="tab:red", linestyle="--", linewidth=1, label=f"SLO {slo_s * 1000:g} ms")
    axes.set_xlabel("intended send time (s from start)")
    axes.set_ylabel("latency from intended send (ms)")
    if records and min(r.latency_from_intended for r in records) > 0:
        axes.set_yscale("log")
    axes.set_title("Latency over time")
    axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small")  # outside: no point hidden
    axes.grid(True, which="both", alpha=0.3)
    return save_png(figure, path)


def percentile_curve(histogram: HdrHistogram, points: int = 200) -> tuple[list[float], list[float]]:
    """(1/(1-p), latency ms) pairs from p = 0 to 1 - 1/(10 count): the curve
    reaches the maximum and then stays flat, where the data ends."""
    count = histogram.get_total_count()
    if count == 0:
        return [], []
    top = math.log10(10 * count)
    xs = [10 ** (top * i / (points - 1)) for i in range(points)]
    return xs, [histogram.get_value_at_percentile(100.0 * (1.0 - 1.0 / x)) / 1000.0 for x in xs]


def plot_percentiles(
    from_intended: HdrHistogram, from_sent: HdrHistogram, slo_s: float, path: Path
) -> Path:
    figure, axes = plt.subplots(figsize=(8, 4.5))
    top = 10.0
    for histogram, label in ((from_intended, "from intended send"), (from_sent, "from actual send")):
        xs, ys = percentile_curve(histogram)
        axes.plot(xs, ys, label=label)
        top = max([top, *xs])
    axes.axhline(slo_s * 1000, color="tab:red", linestyle="--", linewidth=1, label=f"SLO {slo_s * 1000:g} ms")
    axes.set_xscale("log")
    ticks = [(x, name) for x, name in PERCENTILE_TICKS if x <= top]
    axes.set_xticks([x for x, _ in ticks], [name for _, name in ticks])
    axes.set_xlim(1, top)
    axes.set_xlabel("percentile")
    axes.set_ylabel("latency (ms)")
    axes.set_title("Latency by percentile (OK answers)")
    axes.legend(loc="upper left", fontsize="small")
    axes.grid(True, which="major", alpha=0.3)
    return save_png(figure, path)


def plot_sweep(sweep: Sweep, slo_s: float, path: Path) -> Path:
    """One point per window: the throughput reached against its p99 (from
    intended send); windows that broke the SLO or had errors are crosses. The
    line joins each rate's median window, in rate order."""
    figure, axes = plt.subplots(figsize=(9, 4.5))
    steps = [s for s in sweep.steps if s.summary.p99_ms is not None]
    medians = [v.median for v in sweep.verdicts() if v.median.summary.p99_ms is not None]
    ys = [s.summary.p99_ms or 0.0 for s in steps]
    axes.plot([s.summary.candidates_per_s for s in medians], [s.summary.p99_ms for s in medians],
              color="tab:blue", linewidth=1, zorder=1)
    for good, marker, label in ((True, "o", "within SLO, no errors"), (False, "X", "over SLO or errors")):
        chosen = [(s.summary.candidates_per_s, s.summary.p99_ms) for s in steps if s.good == good]
        if chosen:
            axes.scatter(*zip(*chosen), marker=marker, color="tab:blue" if good else "tab:red", zorder=2,
                         label=label)
    for step in medians:
        axes.annotate(f"{step.rate:g}/s", (step.summary.candidates_per_s, step.summary.p99_ms),
                      textcoords="offset points", xytext=(4, 4), fontsize="small")
    axes.axhline(slo_s * 1000, color="tab:red", linestyle="--", linewidth=1, label=f"SLO {slo_s * 1000:g} ms")
    capacity = sweep.capacity
    if capacity is not None and capacity.summary.p99_ms is not None:
        axes.scatter([capacity.summary.candidates_per_s], [capacity.summary.p99_ms], s=250, marker="*",
                     color="tab:green", zorder=3,
                     label=f"capacity: {capacity.rate:g} requests/s,\n"
                           f"{capacity.summary.candidates_per_s:.1f} candidates/s")
    if ys and min(ys) > 0:
        axes.set_yscale("log")
    label_sweep_axes(axes, "Capacity sweep")
    return save_png(figure, path)


def label_sweep_axes(axes: plt.Axes, title: str) -> None:
    """Axis names, title, legend and grid shared by the sweep charts."""
    axes.set_xlabel("throughput (candidates/s, OK)")
    axes.set_ylabel("p99 latency from intended send (ms)")
    axes.set_title(title)
    axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small")
    axes.grid(True, which="both", alpha=0.3)


def plot_overload(sweep: OverloadSweep, path: Path) -> Path:
    """Left: answers per second (offered, OK, OK within the SLO) against
    offered load; right: errors per second by status. Both against the
    multiple of capacity offered, capacity marked."""
    figure, (answers, errors) = plt.subplots(1, 2, figsize=(12, 4.5))
    steps = sweep.steps
    xs = [step.multiple for step in steps]
    answers.plot(xs, [step.summary.requests_per_s for step in steps], color="tab:gray", linestyle=":",
                 marker=".", label="offered")
    answers.plot(xs, [step.ok_per_s for step in steps], color=STATUS_COLOURS[OK], marker="o",
                 label="OK (within deadline)")
    answers.plot(xs, [step.within_slo_per_s for step in steps], color="tab:green", marker="s",
                 label="OK within SLO")
    answers.set_ylabel("requests/s")
    answers.set_title(f"Goodput against offered load (capacity {sweep.capacity:g} requests/s)")
    statuses = sorted({status for step in steps for status in step.summary.errors})
    for status in statuses:
        errors.plot(xs, [step.errors_per_s().get(status, 0.0) for step in steps], marker="o",
                    color=STATUS_COLOURS.get(status, "tab:gray"), label=status)
    errors.set_ylabel("errors/s")
    errors.set_title("Errors by status against offered load")
    for axes in (answers, errors):
        axes.axvline(1.0, color="tab:red", linestyle="--", linewidth=1, label="capacity")
        axes.set_xlabel("offered load (x capacity)")
        axes.set_xticks(xs, [f"{x:g}x" for x in xs])
        axes.set_ylim(bottom=0)
        axes.legend(loc="upper left", fontsize="small")
        axes.grid(True, alpha=0.3)
    return save_png(figure, path)


def plot_soak(result: SoakResult, path: Path) -> Path:
    """RSS (MiB) of each server process against time, the settle time marked."""
    figure, axes = plt.subplots(figsize=(10, 4.5))
    labels = sorted({label for sample in result.samples for label in sample.rss})
    for label in labels:
        points = [(s.elapsed_s / 60, s.rss[label] / 2**20) for s in result.samples if label in s.rss]
        axes.plot([t for t, _ in points], [m for _, m in points], label=label, linewidth=1.2)
    axes.axvline(result.settle_s / 60, color="tab:gray", linestyle="--", linewidth=1, label="end of warm-up")
    axes.set_xlabel("minutes")
    axes.set_ylabel("resident memory (MiB)")
    axes.set_ylim(bottom=0)
    axes.set_title(f"Soak: {result.rate:g} requests/s for {result.duration_s / 60:.0f} min, "
                   f"{result.errors} errors")
    axes.legend(loc="lower right", fontsize="small")
    axes.grid(True, alpha=0.3)
    return save_png(figure, path)
