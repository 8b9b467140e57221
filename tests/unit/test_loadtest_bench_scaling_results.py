"""A scaling result's rates and shares from its timed calls."""

from __future__ import annotations

import pytest
from scaling_samples import result

from loadtest.bench.scaling_points import ScalingPoint


def test_point_result_rates():
    r = result("torch", ScalingPoint(8, 64), seconds=(0.4, 0.2, 0.3))
    assert r.median_s == 0.3
    assert r.s_per_candidate == pytest.approx(0.0375)
    assert r.candidates_per_s == pytest.approx(8 / 0.3)
    assert r.flop_share == pytest.approx(r.needed_flops / 0.3 / 1e9)
    assert r.to_json()["flop_share"] == r.flop_share
    skipped = result("naive", ScalingPoint(8, 64), skipped="too big")
    assert skipped.median_s is None and skipped.flop_share is None
    assert skipped.to_json()["skipped"] == "too big"
