"""The multi-item attention backend reads and writes vLLM's paged KV cache as vLLM lays it out.

The cache is a real vLLM per-layer view (`create_kv_cache_views`, several
layers in one tensor): the token-major layout the backend asks for, where
the backend writes and gathers whole token rows (`attention.token_rows`),
and layouts a configuration could impose instead (head-major, block-major
pages), where it indexes the logical view. In every layout the KV write
stores exactly what indexing the logical (blocks, kv_heads, block_size,
2 * head_size) view by block and offset stores, the gather returns exactly
the logical view's tokens, and a layer's output equals dense attention under
the layout's mask. The step's plan is made by the first layer and reused.
No engine is started.
"""

from __future__ import annotations

import random
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from vllm.v1.kv_cache_interface import FullAttentionSpec, KVCacheTensor, create_kv_cache_views
from vllm.v1.kv_cache_layout import KVCacheLayout

from brew.engines.vllm_multi_item import attention
from brew.engines.vllm_multi_item.attention import (
    LAYOUT_KEY,
    MultiItemAttentionBackend,
    MultiItemAttentionImpl,
    MultiItemAttentionMetadata,
    token_rows,
)
from brew.engines.vllm_multi_item.layout import layout_rows, may_attend, pack, parse

BLOCK_SIZE, HEAD, LAYERS, NUM_BLOCKS = 16, 8, 3, 24
# The layout the backend asks for, and two a configuration could impose: the
# per-layer view is then not token-major, or its pages are not adjacent.
LAYOUTS = [KVCacheLayout.LBNHC, KVCacheLayout.LBHNC, KVCacheLayout.BLNHC]


def kv_caches(layout: KVCacheLayout, kv_heads: int, dtype: torch.dtype = torch.float32) -> list[torch.Tensor]:
    spec = FullAttentionSpec(block_size=BLOCK_SIZE, num_kv_heads=kv_heads, head_size=HEAD, dtype=dtype)
    page = spec.page_size_bytes
    layer_stride, block_stride = ((page, page * LAYERS) if layout.is_block_outermost
                                  else (page * NUM_BLOCKS, page))
    tensor = KVCacheTensor(size=page * NUM_BLOCKS * LAYERS, layers=[f"layer{i}" for i in range(LAYERS)],
                           layer_stride=layer_stride, block_stride=block_stride)
    caches = create_kv_cache_views(torch.zeros(tensor.size, dtype=torch.int8), spec, NUM_BLOCKS, layout, tensor)
    for cache in caches:
        cache.copy_(torch.randn(cache.shape))  # stale contents
    return caches


