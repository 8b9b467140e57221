"""Quantized demo models on the torch engines (no vLLM here: the vLLM side
is tests/e2e/test_quantized_serving.py): what `brew quantize` writes, that
smoothing leaves the model's function unchanged, that the LM head stays a
plain fp32 layer, and that quantized scores stay close to fp32's.

SCORE_BOUND is the largest |dp| (the positive label's probability) allowed
against fp32 on the demo's example requests; `brew eval --compare` measured
at most 0.010 over 3,000 held-out candidates per variant (docs/quantization.md).
"""

from __future__ import annotations

import json

import pytest
import pytest_asyncio
import torch
from safetensors import safe_open
from transformers import AutoModelForCausalLM

from brew import defaults
from brew.demo.evaluate import heldout_groups, heldout_scores
from brew.engines import EngineKind, create_engine
from brew.quantization.calibration import calibration_prompts
from brew.quantization.checkpoint import PROVENANCE_FILE, quantize_checkpoint, weight_bytes
from brew.quantization.schemes import CheckpointScheme
from brew.quantization.smoothing import smooth
from brew.runtime import build_ranker

pytestmark = [pytest.mark.integration]

SCORE_BOUND = 0.03
PARITY_TOLERANCE = 1e-4
# Between two engines that both round activations to int8 at run time: their
# fp32 computations differ by ~1e-6 (batching, a cached prefix), and a value
# that falls on a rounding edge moves by one int8 step (measured 1.0e-3).
ROUNDED_ACTIVATIONS_TOLERANCE = 5e-3
TASK = "job_apply"


@pytest.fixture(scope="module")
def quantized_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("quantized") / "demo-int8"
    quantize_checkpoint(defaults.DEMO_MODEL_DIR, out, CheckpointScheme.INT8_W8A8, defaults.PROMPTS_DIR,
                        log=lambda line: None)
    return out


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def fp32_ranker():
    ranker = await build_ranker(defaults.DEMO_MODEL_DIR, defaults.PROMPTS_DIR, EngineKind.NAIVE)
    yield ranker
    await ranker.engine.close()


@pytest.fixture(scope="module")
def groups(fp32_ranker):
    return heldout_groups(fp32_ranker.verbalizer, TASK, members=30, candidates=8)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def fp32_scores(fp32_ranker, groups):
    return await heldout_scores(fp32_ranker.engine, groups)


def max_abs_dp(a: list[list[float]], b: list[list[float]]) -> float:
    return max(abs(x - y) for ga, gb in zip(a, b, strict=True) for x, y in zip(ga, gb, strict=True))


def test_the_checkpoint_is_compressed_tensors_int8_with_the_head_left_out(quantized_dir):
    config = json.loads((quantized_dir / "config.json").read_text())["quantization_config"]
    assert config["quant_method"] == "compressed-tensors" and config["format"] == "int-quantized"
    assert config["ignore"] == ["lm_head"]
    group = config["config_groups"]["group_0"]
    assert (group["weights"]["num_bits"], group["weights"]["strategy"], group["weights"]["symmetric"]) == (
        8, "channel", True)
    assert (group["input_activations"]["strategy"], group["input_activations"]["dynamic"]) == ("token", True)
    with safe_open(str(quantized_dir / "model.safetensors"), "pt") as weights:
        names = set(weights.keys())
        assert weights.get_tensor("model.layers.0.self_attn.q_proj.weight").dtype == torch.int8
        assert weights.get_tensor("model.layers.0.mlp.down_proj.weight_scale").shape[-1] == 1  # per channel
        assert weights.get_tensor("model.embed_tokens.weight").dtype == torch.float32  # the tied head's rows
    assert not any(name.startswith("lm_head") and name.endswith("_scale") for name in names)
    provenance = json.loads((quantized_dir / PROVENANCE_FILE).read_text())
    assert provenance["scheme"] == "int8-w8a8" and provenance["calibration_prompts"] > 0
    # The demo's embeddings (the tied head) stay fp32 and are a third of it: 34% here, ~26% for larger shapes.
    assert weight_bytes(quantized_dir) < 0.4 * weight_bytes(defaults.DEMO_MODEL_DIR)


