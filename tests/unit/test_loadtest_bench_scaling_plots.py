"""The scaling plots are written as PNG files, skipped points included."""

from __future__ import annotations

from scaling_samples import result

from loadtest.bench.scaling.plots import plot_scaling
from loadtest.bench.scaling.points import ScalingSweeps


def test_plots_are_written_with_skipped_points(tmp_path):
    sweeps = ScalingSweeps(candidates=(1, 8), history=(64, 256), fixed_history=64, fixed_candidates=8)
    results = [result("torch", p, seconds=(0.01 * p.candidates,)) for p in sweeps.points()]
    results += [result("naive", p, skipped="cap") for p in sweeps.points()]
    paths = plot_scaling(results, sweeps, tmp_path)
    assert [p.name for p in paths] == ["cost_vs_candidates.png", "cost_vs_history.png"]
    assert all(p.read_bytes().startswith(b"\x89PNG") for p in paths)
