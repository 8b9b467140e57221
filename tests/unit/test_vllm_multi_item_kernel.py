"""The multi-item attention kernel equals dense attention under the layout's mask.

The kernel computes only the visible parts (prefix causally, each candidate
block against its visible prefix and itself, nonce and trailer alone); the
reference is one dense SDPA call with the full (queries x keys) mask of
`layout.may_attend`. Steps start anywhere (chunked prefill and prefix-cache
hits), heads may be grouped.
"""

from __future__ import annotations

import random

import pytest
import torch
import torch.nn.functional as F

from brew.engines.vllm_multi_item.kernel import attend, attend_with_lse, plan_request
from brew.engines.vllm_multi_item.layout import layout_rows, may_attend, pack, parse, plain_rows

HEAD = 16


def dense_reference(query, keys, values, first, visible_prefix, block_start, scale):
    heads, kv_heads = query.shape[1], keys.shape[0]
    context = keys.shape[1]
    mask = may_attend(torch.arange(first, context)[:, None], torch.arange(context)[None, :],
                      visible_prefix[:, None], block_start[:, None])
    return F.scaled_dot_product_attention(query.transpose(0, 1), keys, values, attn_mask=mask, scale=scale,
                                          enable_gqa=heads != kv_heads).transpose(0, 1)


def rows_of(seed: int, plain: bool = False) -> torch.Tensor:
    rng = random.Random(seed)
    if plain:
        return plain_rows(rng.randint(1, 60))
    prefix = [1] * rng.randint(1, 40)
    candidates = [[2] * rng.choice([0, 1, rng.randint(1, 15)]) for _ in range(rng.randint(1, 7))]
    return layout_rows(parse(pack(prefix, candidates, rng)))


def random_step(seed: int, context: int, first: int, heads: int, kv_heads: int):
    """Queries of the step's tokens (from logical index `first`), keys and values of the whole context."""
    generator = torch.Generator().manual_seed(seed)
    query = torch.randn(context - first, heads, HEAD, generator=generator)
    keys = torch.randn(kv_heads, context, HEAD, generator=generator)
    values = torch.randn(kv_heads, context, HEAD, generator=generator)
    return query, keys, values


def assert_attends_as_dense(plan, query, keys, values, first, visible_prefix, block_start) -> None:
    out = torch.full_like(query, float("nan"))
    attend(plan, query, keys, values, HEAD**-0.5, out)
    expected = dense_reference(query, keys, values, first, visible_prefix, block_start, HEAD**-0.5)
    assert torch.allclose(out, expected, atol=1e-5), (out - expected).abs().max()


@pytest.mark.parametrize("seed", range(40))
@pytest.mark.parametrize("heads,kv_heads", [(2, 2), (4, 2)])
def test_kernel_equals_dense_masked_attention_from_any_step_start(seed, heads, kv_heads):
    rows = rows_of(seed, plain=seed % 10 == 9)
    first = random.Random(seed).randint(0, rows.shape[1] - 1)
    query, keys, values = random_step(seed, rows.shape[1], first, heads, kv_heads)
    visible_prefix, block_start = rows[1, first:], rows[2, first:]
    assert_attends_as_dense(plan_request(first, visible_prefix, block_start), query, keys, values, first,
                            visible_prefix, block_start)


@pytest.mark.parametrize("seed", range(20))
@pytest.mark.parametrize("heads,kv_heads", [(2, 2), (4, 2)])
def test_a_step_from_the_first_token_plans_no_prefix_mask_and_equals_dense_attention(seed, heads, kv_heads):
    """From logical index 0 the prefix rows are plain causal: SDPA's `is_causal`, no (rows x keys) mask."""
    rows = rows_of(seed, plain=seed % 10 == 9)
    query, keys, values = random_step(seed, rows.shape[1], 0, heads, kv_heads)
    plan = plan_request(0, rows[1], rows[2])
    assert plan.prefix_rows is not None and plan.prefix_rows[0] == 0 and plan.prefix_bias is None
    assert_attends_as_dense(plan, query, keys, values, 0, rows[1], rows[2])


def test_a_step_starting_inside_the_prefix_masks_its_prefix_rows():
    rows = layout_rows(parse(pack([1] * 40, [[2, 2]], random.Random(0))))
    plan = plan_request(32, rows[1, 32:], rows[2, 32:])
    assert plan.prefix_rows == (0, 8) and plan.prefix_context == 40
    assert plan.prefix_bias is not None and plan.prefix_bias.shape == (8, 40)


def test_a_plan_sorts_tokens_into_prefix_candidate_blocks_and_isolated_tokens():
    layout = parse(pack([1, 1, 1], [[2, 2], [], [2]], random.Random(0)))
    rows = layout_rows(layout)
    plan = plan_request(0, rows[1], rows[2])
    assert plan.prefix_rows == (0, 3)
    assert plan.candidates is not None and plan.candidates.query_valid.sum().item() == 2 + 1 + 1
    assert plan.isolated_rows.numel() == layout.total_len - 3 - 4


@pytest.mark.parametrize("empty", [False, True])
def test_candidate_blocks_skip_the_prefix_bias_only_when_every_block_sees_the_whole_prefix(empty):
    """An empty candidate is packed as a copy of the prefix's last token, which
    sees one token less of the prefix: only then do the blocks need a prefix
    bias, and both ways equal dense attention."""
    candidates = [[2, 2, 2], [], [2]] if empty else [[2, 2, 2], [2, 2], [2]]
    rows = layout_rows(parse(pack([1] * 20, candidates, random.Random(0))))
    plan = plan_request(0, rows[1], rows[2])
    assert plan.candidates is not None and (plan.candidates.prefix_bias is not None) == empty
    query, keys, values = random_step(1, rows.shape[1], 0, 2, 2)
    assert_attends_as_dense(plan, query, keys, values, 0, rows[1], rows[2])


@pytest.mark.parametrize("with_bias", [False, True])
def test_attention_with_log_sum_exp_is_the_same_fused_and_in_plain_torch(with_bias):
    """The candidates' prefix part takes torch's fused CPU kernel on CPU and
    plain matmuls elsewhere: both give the same output and log-sum-exp."""
    generator = torch.Generator().manual_seed(3)
    query, keys, values = (torch.randn(2, n, HEAD, generator=generator) for n in (30, 50, 50))
    bias = None
    if with_bias:
        bias = torch.zeros(30, 50).masked_fill_(torch.rand(30, 50, generator=generator) < 0.3, float("-inf"))
        bias[:, 0] = 0.0  # every query sees at least one key
    fused = attend_with_lse(query, keys, values, HEAD**-0.5, bias, fused=True)
    plain = attend_with_lse(query, keys, values, HEAD**-0.5, bias, fused=False)
    scores = torch.matmul(query, keys.transpose(1, 2)) * HEAD**-0.5 + (0 if bias is None else bias)
    assert torch.allclose(fused[1], scores.logsumexp(-1), atol=1e-5)
    for a, b in zip(fused, plain):
        assert torch.allclose(a, b, atol=1e-5), (a - b).abs().max()
