"""Several systems' saved sweeps are read back, a point per rate in rate order, and drawn on one chart:
a line per system through its rates, its rates over the SLO crossed, the SLO line."""

from __future__ import annotations

from figures import assert_horizontal_line, legend, lines, points, series
from matplotlib.colors import same_color

from loadtest.bench.sidebyside.plots import plot_sweeps, sweep_points
from loadtest.capacity import Sweep, SweepStep, write_sweep_json
from loadtest.records import RequestRecord
from loadtest.summary import RunInfo, summarize

PNG = b"\x89PNG\r\n\x1a\n"


def step(rate: float, latency_s: float) -> SweepStep:
    """One second at `rate` requests/s of 4 candidates, every answer OK after `latency_s`."""
    rows = [RequestRecord(i, "r", 4, i / rate, i / rate, i / rate + latency_s, "OK") for i in range(round(rate))]
    run = RunInfo(mode="open-loop", target="t", timeout_s=1, seed=0, rate=rate)
    return SweepStep(rate, summarize(rows, wall_s=1.0, slo_s=0.5, run=run, started_at="t"))


def is_png(path) -> bool:
    return path.read_bytes()[:8] == PNG


def test_sweeps_of_several_systems_share_one_plot(tmp_path, saved_figures):
    sweep = Sweep((step(20, 0.2), step(10, 0.1), step(40, 0.9), step(40, 0.1), step(40, 0.95)))
    write_sweep_json(sweep, tmp_path / "sweep.json")
    points_a = sweep_points(tmp_path / "sweep.json")
    assert [good for _, _, good in points_a] == [True, True, False]  # one point per rate, in rate order
    assert [p99 for _, p99, _ in points_a] == sorted(p99 for _, p99, _ in points_a)
    assert is_png(plot_sweeps({"a": points_a, "b": points_a[:1]}, 0.5, tmp_path / "sweeps.png"))

    [figure] = saved_figures
    [axes] = figure.axes
    assert axes.get_title() == "Capacity sweeps, same workload and machine (X: over the SLO or errors)"
    assert axes.get_xlabel() == "throughput (candidates/s, OK)"
    assert axes.get_ylabel() == "p99 latency from intended send (ms)"
    assert axes.get_yscale() == "log"
    drawn = lines(axes)
    assert list(drawn) == ["a", "b", "SLO 500 ms"]
    # 40 requests/s: of 100, 900 and 950 ms, the median window; the rate is over the SLO
    assert drawn["a"] == series([40, 80, 160], [100, 200, 900], rel=0.01)
    assert drawn["a"] == ([x for x, _, _ in points_a], [y for _, y, _ in points_a])  # exactly what was read
    assert drawn["b"] == series([40], [100], rel=0.01)
    assert_horizontal_line(axes, "SLO 500 ms", 500.0)
    assert legend(axes) == ["a", "b", "SLO 500 ms"]
    [crossed] = points(axes).values()  # only a has a rate over the SLO
    assert crossed == series([160], [900], rel=0.01)
    [line_a, line_b, _] = axes.get_lines()
    [scatter] = axes.collections
    assert same_color(scatter.get_facecolor()[0], line_a.get_color())  # in its system's colour
    assert not same_color(line_a.get_color(), line_b.get_color())
