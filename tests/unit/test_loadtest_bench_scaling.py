"""The pure parts of the scaling benchmark: points, groups, caps, the table.
No model is loaded."""

from __future__ import annotations

import argparse

import pytest

from loadtest.bench.flops import DecoderShape
from loadtest.bench.scaling import (
    FIRST_ID, Point, PointResult, Settings, Sweeps, build_parser, checkpoint_positions, format_report,
    format_table, label_ids_for, make_group, parse_caps, point_flops, vllm_cpu_threads,
)
from loadtest.bench.scaling_plots import plot_scaling

SHAPE = DecoderShape(hidden_size=128, intermediate_size=384, layers=4, heads=2, kv_heads=2, head_dim=64,
                     vocab_size=764)


def group(point: Point, call: int = 1, seed: int = 0):
    return make_group(point, vocab_size=764, suffix_tokens=24, label_ids=(5, 9), seed=seed, call=call)


def test_group_has_the_point_shape_and_shares_one_prefix():
    g = group(Point(candidates=8, history_tokens=100))
    assert len(g.prefix_ids) == 100
    assert g.num_candidates == 8
    assert all(len(s) == 24 for s in g.suffix_ids)
    assert g.label_ids == (5, 9)
    assert all(g.prompt_ids(i)[:100] == g.prefix_ids for i in range(8))
    assert len(set(g.suffix_ids)) == 8  # candidates differ
    ids = set(g.prefix_ids).union(*g.suffix_ids)
    assert min(ids) >= FIRST_ID and max(ids) < 764


def test_every_call_gets_a_fresh_prefix_and_every_engine_the_same_groups():
    point = Point(4, 64)
    prefixes = {group(point, call=c).prefix_ids for c in range(6)}
    assert len(prefixes) == 6  # no call can reuse another call's cached prefix
    assert group(point, call=3) == group(point, call=3)  # reproducible across engines and runs
    assert group(point, call=3, seed=1) != group(point, call=3)
    # Points that share a history length still get different prefixes.
    assert group(Point(8, 64), call=1).prefix_ids != group(point, call=1).prefix_ids


def test_labels_are_two_distinct_ordinary_tokens():
    first, second = label_ids_for(764, seed=0)
    assert first != second and min(first, second) >= FIRST_ID and max(first, second) < 764
    assert label_ids_for(764, seed=0) == (first, second)


def test_sweeps_measure_a_shared_point_once():
    sweeps = Sweeps(candidates=(1, 32, 4), history=(512, 64), fixed_history=512, fixed_candidates=32)
    assert sweeps.candidates_points() == [Point(1, 512), Point(4, 512), Point(32, 512)]
    assert sweeps.history_points() == [Point(32, 64), Point(32, 512)]
    assert sorted(sweeps.points()) == sorted({Point(1, 512), Point(4, 512), Point(32, 512), Point(32, 64)})
    assert sweeps.longest_history == 512
    with pytest.raises(ValueError):
        Sweeps(candidates=(0,))


def test_checkpoint_positions_hold_the_longest_prompt():
    assert checkpoint_positions(100) == 1024
    assert checkpoint_positions(1024) == 1024
    assert checkpoint_positions(4096 + 24) == 8192


def test_token_cap_skips_only_that_engine_above_it():
    settings = Settings(Sweeps(), token_caps={"naive": 1000})
    assert settings.skip_reason("naive", Point(10, 76)) is None  # 10 x (76 + 24) = 1000
    assert settings.skip_reason("naive", Point(10, 77)) == "1010 prompt tokens > cap 1000"
    assert settings.skip_reason("torch", Point(256, 4096)) is None


def test_parse_caps():
    assert parse_caps("torch=5000") == {"naive": 40_000, "torch": 5000}
    assert parse_caps("naive=0") == {}
    with pytest.raises(argparse.ArgumentTypeError):
        parse_caps("gpt=5")


def test_parser_defaults_are_the_documented_sweeps():
    args = build_parser().parse_args(["--out", "x"])
    assert args.candidates == (1, 4, 16, 64, 256)
    assert args.history_tokens == (64, 256, 1024, 4096)
    assert args.engines == ("vllm", "torch", "naive")
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--out", "x", "--engines", "tgi"])


