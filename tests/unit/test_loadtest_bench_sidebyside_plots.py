"""Several systems' saved sweeps are read back, a point per rate in rate order, and drawn on one chart."""

from __future__ import annotations

from loadtest.bench.sidebyside.plots import plot_sweeps, sweep_points
from loadtest.capacity import Sweep, SweepStep, write_sweep_json
from loadtest.records import RequestRecord
from loadtest.summary import RunInfo, summarize

PNG = b"\x89PNG\r\n\x1a\n"


def step(rate: float, latency_s: float) -> SweepStep:
    rows = [RequestRecord(i, "r", 4, i * 0.1, i * 0.1, i * 0.1 + latency_s, "OK") for i in range(10)]
    run = RunInfo(mode="open-loop", target="t", timeout_s=1, seed=0, rate=rate)
    return SweepStep(rate, summarize(rows, wall_s=1.0, slo_s=0.5, run=run, started_at="t"))


def is_png(path) -> bool:
    return path.read_bytes()[:8] == PNG


def test_sweeps_of_several_systems_share_one_plot(tmp_path):
    sweep = Sweep((step(20, 0.2), step(10, 0.1), step(40, 0.9), step(40, 0.1), step(40, 0.95)))
    write_sweep_json(sweep, tmp_path / "sweep.json")
    points = sweep_points(tmp_path / "sweep.json")
    assert [good for _, _, good in points] == [True, True, False]  # one point per rate, in rate order
    assert [p99 for _, p99, _ in points] == sorted(p99 for _, p99, _ in points)
    assert is_png(plot_sweeps({"a": points, "b": points[:1]}, 0.5, tmp_path / "sweeps.png"))
