"""The plots are written as PNG files from known records and sweeps, and
show them: each figure's axes, labels, series and their data, the SLO line,
including the edge cases of a run (no OK answer, a sweep with no capacity)."""

from __future__ import annotations

import pytest
from figures import assert_horizontal_line, assert_vertical_line, legend, lines, points, series

from loadtest.capacity import Sweep, SweepStep
from loadtest.plots import percentile_curve, plot_latency_over_time, plot_percentiles, plot_soak, plot_sweep
from loadtest.records import CLIENT_REJECTED, RequestRecord, latency_histogram, ok_latency_histograms
from loadtest.soak import MemorySample, SoakResult
from loadtest.summary import RunInfo, summarize

PNG = b"\x89PNG\r\n\x1a\n"
MIB = 2**20


def records() -> list[RequestRecord]:
    """50 OK answers in 10 to 70 ms, one OK answer sent 500 ms late, one
    deadline exceeded, one refused by the client."""
    out = [RequestRecord(i, f"r{i}", 4, i * 0.1, i * 0.1, i * 0.1 + 0.01 * (1 + i % 7), "OK")
           for i in range(50)]
    out.append(RequestRecord(50, "r50", 4, 5.0, 5.0, 7.0, "DEADLINE_EXCEEDED"))
    out.append(RequestRecord(51, "r51", 4, 5.1, None, 5.1, CLIENT_REJECTED))
    out.append(RequestRecord(52, "r52", 4, 6.0, 6.5, 6.6, "OK"))
    return out


def is_png(path) -> bool:
    return path.read_bytes()[:8] == PNG


def only_axes(figure):
    assert len(figure.axes) == 1
    return figure.axes[0]


def test_latency_over_time_shows_each_request_by_status_and_the_slo(tmp_path, saved_figures):
    assert is_png(plot_latency_over_time(records(), 0.05, tmp_path / "time.png"))
    [figure] = saved_figures
    axes = only_axes(figure)
    assert axes.get_title() == "Latency over time"
    assert axes.get_xlabel() == "intended send time (s from start)"
    assert axes.get_ylabel() == "latency from intended send (ms)"
    shown = points(axes)
    assert list(shown) == ["OK (51)", "CLIENT_REJECTED (1)", "DEADLINE_EXCEEDED (1)"]  # OK first
    # the late answer at 600 ms: from its intended send time
    assert shown["OK (51)"] == series([i * 0.1 for i in range(50)] + [6.0],
                                      [10.0 * (1 + i % 7) for i in range(50)] + [600.0])
    assert shown["CLIENT_REJECTED (1)"] == series([5.1], [0.0])
    assert shown["DEADLINE_EXCEEDED (1)"] == series([5.0], [2000.0])
    assert list(lines(axes)) == ["SLO 50 ms"]  # no other line
    assert_horizontal_line(axes, "SLO 50 ms", 50.0)
    assert axes.get_yscale() == "linear"  # a refusal at 0 ms has no place on a log axis


def test_latency_percentiles_show_both_latencies_and_the_slo(tmp_path, saved_figures):
    from_intended, from_sent = ok_latency_histograms(records())
    assert is_png(plot_percentiles(from_intended, from_sent, 0.05, tmp_path / "pct.png"))
    [figure] = saved_figures
    axes = only_axes(figure)
    assert axes.get_title() == "Latency by percentile (OK answers)"
    assert (axes.get_xlabel(), axes.get_ylabel()) == ("percentile", "latency (ms)")
    assert axes.get_xscale() == "log"
    shown = lines(axes)
    assert list(shown) == ["from intended send", "from actual send", "SLO 50 ms"]
    assert shown["from intended send"] == series(*percentile_curve(from_intended))
    assert shown["from actual send"] == series(*percentile_curve(from_sent))
    # the late send: 600 ms from its intended time, 100 ms from when it went out
    assert max(shown["from intended send"][1]) == pytest.approx(600, rel=0.01)
    assert max(shown["from actual send"][1]) == pytest.approx(100, rel=0.01)
    assert_horizontal_line(axes, "SLO 50 ms", 50.0)
    assert legend(axes) == ["from intended send", "from actual send", "SLO 50 ms"]


def test_plots_of_a_run_without_answers(tmp_path, saved_figures):
    failed = [RequestRecord(0, "r0", 4, 0.0, 0.0, 2.0, "UNAVAILABLE")]
    assert is_png(plot_latency_over_time(failed, 0.5, tmp_path / "time.png"))
    assert is_png(plot_percentiles(*ok_latency_histograms(failed), 0.5, tmp_path / "pct.png"))
    over_time, percentiles = (only_axes(figure) for figure in saved_figures)
    assert points(over_time) == {"UNAVAILABLE (1)": series([0.0], [2000.0])}
    assert over_time.get_yscale() == "log"
    assert_horizontal_line(over_time, "SLO 500 ms", 500.0)
    shown = lines(percentiles)
    assert shown["from intended send"] == shown["from actual send"] == ([], [])  # no OK answer: empty curves
    assert_horizontal_line(percentiles, "SLO 500 ms", 500.0)


