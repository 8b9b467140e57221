"""A multi-item step on vLLM's CPU attention kernel equals the plain-torch kernel.

`cpu_kernel.CpuStepPlan` cuts a step of several requests into virtual
causal requests over a scratch cache; `kernel.attend`, itself checked
against dense masked attention (test_vllm_multi_item_kernel.py), is the
reference, request by request. Steps start anywhere (chunked prefill,
prefix-cache hits), heads may be grouped, and every layer reuses the plan.
"""

from __future__ import annotations

import random

import pytest
import torch

from brew.engines.vllm_multi_item.cpu_kernel import CpuStepPlan, StepRequest, cpu_kernel_available
from brew.engines.vllm_multi_item.kernel import attend, plan_request
from brew.engines.vllm_multi_item.layout import layout_rows, pack, parse, plain_rows

HEAD = 64  # a head size vLLM's CPU kernel supports

pytestmark = pytest.mark.skipif(not cpu_kernel_available(torch.device("cpu"), HEAD),
                                reason="vLLM's CPU build is not installed")


def rows_of(rng: random.Random, plain: bool) -> torch.Tensor:
    if plain:
        return plain_rows(rng.randint(1, 100))
    prefix = [1] * rng.randint(1, 90)  # across block boundaries, and not
    candidates = [[2] * rng.choice([0, 1, rng.randint(1, 40)]) for _ in range(rng.randint(1, 7))]
    return layout_rows(parse(pack(prefix, candidates, rng)))


CACHE_BLOCK = 16  # the paged cache's blocks: not the scratch cache's 32


