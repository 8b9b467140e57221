"""FLOP counts against values counted by hand on a tiny decoder."""

from __future__ import annotations

import json

import pytest
import torch

from brew import defaults
from loadtest.bench.flops import (
    DecoderShape, attended_keys, forward_flops, measure_matmul_flops, naive_group_flops, shared_group_flops,
)

# hidden 2, MLP 3, one layer, one head of dim 2, vocab 5. Per token and layer:
# q, k, v, o are 2x2 (4 weights each, 16), gate/up/down 2x3 (18): 34 weights.
# LM head 2x5: 10 weights. Attention: 4 * 1 head * dim 2 * 1 layer = 8 FLOPs per key.
TINY = DecoderShape(hidden_size=2, intermediate_size=3, layers=1, heads=1, kv_heads=1, head_dim=2,
                    vocab_size=5)


def test_tiny_shape_counts_by_hand():
    assert TINY.layer_matmul_params == 34
    assert TINY.lm_head_params == 10
    assert TINY.attention_flops_per_key == 8


def test_attended_keys_under_the_causal_mask():
    assert attended_keys(3) == 1 + 2 + 3
    # two new tokens at positions 5 and 6 after 4 cached ones: 5 + 6 keys
    assert attended_keys(2, cached_tokens=4) == 11
    assert attended_keys(0, cached_tokens=100) == 0
    with pytest.raises(ValueError):
        attended_keys(-1)


def test_forward_flops_by_hand():
    # 3 tokens: 2*34*3 weights + 2*10*3 logits + 8*6 attention
    assert forward_flops(TINY, 3) == 204 + 60 + 48
    # 2 tokens after 4 cached, logits at the last one: 2*34*2 + 2*10 + 8*11
    assert forward_flops(TINY, 2, cached_tokens=4, logit_tokens=1) == 136 + 20 + 88
    with pytest.raises(ValueError):
        forward_flops(TINY, 2, logit_tokens=3)


def test_group_flops_by_hand():
    # prefix of 4 once, no logits: 2*34*4 + 8*10 = 352; two suffixes of 2 over it: 2 * 244
    assert shared_group_flops(TINY, 4, [2, 2]) == 352 + 2 * 244
    # each candidate's 6 tokens from scratch, logits at the last: 2*34*6 + 20 + 8*21 = 596
    assert naive_group_flops(TINY, 4, [2, 2]) == 2 * 596


def test_one_candidate_costs_the_same_either_way_up_to_the_prefix_logits():
    # Sharing a prefix with nobody saves nothing: same tokens, same keys, one row of logits.
    assert shared_group_flops(TINY, 7, [3]) == naive_group_flops(TINY, 7, [3])


@pytest.mark.parametrize(("prefix", "suffix", "candidates"), [(64, 24, 4), (512, 24, 32), (4096, 24, 256)])
def test_sharing_saves_and_saves_more_with_more_candidates(prefix, suffix, candidates):
    shape = DecoderShape.from_config(json.loads((defaults.DEMO_MODEL_DIR / "config.json").read_text()))
    fewer = naive_group_flops(shape, prefix, [suffix] * 2) / shared_group_flops(shape, prefix, [suffix] * 2)
    more = (naive_group_flops(shape, prefix, [suffix] * candidates)
            / shared_group_flops(shape, prefix, [suffix] * candidates))
    assert 1 < fewer < more
    # Attention makes the saving smaller than the token ratio, never larger.
    assert more < (prefix + suffix) / suffix


def test_saving_approaches_the_token_ratio_when_attention_is_negligible():
    # A wide model on a short context: weights dominate, so per candidate the
    # naive engine does (p+s)/s times the shared one's work.
    wide = DecoderShape(hidden_size=8192, intermediate_size=28672, layers=2, heads=64, kv_heads=8,
                        head_dim=128, vocab_size=32)
    prefix, suffix, candidates = 48, 16, 100_000
    ratio = naive_group_flops(wide, prefix, [suffix] * candidates) / shared_group_flops(
        wide, prefix, [suffix] * candidates)
    assert ratio == pytest.approx((prefix + suffix) / suffix, rel=0.01)


def test_from_config_matches_the_real_model_weights():
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=50, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, head_dim=16, tie_word_embeddings=True)
    shape = DecoderShape.from_config(config)
    model = LlamaForCausalLM(config)
    linear = sum(m.weight.numel() for m in model.model.layers.modules() if isinstance(m, torch.nn.Linear))
    assert shape.layers * shape.layer_matmul_params == linear
    assert shape.lm_head_params == model.lm_head.weight.numel()
    assert DecoderShape.from_config(config.to_dict()) == shape


def test_measure_matmul_flops_is_positive_and_restores_threads():
    before = torch.get_num_threads()
    rate = measure_matmul_flops(threads=1, size=64, seconds=0.05, repeats=3)
    assert rate > 1e6
    assert torch.get_num_threads() == before
    with pytest.raises(ValueError):
        measure_matmul_flops(threads=0)
