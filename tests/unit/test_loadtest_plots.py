"""The plots are written as PNG files from known records and sweeps,
including the edge cases of a run (no OK answer, a sweep with no capacity)."""

from __future__ import annotations

import pytest

from loadtest.capacity import Sweep, SweepStep
from loadtest.plots import percentile_curve, plot_latency_over_time, plot_percentiles, plot_sweep
from loadtest.records import CLIENT_REJECTED, RequestRecord, latency_histogram, ok_latency_histograms
from loadtest.summary import RunInfo, summarize

PNG = b"\x89PNG\r\n\x1a\n"


def records() -> list[RequestRecord]:
    out = [RequestRecord(i, f"r{i}", 4, i * 0.1, i * 0.1, i * 0.1 + 0.01 * (1 + i % 7), "OK")
           for i in range(50)]
    out.append(RequestRecord(50, "r50", 4, 5.0, 5.0, 7.0, "DEADLINE_EXCEEDED"))
    out.append(RequestRecord(51, "r51", 4, 5.1, None, 5.1, CLIENT_REJECTED))
    return out


def is_png(path) -> bool:
    return path.read_bytes()[:8] == PNG


def test_run_plots_are_png_files(tmp_path):
    assert is_png(plot_latency_over_time(records(), 0.05, tmp_path / "time.png"))
    assert is_png(plot_percentiles(*ok_latency_histograms(records()), 0.05, tmp_path / "pct.png"))


def test_plots_of_a_run_without_answers(tmp_path):
    failed = [RequestRecord(0, "r0", 4, 0.0, 0.0, 2.0, "UNAVAILABLE")]
    assert is_png(plot_latency_over_time(failed, 0.5, tmp_path / "time.png"))
    assert is_png(plot_percentiles(*ok_latency_histograms(failed), 0.5, tmp_path / "pct.png"))


def test_the_percentile_curve_runs_from_the_median_to_the_maximum():
    xs, ys = percentile_curve(latency_histogram([(i + 1) / 1000 for i in range(1000)]))
    assert xs[0] == 1 and xs[-1] == pytest.approx(10_000)
    assert ys == sorted(ys)
    assert ys[-1] == pytest.approx(1000, rel=1e-3)
    assert percentile_curve(latency_histogram([])) == ([], [])


def step(rate: float, latency_s: float) -> SweepStep:
    rows = [RequestRecord(i, "r", 4, i * 0.1, i * 0.1, i * 0.1 + latency_s, "OK") for i in range(10)]
    run = RunInfo(mode="open-loop", target="t", timeout_s=1, seed=0, rate=rate)
    return SweepStep(rate, summarize(rows, wall_s=1.0, slo_s=0.5, run=run, started_at="t"))


def test_sweep_plot(tmp_path):
    sweep = Sweep((step(10, 0.1), step(20, 0.2), step(40, 0.9), step(40, 0.9), step(20, 0.3)))
    assert is_png(plot_sweep(sweep, 0.5, tmp_path / "sweep.png"))
    nothing = Sweep((step(10, 0.9),))
    assert nothing.capacity is None
    assert is_png(plot_sweep(nothing, 0.5, tmp_path / "none.png"))