def random_step(seed: int, heads: int, kv_heads: int, cache_block: int = CACHE_BLOCK, masks: bool = True):
    """One to three requests, each from a random first token, their queries,
    and a paged cache (one row per slot) holding their contexts in blocks
    scattered through it; also each request's context (keys, values).
    `masks`: the plans as the plain-torch kernel needs them (else as the
    backend makes them for vLLM's CPU kernel)."""
    rng = random.Random(seed)
    generator = torch.Generator().manual_seed(seed)
    free = torch.randperm(64, generator=generator)
    cache = torch.randn(64 * cache_block, kv_heads, 2 * HEAD, generator=generator)
    requests, queries, contexts, start, used = [], [], [], 0, 0
    for index in range(rng.randint(1, 3)):
        rows = rows_of(rng, plain=(seed + index) % 5 == 4)
        seq_len = rows.shape[1]
        first = rng.choice([0, rng.randint(0, seq_len - 1)])
        count = -(-seq_len // cache_block)
        blocks, used = free[used: used + count], used + count
        plan = plan_request(first, rows[1, first:], rows[2, first:], masks=masks)
        request = StepRequest(plan, start, seq_len, blocks)
        entries = cache[request.slots(torch.arange(seq_len), cache_block)]  # (seq_len, kv_heads, 2 * head)
        contexts.append((entries[..., :HEAD].transpose(0, 1), entries[..., HEAD:].transpose(0, 1)))
        queries.append(torch.randn(seq_len - first, heads, HEAD, generator=generator))
        requests.append(request)
        start += seq_len - first
    return requests, queries, contexts, cache


@pytest.mark.parametrize("seed", range(30))
@pytest.mark.parametrize("heads,kv_heads", [(2, 2), (4, 2)])
@pytest.mark.parametrize("cache_block", [16, 32, 48, 64])  # below, at, across and above the scratch blocks' 32
def test_a_step_on_vllms_cpu_kernel_equals_the_plain_torch_kernel_in_every_layer(seed, heads, kv_heads, cache_block):
    requests, queries, contexts, cache = random_step(seed, heads, kv_heads, cache_block)
    expected = []
    for request, query, (keys, values) in zip(requests, queries, contexts):
        out = torch.full_like(query, float("nan"))
        attend(request.plan, query, keys, values, HEAD**-0.5, out)
        expected.append(out)
    # the backend plans without the plain-torch kernel's masks for this kernel
    unmasked, _, _, _ = random_step(seed, heads, kv_heads, cache_block, masks=False)
    step = CpuStepPlan.build(unmasked, cache_block)
    for _layer in range(2):  # the second layer reuses the plan and the scratch cache
        out = torch.full_like(torch.cat(queries), float("nan"))
        step.attend(torch.cat(queries), cache, HEAD**-0.5, out)
        assert torch.allclose(out, torch.cat(expected), atol=1e-5), (out - torch.cat(expected)).abs().max()


def test_a_plan_without_masks_builds_no_mask_and_the_plain_torch_kernel_refuses_it():
    (request, *_), (query, *_), ((keys, values), *_), _ = random_step(3, 2, 2, masks=False)
    assert request.plan.candidates is None and request.plan.prefix_bias is None
    with pytest.raises(ValueError, match="without masks"):
        attend(request.plan, query, keys, values, HEAD**-0.5, torch.empty_like(query))


def test_requests_without_tokens_in_the_step_are_skipped():
    requests, queries, _, cache = random_step(1, 2, 2)
    no_rows = torch.zeros(0, dtype=torch.long)
    empty = StepRequest(plan_request(5, no_rows, no_rows), requests[0].query_start, 5, torch.tensor([60]))
    step = CpuStepPlan.build([empty, *requests], CACHE_BLOCK)
    out = torch.full_like(torch.cat(queries), float("nan"))
    step.attend(torch.cat(queries), cache, HEAD**-0.5, out)
    assert not out.isnan().any()


def test_only_head_sizes_the_kernel_supports_take_it():
    assert not cpu_kernel_available(torch.device("cpu"), 8)
    assert not cpu_kernel_available(torch.device("meta"), HEAD)


def test_requests_behind_the_same_cached_prefix_share_its_scratch_blocks():
    """One candidate per request, the group's prefix in the same cache blocks
    (a prefix-cache hit): its whole blocks are written to the scratch cache
    once, and every request still attends as alone."""
    rng, generator = random.Random(5), torch.Generator().manual_seed(5)
    cache = torch.randn(64 * CACHE_BLOCK, 2, 2 * HEAD, generator=generator)
    prefix = [1] * 70  # four whole blocks of 16, then six tokens
    shared = [3, 9, 12, 20]
    requests, queries, contexts, start = [], [], [], 0
    for index in range(3):
        rows = layout_rows(parse(pack(prefix, [[2] * (5 + index)], rng)))
        seq_len, first = rows.shape[1], 64  # the whole prefix blocks are cached
        blocks = torch.tensor(shared + [30 + 4 * index + k for k in range(-(-seq_len // CACHE_BLOCK) - 4)])
        request = StepRequest(plan_request(first, rows[1, first:], rows[2, first:]), start, seq_len, blocks)
        entries = cache[request.slots(torch.arange(seq_len), CACHE_BLOCK)]
        contexts.append((entries[..., :HEAD].transpose(0, 1), entries[..., HEAD:].transpose(0, 1)))
        queries.append(torch.randn(seq_len - first, 2, HEAD, generator=generator))
        requests.append(request)
        start += seq_len - first
    step = CpuStepPlan.build(requests, CACHE_BLOCK)
    # 64 shared tokens in two scratch blocks of 32, once; then per request its own blocks
    assert int((step.scratch_slots < 2 * 32).sum()) == 64
    out = torch.full_like(torch.cat(queries), float("nan"))
    step.attend(torch.cat(queries), cache, HEAD**-0.5, out)
    for request, query, (keys, values) in zip(requests, queries, contexts):
        expected = torch.full_like(query, float("nan"))
        attend(request.plan, query, keys, values, HEAD**-0.5, expected)
        got = out[request.query_start: request.query_start + len(query)]
        assert torch.allclose(got, expected, atol=1e-5), (got - expected).abs().max()