def test_the_percentile_curve_runs_from_the_median_to_the_maximum():
    xs, ys = percentile_curve(latency_histogram([(i + 1) / 1000 for i in range(1000)]))
    assert xs[0] == 1 and xs[-1] == pytest.approx(10_000)
    assert ys == sorted(ys)
    assert ys[-1] == pytest.approx(1000, rel=1e-3)
    assert percentile_curve(latency_histogram([])) == ([], [])


def step(rate: float, latency_s: float) -> SweepStep:
    """One second at `rate` requests/s of 4 candidates, every answer OK after `latency_s`."""
    rows = [RequestRecord(i, "r", 4, i / rate, i / rate, i / rate + latency_s, "OK") for i in range(round(rate))]
    run = RunInfo(mode="open-loop", target="t", timeout_s=1, seed=0, rate=rate)
    return SweepStep(rate, summarize(rows, wall_s=1.0, slo_s=0.5, run=run, started_at="t"))


def test_sweep_plot_shows_every_window_each_rates_median_the_capacity_and_the_slo(tmp_path, saved_figures):
    sweep = Sweep((step(10, 0.1), step(20, 0.2), step(40, 0.9), step(40, 0.9), step(20, 0.3)))
    assert is_png(plot_sweep(sweep, 0.5, tmp_path / "sweep.png"))
    [figure] = saved_figures
    axes = only_axes(figure)
    assert axes.get_title() == "Capacity sweep"
    assert axes.get_xlabel() == "throughput (candidates/s, OK)"
    assert axes.get_ylabel() == "p99 latency from intended send (ms)"
    assert axes.get_yscale() == "log"
    [medians] = [data for label, data in lines(axes).items() if not label.startswith("SLO")]
    # one point per rate, in rate order: its median window (of 200 and 300 ms, the worse)
    assert medians == series([40, 80, 160], [100, 300, 900], rel=0.01)
    assert_horizontal_line(axes, "SLO 500 ms", 500.0)
    shown = points(axes)
    assert list(shown) == ["within SLO, no errors", "over SLO or errors",
                           "capacity: 20 requests/s,\n80.0 candidates/s"]
    assert shown["within SLO, no errors"] == series([40, 80, 80], [100, 200, 300], rel=0.01)
    assert shown["over SLO or errors"] == series([160, 160], [900, 900], rel=0.01)
    assert shown["capacity: 20 requests/s,\n80.0 candidates/s"] == series([80], [300], rel=0.01)
    assert [text.get_text() for text in axes.texts] == ["10/s", "20/s", "40/s"]
    assert [tuple(map(float, text.xy)) for text in axes.texts] == list(zip(*medians))  # at each median


def test_sweep_plot_without_a_capacity(tmp_path, saved_figures):
    nothing = Sweep((step(10, 0.9),))
    assert nothing.capacity is None
    assert is_png(plot_sweep(nothing, 0.5, tmp_path / "none.png"))
    axes = only_axes(saved_figures[0])
    assert points(axes) == {"over SLO or errors": series([40], [900], rel=0.01)}  # no capacity star
    assert_horizontal_line(axes, "SLO 500 ms", 500.0)


def test_soak_plot_shows_each_process_memory_and_the_end_of_warm_up(tmp_path, saved_figures):
    run = RunInfo(mode="open-loop", target="t", timeout_s=1, seed=0, rate=2.0)
    summary = summarize([RequestRecord(0, "r0", 4, 0.0, 0.0, 0.1, "OK"),
                         RequestRecord(1, "r1", 4, 0.5, 0.5, 1.5, "DEADLINE_EXCEEDED")],
                        wall_s=600.0, slo_s=0.5, run=run, started_at="t")
    samples = [MemorySample(60.0 * minute, {"server [10]": (100 + minute) * MIB,
                                            **({"EngineCore [11]": 1000 * MIB} if minute >= 2 else {})})
               for minute in range(11)]
    result = SoakResult(rate=2.0, duration_s=600.0, settle_s=120.0, window_s=60.0, summary=summary,
                        samples=samples)
    assert is_png(plot_soak(result, tmp_path / "soak.png"))
    [figure] = saved_figures
    axes = only_axes(figure)
    assert axes.get_title() == "Soak: 2 requests/s for 10 min, 1 errors"
    assert (axes.get_xlabel(), axes.get_ylabel()) == ("minutes", "resident memory (MiB)")
    shown = lines(axes)
    assert list(shown) == ["EngineCore [11]", "server [10]", "end of warm-up"]
    assert shown["server [10]"] == (list(range(11)), [100.0 + minute for minute in range(11)])
    assert shown["EngineCore [11]"] == (list(range(2, 11)), [1000.0] * 9)  # only where it was sampled
    assert_vertical_line(axes, "end of warm-up", 2.0)
