"""A scaling result's rates and shares from its timed calls."""

from __future__ import annotations

import pytest
from scaling_samples import result

from loadtest.bench.scaling.points import ScalingPoint


def test_point_result_rates():
    r = result("torch", ScalingPoint(8, 64), seconds=(0.4, 0.2, 0.3))
    assert r.median_s == 0.3
    assert r.s_per_candidate == pytest.approx(0.0375)
    assert r.candidates_per_s == pytest.approx(8 / 0.3)
    assert r.flop_share == pytest.approx(r.needed_flops / 0.3 / 1e9)
    assert r.to_json()["flop_share"] == r.flop_share
    assert r.own_cpu_s_per_candidate is None and r.children_cpu_s_per_candidate is None  # not measured
    skipped = result("naive", ScalingPoint(8, 64), skipped="too big")
    assert skipped.median_s is None and skipped.flop_share is None
    assert skipped.to_json()["skipped"] == "too big"


def test_cpu_per_candidate_of_the_process_and_its_children():
    cpu = {"this process": 0.48, "VLLM::EngineCore": 0.16, "VLLM::Worker_TP0": 0.8}
    r = result("vllm", ScalingPoint(8, 64), seconds=(0.1, 0.1, 0.1), cpu_s=cpu)  # 24 candidates timed
    assert r.own_cpu_s_per_candidate == pytest.approx(0.02)
    assert r.children_cpu_s_per_candidate == pytest.approx(0.04)
    assert r.to_json()["cpu_s"] == cpu
    torch = result("torch", ScalingPoint(8, 64), seconds=(0.1,), cpu_s={"this process": 0.8})
    assert torch.children_cpu_s_per_candidate == 0.0