def result(engine: str, point: Point, seconds: tuple[float, ...] = (), skipped: str | None = None,
           cached: float | None = 0.0) -> PointResult:
    needed, naive = point_flops(SHAPE, point, 24)
    return PointResult(engine, point, needed, naive, 1e9, seconds, cached, skipped)


def test_point_result_rates():
    r = result("torch", Point(8, 64), seconds=(0.4, 0.2, 0.3))
    assert r.median_s == 0.3
    assert r.s_per_candidate == pytest.approx(0.0375)
    assert r.candidates_per_s == pytest.approx(8 / 0.3)
    assert r.flop_share == pytest.approx(r.needed_flops / 0.3 / 1e9)
    assert r.to_json()["flop_share"] == r.flop_share
    skipped = result("naive", Point(8, 64), skipped="too big")
    assert skipped.median_s is None and skipped.flop_share is None
    assert skipped.to_json()["skipped"] == "too big"


def test_table_rows_speedup_and_skips():
    small, big = Point(8, 64), Point(256, 4096)
    results = [
        result("naive", small, seconds=(0.8,)),
        result("torch", small, seconds=(0.2,), cached=0.5),
        result("naive", big, skipped="cap"),
        result("torch", big, seconds=(2.0,)),
    ]
    table = format_table(results, [small, big]).splitlines()
    assert table[0].startswith("| engine | candidates | history |")
    assert len(table) == 2 + 4
    # engines in a fixed order within each point: torch before naive
    assert table[2].startswith("| torch | 8 | 64 | 200.0 | 25.00 | 40.0 |")
    assert "| 50% | 4.0x |" in table[2]
    assert table[3].startswith("| naive | 8 | 64 | 800.0 |") and "| 1.0x |" in table[3]
    assert table[5].startswith("| naive | 256 | 4096 | skipped |")
    assert "| — |" in table[4]  # no naive time to compare with


def test_report_has_both_sweeps():
    sweeps = Sweeps(candidates=(1,), history=(64,), fixed_history=64, fixed_candidates=1)
    report = format_report([result("torch", Point(1, 64), seconds=(0.1,))], sweeps,
                           engine_threads={"vllm": 1, "torch": 2}, peaks={1: 1e9, 2: 2e9})
    assert "- vllm: 1 thread(s), fp32 matmul 1.0 GFLOP/s" in report
    assert "- torch: 2 thread(s), fp32 matmul 2.0 GFLOP/s" in report
    assert "### Candidates per group (history 64 tokens)" in report
    assert "### History tokens (1 candidates)" in report
    assert report.count("| torch | 1 | 64 |") == 2


@pytest.mark.parametrize(("environ", "cpus", "threads"), [
    ({}, 2, 1),  # auto: all cores but one reserved for vLLM's scheduler
    ({}, 16, 15),
    ({"VLLM_CPU_NUM_OF_RESERVED_CPU": "0"}, 2, 2),
    ({"VLLM_CPU_OMP_THREADS_BIND": "nobind"}, 2, 2),
    ({"VLLM_CPU_OMP_THREADS_BIND": "0"}, 2, 1),
    ({"VLLM_CPU_OMP_THREADS_BIND": "0-3,6"}, 8, 5),
    ({"VLLM_CPU_OMP_THREADS_BIND": "0-1|2-3"}, 4, 2),  # first tensor-parallel rank
])
def test_vllm_cpu_threads(environ, cpus, threads):
    assert vllm_cpu_threads(environ, cpus) == threads


def test_plots_are_written_with_skipped_points(tmp_path):
    sweeps = Sweeps(candidates=(1, 8), history=(64, 256), fixed_history=64, fixed_candidates=8)
    results = [result("torch", p, seconds=(0.01 * p.candidates,)) for p in sweeps.points()]
    results += [result("naive", p, skipped="cap") for p in sweeps.points()]
    paths = plot_scaling(results, sweeps, tmp_path)
    assert [p.name for p in paths] == ["cost_vs_candidates.png", "cost_vs_history.png"]
    assert all(p.read_bytes().startswith(b"\x89PNG") for p in paths)