def reference_write(kv_cache, key, value, slot_mapping):
    """Token by token, through the logical view."""
    for token, slot in enumerate(slot_mapping.tolist()):
        if slot >= 0:
            kv_cache[slot // BLOCK_SIZE, :, slot % BLOCK_SIZE, :HEAD] = key[token]
            kv_cache[slot // BLOCK_SIZE, :, slot % BLOCK_SIZE, HEAD:] = value[token]


def reference_context(kv_cache, blocks, seq_len):
    """(kv_heads, seq_len, head) keys and values, token by token, through the logical view."""
    tokens = [kv_cache[blocks[index // BLOCK_SIZE], :, index % BLOCK_SIZE] for index in range(seq_len)]
    context = torch.stack(tokens, dim=1)
    return context[..., :HEAD], context[..., HEAD:]


def test_the_backend_asks_for_the_token_major_layout_and_gets_token_rows_in_it():
    assert MultiItemAttentionBackend.supported_kv_cache_layouts() == (KVCacheLayout.LBNHC,)
    cache = kv_caches(KVCacheLayout.LBNHC, kv_heads=2)[1]
    rows = token_rows(cache)
    assert rows is not None and rows.shape == (NUM_BLOCKS * BLOCK_SIZE, 2, 2 * HEAD)
    assert rows.untyped_storage().data_ptr() == cache.untyped_storage().data_ptr()
    assert torch.equal(rows[5 * BLOCK_SIZE + 3], cache[5, :, 3])
    rows[7 * BLOCK_SIZE + 1] = 42.0  # a view: writes reach the cache
    assert (cache[7, :, 1] == 42.0).all()


@pytest.mark.parametrize("layout", LAYOUTS[1:], ids=lambda layout: layout.name)
def test_other_layouts_get_no_token_rows(layout):
    assert token_rows(kv_caches(layout, kv_heads=2)[1]) is None


@pytest.mark.parametrize("layout", LAYOUTS, ids=lambda layout: layout.name)
@pytest.mark.parametrize("kv_heads", [1, 2])
def test_the_kv_write_stores_what_the_logical_view_stores_and_skips_padded_slots(layout, kv_heads):
    caches = kv_caches(layout, kv_heads)
    expected = [cache.clone() for cache in caches]
    generator = torch.Generator().manual_seed(kv_heads)
    slots = torch.randperm(NUM_BLOCKS * BLOCK_SIZE, generator=generator)[:40]
    slot_mapping = torch.cat([slots, torch.full((3,), -1)])  # vLLM pads with -1
    # key and value as the model hands them: views into one projection output
    qkv = torch.randn(43, 3, kv_heads, HEAD, generator=generator)
    key, value = qkv[:, 1], qkv[:, 2]
    impl = MultiItemAttentionImpl(kv_heads, HEAD, HEAD**-0.5, kv_heads)
    impl.do_kv_cache_update(None, key, value, caches[1], slot_mapping)
    reference_write(expected[1], key, value, slot_mapping)
    for cache, reference in zip(caches, expected):  # the other layers untouched
        assert torch.equal(cache, reference)


@pytest.mark.parametrize("layout", LAYOUTS, ids=lambda layout: layout.name)
@pytest.mark.parametrize("seq_len", [1, BLOCK_SIZE, 3 * BLOCK_SIZE + 5])
def test_the_gather_returns_the_requests_tokens_in_order(layout, seq_len):
    cache = kv_caches(layout, kv_heads=2)[2]
    blocks = torch.randperm(NUM_BLOCKS, generator=torch.Generator().manual_seed(seq_len))[: -(-seq_len // BLOCK_SIZE)]
    keys, values = MultiItemAttentionImpl(2, HEAD, HEAD**-0.5, 2).context(cache, blocks, seq_len)
    expected_keys, expected_values = reference_context(cache, blocks, seq_len)
    assert keys.shape == (2, seq_len, HEAD)
    assert torch.equal(keys, expected_keys) and torch.equal(values, expected_values)


def packed_rows(seed: int) -> torch.Tensor:
    rng = random.Random(seed)
    prefix = [1] * rng.randint(20, 70)
    candidates = [[2] * rng.choice([0, 1, rng.randint(2, 12)]) for _ in range(rng.randint(1, 6))]
    return layout_rows(parse(pack(prefix, candidates, rng)))


def dense_reference(query, keys, values, first, visible_prefix, block_start):
    heads, kv_heads, context = query.shape[1], keys.shape[0], keys.shape[1]
    mask = may_attend(torch.arange(first, context)[:, None], torch.arange(context)[None, :],
                      visible_prefix[:, None], block_start[:, None])
    return F.scaled_dot_product_attention(query.transpose(0, 1), keys, values, attn_mask=mask, scale=HEAD**-0.5,
                                          enable_gqa=heads != kv_heads).transpose(0, 1)


@pytest.mark.parametrize("layout", LAYOUTS, ids=lambda layout: layout.name)
@pytest.mark.parametrize("seed", range(6))
def test_a_step_through_every_layer_equals_dense_masked_attention_and_plans_once(layout, seed, monkeypatch):
    """Two requests in one step: one from its first token, one after a cached
    part (a whole number of blocks); every layer writes, gathers and attends;
    the plans are made by the first layer only."""
    heads, kv_heads = (4, 2) if seed % 2 else (2, 2)
    generator = torch.Generator().manual_seed(seed)
    caches = kv_caches(layout, kv_heads)
    requests = [packed_rows(seed), packed_rows(seed + 100)]
    firsts = [0, random.Random(seed).randint(1, (requests[1].shape[1] - 1) // BLOCK_SIZE) * BLOCK_SIZE]
    free = torch.randperm(NUM_BLOCKS, generator=generator).tolist()
    tables, slot_mapping, visible_prefix, block_start, starts = [], [], [], [], [0]
    for rows, first in zip(requests, firsts):
        seq_len = rows.shape[1]
        blocks = [free.pop() for _ in range(-(-seq_len // BLOCK_SIZE))]
        tables.append(blocks + [0] * (NUM_BLOCKS - len(blocks)))
        slot_mapping += [blocks[index // BLOCK_SIZE] * BLOCK_SIZE + index % BLOCK_SIZE
                         for index in range(first, seq_len)]
        visible_prefix.append(rows[1, first:])
        block_start.append(rows[2, first:])
        starts.append(starts[-1] + seq_len - first)
    tokens = starts[-1]
    step_rows = (torch.cat(visible_prefix), torch.cat(block_start))
    monkeypatch.setattr(attention, "get_forward_context",
                        lambda: SimpleNamespace(additional_kwargs={LAYOUT_KEY: step_rows}))
    planned = []
    real_plan = attention.plan_request
    monkeypatch.setattr(attention, "plan_request",
                        lambda *args, **options: planned.append(args) or real_plan(*args, **options))
    metadata = MultiItemAttentionMetadata(
        num_actual_tokens=tokens, query_start_loc=starts, seq_lens=[rows.shape[1] for rows in requests],
        block_table=torch.tensor(tables, dtype=torch.int32), slot_mapping=torch.tensor(slot_mapping))
    # the cached part of the second request: written by an earlier step
    cached = {layer: (torch.randn(firsts[1], kv_heads, HEAD, generator=generator),
                      torch.randn(firsts[1], kv_heads, HEAD, generator=generator)) for layer in range(LAYERS)}
    impl = MultiItemAttentionImpl(heads, HEAD, HEAD**-0.5, kv_heads)
    for layer, cache in enumerate(caches):
        blocks = tables[1]
        reference_write(cache, *cached[layer], torch.tensor([blocks[index // BLOCK_SIZE] * BLOCK_SIZE
                                                              + index % BLOCK_SIZE for index in range(firsts[1])]))
        query, key, value = (torch.randn(tokens, count, HEAD, generator=generator)
                             for count in (heads, kv_heads, kv_heads))
        impl.do_kv_cache_update(None, key, value, cache, metadata.slot_mapping)
        output = torch.full_like(query, float("nan"))
        impl.forward(None, query, key, value, cache, metadata, output)
        for request, (rows, first) in enumerate(zip(requests, firsts)):
            begin, end = starts[request], starts[request + 1]
            keys = torch.cat([cached[layer][0][:first], key[begin:end]]).transpose(0, 1)
            values = torch.cat([cached[layer][1][:first], value[begin:end]]).transpose(0, 1)
            expected = dense_reference(query[begin:end], keys, values, first, rows[1, first:], rows[2, first:])
            assert torch.allclose(output[begin:end], expected, atol=1e-5), (output[begin:end] - expected).abs().max()
    assert len(planned) == len(requests)  # the first layer planned each request; the others reused the plans
