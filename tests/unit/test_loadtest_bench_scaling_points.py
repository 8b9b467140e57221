"""What the scaling benchmark measures: points, sweeps, caps and the groups
scored at each call. No model is loaded."""

from __future__ import annotations

import pytest

from loadtest.bench.scaling.points import (
    FIRST_ID, ScalingPoint, ScalingSettings, ScalingSweeps, label_ids_for, make_group,
)


def group(point: ScalingPoint, call: int = 1, seed: int = 0):
    return make_group(point, vocab_size=764, suffix_tokens=24, label_ids=(5, 9), seed=seed, call=call)


def test_group_has_the_point_shape_and_shares_one_prefix():
    g = group(ScalingPoint(candidates=8, history_tokens=100))
    assert len(g.prefix_ids) == 100
    assert g.num_candidates == 8
    assert all(len(s) == 24 for s in g.suffix_ids)
    assert g.label_ids == (5, 9)
    assert all(g.prompt_ids(i)[:100] == g.prefix_ids for i in range(8))
    assert len(set(g.suffix_ids)) == 8  # candidates differ
    ids = set(g.prefix_ids).union(*g.suffix_ids)
    assert min(ids) >= FIRST_ID and max(ids) < 764


def test_every_call_gets_a_fresh_prefix_and_every_engine_the_same_groups():
    point = ScalingPoint(4, 64)
    prefixes = {group(point, call=c).prefix_ids for c in range(6)}
    assert len(prefixes) == 6  # no call can reuse another call's cached prefix
    assert group(point, call=3) == group(point, call=3)  # reproducible across engines and runs
    assert group(point, call=3, seed=1) != group(point, call=3)
    # Points that share a history length still get different prefixes.
    assert group(ScalingPoint(8, 64), call=1).prefix_ids != group(point, call=1).prefix_ids


def test_labels_are_two_distinct_ordinary_tokens():
    first, second = label_ids_for(764, seed=0)
    assert first != second and min(first, second) >= FIRST_ID and max(first, second) < 764
    assert label_ids_for(764, seed=0) == (first, second)


def test_sweeps_measure_a_shared_point_once():
    sweeps = ScalingSweeps(candidates=(1, 32, 4), history=(512, 64), fixed_history=512, fixed_candidates=32)
    assert sweeps.candidates_points() == [ScalingPoint(1, 512), ScalingPoint(4, 512), ScalingPoint(32, 512)]
    assert sweeps.history_points() == [ScalingPoint(32, 64), ScalingPoint(32, 512)]
    assert sorted(sweeps.points()) == sorted({
        ScalingPoint(1, 512), ScalingPoint(4, 512), ScalingPoint(32, 512), ScalingPoint(32, 64),
    })
    assert sweeps.longest_history == 512
    with pytest.raises(ValueError):
        ScalingSweeps(candidates=(0,))


def test_token_cap_skips_only_that_engine_above_it():
    settings = ScalingSettings(ScalingSweeps(), token_caps={"naive": 1000})
    assert settings.skip_reason("naive", ScalingPoint(10, 76)) is None  # 10 x (76 + 24) = 1000
    assert settings.skip_reason("naive", ScalingPoint(10, 77)) == "1010 prompt tokens > cap 1000"
    assert settings.skip_reason("torch", ScalingPoint(256, 4096)) is None
