"""Packed multi-item scoring computes the same function as plain forward passes.

The reference is `last_position_label_logprobs` (one plain forward pass per
prompt). Packed scores must match it within PARITY_TOLERANCE in fp32 on
tiny random Llama, Qwen2 and Qwen3 models (RoPE, grouped-query attention)
and on the bundled demo model: groups of different prefix and suffix
lengths, empty suffixes, several groups per pass, budgets that force several
passes, and a prompt longer than the budget.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from types import SimpleNamespace

import pytest
import torch
from tiny_model import MODEL_TYPES, VOCAB_SIZE, build_tiny_causal_lm
from torch.nn.attention.flex_attention import create_mask
from transformers import AutoModelForCausalLM

from brew import defaults
from brew.demo.evaluate import heldout_groups
from brew.engines.loading import load_causal_lm
from brew.engines.torch_multi_item import AttentionKernel, attention_kernel, flex_mask_mod, score_groups_packed
from brew.engines.naive import last_position_label_logprobs
from brew.engines.packing import plan_passes
from brew.tasks import load_tasks
from brew.tokenization import PromptTokenizer
from brew.types import GroupResult, ScoringGroup
from brew.verbalize import Verbalizer
from brew.wire import parse_request_json, request_from_proto

pytestmark = pytest.mark.integration

PARITY_TOLERANCE = 1e-4
FIRST_REAL_ID = 3  # ids 0-2 are <s>, </s>, <pad>
ONE_PASS_BUDGET = 4096  # everything below fits one pass
SMALL_BUDGET = 160  # several passes; the 200-token prefix plus a candidate is over it


def hand_made_groups(seed: int = 0) -> list[ScoringGroup]:
    rng = random.Random(seed)

    def ids(length: int) -> tuple[int, ...]:
        return tuple(rng.randrange(FIRST_REAL_ID, VOCAB_SIZE) for _ in range(length))

    def labels(count: int) -> tuple[int, ...]:
        return tuple(rng.sample(range(FIRST_REAL_ID, VOCAB_SIZE), count))

    return [
        ScoringGroup(ids(20), (ids(3), ids(1), ids(30)), labels(2)),
        ScoringGroup(ids(200), tuple(ids(rng.randint(1, 30)) for _ in range(5)), labels(4)),
        ScoringGroup(ids(33), ((), ids(5), (), ids(1)), labels(2)),  # empty suffixes
        ScoringGroup(ids(1), (ids(7), ids(12)), labels(3)),
        ScoringGroup(ids(60), tuple(ids(rng.randint(1, 30)) for _ in range(20)), labels(2)),
    ]


GROUPS = hand_made_groups()


def reference(model, groups: Sequence[ScoringGroup]) -> list[list[tuple[float, ...]]]:
    return [
        [last_position_label_logprobs(model, g.prompt_ids(i), g.label_ids) for i in range(g.num_candidates)]
        for g in groups
    ]


def max_gap(results: Sequence[GroupResult], expected: Sequence[Sequence[Sequence[float]]]) -> float:
    return max(
        abs(a - b)
        for result, group_expected in zip(results, expected, strict=True)
        for candidate, candidate_expected in zip(result.candidates, group_expected, strict=True)
        for a, b in zip(candidate.label_logprobs, candidate_expected, strict=True)
    )


@pytest.fixture(scope="module", params=MODEL_TYPES)
def tiny(request, tmp_path_factory):
    """(model, reference scores of GROUPS) for one architecture, 4 query heads over 2 key/value heads."""
    out_dir = tmp_path_factory.mktemp(request.param)
    model_dir = build_tiny_causal_lm(out_dir, request.param, attention_heads=4, kv_heads=2)
    model = load_causal_lm(model_dir)
    return SimpleNamespace(model=model, dir=model_dir, expected=reference(model, GROUPS))


def test_reference_scores_vary_enough_for_parity_to_mean_something(tiny):
    first_label = [candidate[0] for candidate in tiny.expected[4]]
    assert max(first_label) - min(first_label) > 1000 * PARITY_TOLERANCE


@pytest.mark.parametrize("max_row_tokens", [None, ONE_PASS_BUDGET], ids=["row-per-longest-group", "one-row"])
def test_all_groups_in_one_pass_match_plain_forward_passes(tiny, max_row_tokens):
    results, stats = score_groups_packed(
        tiny.model, GROUPS, max_batch_tokens=ONE_PASS_BUDGET, max_row_tokens=max_row_tokens
    )
    assert stats.passes == 1
    # By default rows are as long as the longest group (360 tokens): groups 0, 1 and 3 share one.
    assert stats.rows == (1 if max_row_tokens else 3)
    assert max_gap(results, tiny.expected) < PARITY_TOLERANCE


@pytest.mark.parametrize("max_row_tokens", [None, 100])
def test_a_small_budget_forces_several_passes_and_scores_stay_exact(tiny, max_row_tokens):
    results, stats = score_groups_packed(
        tiny.model, GROUPS, max_batch_tokens=SMALL_BUDGET, max_row_tokens=max_row_tokens
    )
    assert stats.passes > 2
    plan = plan_passes(GROUPS, SMALL_BUDGET, max_row_tokens=max_row_tokens)
    assert max(p.rows * p.length for p in plan.passes) > SMALL_BUDGET  # the 200-token prefix's passes
    assert max_gap(results, tiny.expected) < PARITY_TOLERANCE


def test_token_counts_are_those_of_the_per_group_engine(tiny):
    results, _ = score_groups_packed(tiny.model, GROUPS, max_batch_tokens=SMALL_BUDGET)
    for group, result in zip(GROUPS, results, strict=True):
        prefix_len = len(group.prefix_ids)
        assert [c.prompt_tokens for c in result.candidates] == [prefix_len + len(s) for s in group.suffix_ids]
        assert [c.cached_tokens for c in result.candidates] == [0] + [prefix_len] * (group.num_candidates - 1)
        assert all(len(c.label_logprobs) == len(group.label_ids) for c in result.candidates)


def test_many_small_groups_in_one_pass_score_as_each_group_alone(tiny):
    groups = [
        ScoringGroup(g.prefix_ids[:12], tuple(s[:6] for s in g.suffix_ids[:4]), g.label_ids)
        for seed in range(4)
        for g in hand_made_groups(seed)
    ]
    together, stats = score_groups_packed(tiny.model, groups, max_batch_tokens=ONE_PASS_BUDGET)
    assert stats.passes == 1
    alone = [score_groups_packed(tiny.model, [g], max_batch_tokens=ONE_PASS_BUDGET)[0][0] for g in groups]
    # Not bitwise: longer rows change fp32 reduction orders (gaps seen: ~1e-5).
    assert max_gap(together, [[c.label_logprobs for c in r.candidates] for r in alone]) < PARITY_TOLERANCE


def kernel_model(model_dir, kernel: AttentionKernel, device: str = "cpu"):
    model = AutoModelForCausalLM.from_pretrained(
        model_dir, attn_implementation=kernel.value, local_files_only=True
    )
    return model.to(device).eval()


def test_the_eager_kernel_gives_the_same_scores(tiny):
    model = kernel_model(tiny.dir, AttentionKernel.EAGER)
    assert attention_kernel(model) is AttentionKernel.EAGER
    results, _ = score_groups_packed(model, GROUPS, max_batch_tokens=SMALL_BUDGET)
    assert max_gap(results, tiny.expected) < PARITY_TOLERANCE


def test_the_flex_mask_mod_is_the_dense_mask():
    for packed in plan_passes(GROUPS, 600).passes:
        length = packed.length
        flex_dense = create_mask(flex_mask_mod(packed, "cpu"), packed.rows, None, length, length, "cpu")
        assert torch.equal(flex_dense, packed.dense_mask())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="flex attention is refused on CPU")
@pytest.mark.parametrize("budget", [ONE_PASS_BUDGET, SMALL_BUDGET])
def test_the_flex_kernel_gives_the_same_scores_on_cuda(tiny, budget):
    model = kernel_model(tiny.dir, AttentionKernel.FLEX, "cuda")
    results, _ = score_groups_packed(model, GROUPS, max_batch_tokens=budget)
    assert max_gap(results, tiny.expected) < PARITY_TOLERANCE


def test_the_flex_kernel_is_refused_on_cpu(tiny):
    with pytest.raises(ValueError, match="flex_attention is refused on CPU"):
        score_groups_packed(kernel_model(tiny.dir, AttentionKernel.FLEX), GROUPS, max_batch_tokens=100)


def _config(**fields) -> SimpleNamespace:
    usable = {"model_type": "llama", "_attn_implementation": "sdpa", "layer_types": None}
    return SimpleNamespace(config=SimpleNamespace(**{**usable, **fields}))


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"model_type": "gemma2"}, "verified for model types llama, qwen2, qwen3; this model is 'gemma2'"),
        ({"_attn_implementation": "flash_attention_2"}, "uses 'flash_attention_2': load it with"),
        ({"layer_types": ["full_attention", "sliding_attention"]}, "needs full attention in every layer"),
        ({"sliding_window": 4096}, "needs full attention in every layer"),
    ],
    ids=["model-type", "kernel", "sliding-layers", "sliding-window"],
)
def test_models_it_cannot_score_exactly_are_refused_with_what_to_change(fields, message):
    with pytest.raises(ValueError, match=message):
        score_groups_packed(_config(**fields), GROUPS, max_batch_tokens=ONE_PASS_BUDGET)


@pytest.fixture(scope="module")
def demo():
    model = load_causal_lm(defaults.DEMO_MODEL_DIR)
    verbalizer = Verbalizer(
        load_tasks(defaults.PROMPTS_DIR),
        PromptTokenizer.from_pretrained(defaults.DEMO_MODEL_DIR),
        model.config.max_position_embeddings,
    )
    request = request_from_proto(parse_request_json(defaults.EXAMPLE_REQUEST.read_text()))
    groups = [verbalizer.prepare(request.member, task).group for task in request.tasks]
    groups += [g.prepared.group for g in heldout_groups(verbalizer, "job_apply", 6, 12)]
    return SimpleNamespace(model=model, groups=groups, expected=reference(model, groups))


@pytest.mark.parametrize("budget", [8192, 1024], ids=["one-pass", "several-passes"])
def test_demo_model_packed_scores_match_plain_forward_passes(demo, budget):
    results, stats = score_groups_packed(demo.model, demo.groups, max_batch_tokens=budget)
    assert (stats.passes == 1) == (budget == 8192)
    assert max_gap(results, demo.expected) < PARITY_TOLERANCE
