"""Brew's side of multi-item scoring on vLLM: engine settings, runs of candidates, results.

Imports vLLM's parameter classes only; no engine is started.
"""

from __future__ import annotations

import json

import pytest
import torch

from brew.engines.vllm_multi_item.layout import pack, packed_len, parse
from brew.engines.vllm_multi_item.names import LABEL_IDS_KEY, POOLING_TASK
from brew.engines.vllm_multi_item.requests import (
    OVERHEAD_TOKENS,
    candidate_results,
    engine_overrides,
    packed_prompt,
    packs_fast_here,
    plain_prompt,
    pooling_params,
    split_candidates,
)
from brew.types import ScoringGroup


def checkpoint(tmp_path, **config):
    (tmp_path / "config.json").write_text(json.dumps(config))
    return tmp_path


def test_a_llama_checkpoint_runs_as_the_multi_item_pooling_model(tmp_path):
    overrides = engine_overrides(checkpoint(tmp_path, architectures=["LlamaForCausalLM"], vocab_size=785))
    assert overrides["runner"] == "pooling"
    assert overrides["hf_overrides"]["architectures"] == ["BrewMultiItemLlamaForCausalLM"]
    assert len(overrides["hf_overrides"]["mrope_section"]) == 3  # the three rows of layout_rows


@pytest.mark.parametrize("config,message", [
    ({"architectures": ["GPT2LMHeadModel"], "vocab_size": 50257}, "supports architectures"),
    ({"vocab_size": 50257}, "unnamed"),
    ({"architectures": ["Qwen3ForCausalLM"], "vocab_size": 100}, "at least 256"),
])
def test_checkpoints_it_cannot_run_are_refused_with_the_reason(tmp_path, config, message):
    with pytest.raises(ValueError, match=message):
        engine_overrides(checkpoint(tmp_path, **config))


def test_pooling_params_read_the_prefix_cache_and_carry_the_label_ids():
    params = pooling_params((7, 9))
    assert params.task == POOLING_TASK and params.skip_reading_prefix_cache is False
    assert params.extra_kwargs == {LABEL_IDS_KEY: [7, 9]}
    assert pooling_params((7, 9)) is params  # one per label set


def group(prefix_len: int, lengths: list[int]) -> ScoringGroup:
    return ScoringGroup(tuple(range(3, 3 + prefix_len)), tuple(tuple([5] * n) for n in lengths), (10, 11))


def test_candidates_are_split_into_runs_that_fit_and_keep_their_order():
    scored = group(100, [20, 0, 30, 25, 1, 40])
    limit = packed_len(100, [20, 0, 30])  # exactly the first three
    runs = split_candidates(scored, limit)
    assert [list(r) for r in runs] == [[0, 1, 2], [3, 4], [5]]
    for run in runs:
        ids = packed_prompt(scored, run)
        assert len(ids) <= limit and parse(ids).candidate_lengths == tuple(len(scored.suffix_ids[i]) for i in run)
    # One candidate that fits the model as a plain prompt always fits packed.
    lone = group(100, [50])
    assert packed_len(100, [50]) <= 150 + OVERHEAD_TOKENS
    assert [list(r) for r in split_candidates(lone, 150 + OVERHEAD_TOKENS)] == [[0]]


def test_results_count_the_prefix_as_cached_after_a_runs_first_candidate():
    scored = group(40, [3, 4, 5])
    results = candidate_results(scored, range(1, 3), torch.tensor([[-1.0, -2.0], [-3.0, -4.0]]), cached_tokens=32)
    assert [r.label_logprobs for r in results] == [(-1.0, -2.0), (-3.0, -4.0)]
    assert [r.prompt_tokens for r in results] == [44, 45]
    assert [r.cached_tokens for r in results] == [32, 40]
    with pytest.raises(RuntimeError, match="shape"):
        candidate_results(scored, range(3), torch.zeros(2, 2), cached_tokens=0)


def test_a_per_candidate_request_is_the_plain_prompt():
    group = ScoringGroup((5, 6, 7), ((8, 9), ()), (1, 2))
    assert plain_prompt(group, 0) == [5, 6, 7, 8, 9]
    assert plain_prompt(group, 1) == [5, 6, 7]


@pytest.mark.parametrize("split", [0, 3, 20])
def test_a_plain_prompt_that_spells_a_layout_goes_packed_as_itself(split):
    """The worker reads a layout from ids alone: a plain prompt that spells
    one is sent as the packed prompt of its one candidate instead."""
    ids = pack([40, 41, 42, 43, 44], [[50, 51], [52]])
    group = ScoringGroup(tuple(ids[:split]), (tuple(ids[split:]),), (1,))
    prompt = plain_prompt(group, 0)
    layout = parse(prompt)
    prefix_len = max(split, 1)
    assert prompt[:prefix_len] == ids[:prefix_len]
    assert layout.prefix_len == prefix_len and layout.candidate_lengths == (len(ids) - prefix_len,)
    start = layout.candidate_starts[0]
    assert prompt[start:start + len(ids) - prefix_len] == ids[prefix_len:]


@pytest.mark.parametrize("config,fast", [
    ({"architectures": ["LlamaForCausalLM"], "vocab_size": 785, "hidden_size": 128, "num_attention_heads": 2}, True),
    ({"architectures": ["LlamaForCausalLM"], "vocab_size": 785, "hidden_size": 60, "num_attention_heads": 2}, False),
    ({"architectures": ["GPT2LMHeadModel"], "vocab_size": 785, "hidden_size": 128, "num_attention_heads": 2}, False),
    ({"architectures": ["LlamaForCausalLM"], "vocab_size": 100, "hidden_size": 128, "num_attention_heads": 2}, False),
])
def test_auto_runs_the_pooling_model_only_where_it_packs_fast(tmp_path, config, fast):
    """vLLM's CPU kernel (this build) takes head size 64, not 30; the pooling
    model wraps Llama and needs a vocabulary that spells layouts."""
    assert packs_fast_here(checkpoint(tmp_path, **config)) is fast