def test_calibration_prompts_are_the_examples_as_served():
    prompts = calibration_prompts(defaults.DEMO_MODEL_DIR, defaults.PROMPTS_DIR)
    assert len(prompts) >= 4 and all(prompt[0] == 1 for prompt in prompts)  # each starts with <s>


@torch.inference_mode()
def test_smoothing_leaves_the_function_unchanged():
    model = AutoModelForCausalLM.from_pretrained(str(defaults.DEMO_MODEL_DIR), dtype=torch.float32).eval()
    prompts = calibration_prompts(defaults.DEMO_MODEL_DIR, defaults.PROMPTS_DIR)[:3]
    ids = torch.tensor([list(prompts[0])])
    before = model(input_ids=ids).logits.log_softmax(-1)
    changed = list(smooth(model, prompts))
    after = model(input_ids=ids).logits.log_softmax(-1)
    assert len(changed) == 2 * model.config.num_hidden_layers
    assert (before - after).abs().max().item() < PARITY_TOLERANCE


@pytest.mark.asyncio(loop_scope="module")
async def test_torch_engine_on_the_checkpoint_stays_close_to_fp32(quantized_dir, groups, fp32_scores):
    engine = await create_engine(EngineKind.TORCH, quantized_dir)
    try:
        scores = await heldout_scores(engine, groups)
    finally:
        await engine.close()
    assert 0 < max_abs_dp(scores, fp32_scores) < SCORE_BOUND  # quantized (not fp32), and close


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize(("scheme", "parity"), [("int8-weight", PARITY_TOLERANCE),
                                                ("int8-dynamic", ROUNDED_ACTIVATIONS_TOLERANCE)])
async def test_quantized_at_load_the_head_stays_fp32_and_scores_stay_close(scheme, parity, groups, fp32_scores):
    engine = await create_engine(EngineKind.TORCH, defaults.DEMO_MODEL_DIR, quantization=scheme)
    naive = await create_engine(EngineKind.NAIVE, defaults.DEMO_MODEL_DIR, quantization=scheme)
    try:
        model = engine._model
        assert type(model.lm_head.weight) is torch.nn.Parameter and model.lm_head.weight.dtype == torch.float32
        assert type(model.model.layers[0].mlp.up_proj.weight).__name__ == "Int8Tensor"
        scores = await heldout_scores(engine, groups)
        naive_scores = await heldout_scores(naive, groups)
    finally:
        await engine.close()
        await naive.close()
    assert 0 < max_abs_dp(scores, fp32_scores) < SCORE_BOUND
    # The torch engine's batching and packing still give the naive engine's scores, quantized alike.
    assert max_abs_dp(scores, naive_scores) < parity


def test_eval_compare_prints_one_table_per_task_against_fp32(quantized_dir, capsys):
    from brew.cli import main

    assert main(["eval", "--engine", "torch", "--compare", "int8-w8a8,int8-weight", "--quantized-model",
                 str(quantized_dir), "--task", TASK, "--members", "6", "--candidates", "4", "--json"]) == 0
    tables = json.loads(capsys.readouterr().out)
    assert list(tables) == [TASK]
    rows = {row["variant"]: row for row in tables[TASK]}
    assert list(rows) == ["fp32", "int8-w8a8", "int8-weight"]
    assert rows["fp32"]["max_abs_dp"] == 0 and rows["fp32"]["median_tau"] == 1
    assert 0 < rows["int8-w8a8"]["max_abs_dp"] < SCORE_BOUND
    assert rows["int8-w8a8"]["auc"] == pytest.approx(rows["fp32"]["auc"], abs=0.05)
