"""The scaling plots are written as PNG files, skipped points included, and
show each measured engine's cost per candidate and the two compute floors."""

from __future__ import annotations

from figures import legend, lines, series
from scaling_samples import result

from loadtest.bench.scaling.plots import plot_scaling
from loadtest.bench.scaling.points import ScalingSweeps


def test_plots_are_written_with_skipped_points(tmp_path, saved_figures):
    sweeps = ScalingSweeps(candidates=(1, 8), history=(64, 256), fixed_history=64, fixed_candidates=8)

    def seconds(point) -> float:  # a call's time, different at each point
        return 0.002 * point.candidates + point.history_tokens / 10_000

    results = [result("torch", p, seconds=(seconds(p),)) for p in sweeps.points()]
    results += [result("naive", p, skipped="cap") for p in sweeps.points()]
    paths = plot_scaling(results, sweeps, tmp_path)
    assert [p.name for p in paths] == ["cost_vs_candidates.png", "cost_vs_history.png"]
    assert all(p.read_bytes().startswith(b"\x89PNG") for p in paths)

    flops = {r.point: (r.needed_flops, r.naive_flops) for r in results}
    peak = 1e9  # scaling_samples' peak FLOP/s
    by_candidates, by_history = saved_figures
    for figure, points, x, xlabel, title in (
            (by_candidates, sweeps.candidates_points(), lambda p: p.candidates, "candidates per group",
             "Cost per candidate vs candidates (history 64 tokens)"),
            (by_history, sweeps.history_points(), lambda p: p.history_tokens, "history tokens (shared prefix)",
             "Cost per candidate vs history (8 candidates)")):
        [axes] = figure.axes
        assert axes.get_title() == title
        assert (axes.get_xlabel(), axes.get_ylabel()) == (xlabel, "seconds per candidate")
        assert (axes.get_xscale(), axes.get_yscale()) == ("log", "log")
        xs = [x(p) for p in points]
        # naive skipped every point: no line of its own
        assert lines(axes) == {
            "torch": series(xs, [seconds(p) / p.candidates for p in points]),
            "floor with sharing (1 GFLOP/s)": series(xs, [flops[p][0] / p.candidates / peak for p in points]),
            "floor without sharing": series(xs, [flops[p][1] / p.candidates / peak for p in points]),
        }
        torch, with_sharing, without_sharing = axes.get_lines()
        assert torch.get_linestyle() == "-"
        assert [(line.get_linestyle(), line.get_color()) for line in (with_sharing, without_sharing)] == [
            ("--", "gray"), (":", "gray")]
        assert legend(axes) == ["torch", "floor with sharing (1 GFLOP/s)", "floor without sharing"]
