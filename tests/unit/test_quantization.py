"""Quantization without a model: which scheme runs where and why not, the
filter that keeps the LM head out, SmoothQuant's scales, and the maths of
`brew eval --compare` (Kendall tau, |dp|, the variants)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from brew.cli import main
from brew.demo.compare import BASELINE, median_kendall_tau, parse_variants, variant_row
from brew.engines.quantization import keeps_head
from brew.quantization.schemes import CheckpointScheme, LoadScheme, checkpoint_scheme, load_scheme_problems
from brew.quantization.smoothing import smoothing_scales
from serving.config import ConfigError, load_config


def test_brew_quantize_knows_int8_w8a8():
    assert checkpoint_scheme("int8-w8a8") is CheckpointScheme.INT8_W8A8


@pytest.mark.parametrize("name", ["fp8", "int4-awq", ""])
def test_an_unknown_scheme_names_the_supported_ones(name):
    with pytest.raises(ValueError, match="brew quantize writes int8-w8a8"):
        checkpoint_scheme(name)


def test_fp8_is_refused_with_the_reason():
    with pytest.raises(ValueError, match="NVIDIA GPUs only"):
        checkpoint_scheme("fp8")


def test_brew_quantize_exits_2_on_an_unknown_scheme(tmp_path, capsys):
    assert main(["quantize", "--out", str(tmp_path / "out"), "--scheme", "fp8"]) == 2
    error = capsys.readouterr().err
    assert "brew quantize writes int8-w8a8" in error and "NVIDIA GPUs only" in error
    assert not (tmp_path / "out").exists()


def test_brew_quantize_refuses_a_non_empty_out(tmp_path, capsys):
    (tmp_path / "taken").write_text("x")
    assert main(["quantize", "--out", str(tmp_path), "--scheme", "int8-w8a8"]) == 2
    assert "is not empty" in capsys.readouterr().err


@pytest.mark.parametrize(("engine", "scheme", "device"), [
    ("torch", LoadScheme.INT8_WEIGHT, "cpu"), ("torch", LoadScheme.INT8_DYNAMIC, "cpu"),
    ("naive", LoadScheme.INT8_DYNAMIC, "cpu"), ("torch", LoadScheme.FP8, "cuda:0"), ("vllm", LoadScheme.FP8, "cpu"),
    ("vllm", None, "cpu"),
])
def test_supported_load_schemes(engine, scheme, device):
    """vLLM's fp8 passes here: vLLM picks its own device, checked when it starts."""
    assert list(load_scheme_problems(engine, scheme, device)) == []


def test_vllm_does_not_quantize_to_int8_at_load_and_says_how_to_get_int8():
    [problem] = load_scheme_problems("vllm", LoadScheme.INT8_DYNAMIC, "cpu")
    assert "engine vllm quantizes at load to fp8" in problem
    assert "brew quantize --scheme int8-w8a8" in problem


def test_fp8_on_a_cpu_device_is_refused():
    [problem] = load_scheme_problems("torch", LoadScheme.FP8, "cpu")
    assert "quantization fp8 on device cpu" in problem and "NVIDIA GPUs only" in problem


def test_the_settings_refuse_what_the_engine_cannot_run():
    with pytest.raises(ConfigError, match="engine vllm quantizes at load to fp8"):
        load_config(None, engine="vllm", quantization="int8-weight")
    with pytest.raises(ConfigError, match="quantization must be one of"):
        load_config(None, engine="torch", quantization="int4")
    assert load_config(None, engine="torch", quantization="int8-dynamic").engine_options()["quantization"] == (
        "int8-dynamic")


def test_the_filter_leaves_the_lm_head_out():
    linear = nn.Linear(4, 4)
    assert keeps_head(linear, "model.layers.0.mlp.up_proj")
    assert keeps_head(linear, "model.layers.3.self_attn.q_proj")
    assert not keeps_head(linear, "lm_head")
    assert not keeps_head(linear, "language_model.lm_head")
    assert not keeps_head(nn.Embedding(4, 4), "model.embed_tokens")


def test_smoothing_scales_follow_smoothquants_formula():
    activation = torch.tensor([4.0, 1.0, 9.0])
    weight = torch.tensor([1.0, 4.0, 1.0])
    scales = smoothing_scales(activation, weight, alpha=0.5)
    assert torch.allclose(scales, torch.tensor([2.0, 0.5, 3.0]))
    assert torch.allclose(smoothing_scales(activation, weight, alpha=0.0), 1 / weight)


def test_smoothing_scales_of_a_channel_never_seen_stay_finite():
    scales = smoothing_scales(torch.tensor([0.0, 2.0]), torch.tensor([0.0, 1.0]), alpha=0.5)
    assert torch.isfinite(scales).all() and (scales > 0).all()


@pytest.mark.parametrize(("other", "tau"), [
    ([0.1, 0.2, 0.3, 0.4], 1.0),
    ([0.4, 0.3, 0.2, 0.1], -1.0),
    ([0.2, 0.1, 0.3, 0.4], 2 / 3),  # one discordant pair of six
])
def test_kendall_tau_of_one_member(other, tau):
    assert median_kendall_tau([[0.1, 0.2, 0.3, 0.4]], [other]) == pytest.approx(tau)


def test_the_median_is_over_members_and_all_tied_members_agree():
    baseline = [[1, 2, 3], [1, 2, 3], [1, 2, 3], [0.5, 0.5, 0.5]]
    other = [[1, 2, 3], [3, 2, 1], [1, 2, 3], [0.5, 0.5, 0.5]]
    assert median_kendall_tau(baseline, other) == 1.0
    assert median_kendall_tau([[0.5, 0.5]], [[0.1, 0.2]]) == 0.0
    assert median_kendall_tau([[0.3]], [[0.7]]) == 1.0


def test_a_variant_row_sets_scores_against_fp32():
    row = variant_row("int8-w8a8", auc=0.80, lift_share=0.9, baseline_auc=0.801,
                      baseline=[[0.1, 0.5], [0.3, 0.2]], scores=[[0.1, 0.6], [0.3, 0.2]])
    assert row.auc_drop == pytest.approx(0.001)
    assert row.max_abs_dp == pytest.approx(0.1)
    assert row.mean_abs_dp == pytest.approx(0.025)
    assert row.median_tau == 1.0 and row.meets_goals
    assert not variant_row("x", 0.79, 0.9, 0.801, [[0.1, 0.5]], [[0.1, 0.5]]).meets_goals


def test_variants_start_with_fp32_and_unknown_ones_are_named():
    names = [v.name for v in parse_variants("int8-w8a8,bf16,int8-w8a8")]
    assert names == [BASELINE, "int8-w8a8", "bf16"]
    assert parse_variants("bf16")[1].dtype == "bfloat16"
    assert parse_variants("int8-dynamic")[1].quantization == "int8-dynamic"
    with pytest.raises(ValueError, match="choose from fp32, bf16, int8-w8a8"):
        parse_variants("fp32,int4")
    assert not math.isnan(median_kendall_tau([[1.0, 2.0]], [[1.0, 2.0]]))
