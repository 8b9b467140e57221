"""The attention backend of multi-item requests: vLLM's paged KV cache, Brew's rule.

Each request's keys and values are gathered from the paged cache through its
block table and attended under the layout's rule (`layout.may_attend`):
every query sees the visible prefix and its own block, causally. The
per-token rule comes from the model (`model.MultiItemScoring.forward` puts
the step's `visible_prefix` and `block_start` rows into vLLM's forward
context before the layers run); the step's first layer plans each request
once (`kernel.plan_request`) and every layer reuses the plan
(`kernel.attend` computes only the visible parts).

On vLLM's CPU build (and a head size its CPU kernel takes) the step runs on
vLLM's own CPU attention kernel instead (`cpu_kernel`: the rule cut into
virtual causal requests over a scratch cache, planned once per step), which
computes the same about twice as fast as torch's kernels; elsewhere it runs
in plain torch, so the same code runs on CUDA: it gathers each request's
whole context per layer and runs a few matmuls per request. On GPUs a fused
paged kernel with a mask (FlexAttention's `mask_mod` over the block table,
FlashInfer's custom masks) would be the fast path, and is not written here.

The cache is read and written as one row per slot (`token_rows`: slots x
kv_heads x 2 * head_size, slot = block * block_size + offset), a view of the
token-major layout this backend asks for: the KV write is one `index_copy_`
of the step's (key | value) rows, and the gather is one `index_select` of the
request's whole blocks, viewed (kv_heads, context, head) without a further
copy (the matmuls take that stride as it is). Indexing the logical
(blocks, kv_heads, block_size, 2 * head_size) view with a block and an
offset tensor instead took two scattered writes per layer and two copies
per gather. A cache that is not stored token-major (a layout fixed by the
configuration, padded or block-outermost pages) is indexed through the
logical view, as before; the result is the same.

Facts of vLLM 0.32 relied on (read in its source):
- `Attention.forward` calls `do_kv_cache_update` before `forward` when the
  backend's `forward_includes_kv_cache_update` is False, with the step's
  `slot_mapping`; `forward` receives `query` (tokens, heads, head_size),
  `key`/`value` and `output` (tokens, heads, head_size).
- The per-layer cache handed to the backend is the logical view
  (blocks, kv_heads, block_size, 2 * head_size), keys in the first half of
  the last axis (as vllm/v1/attention/backends/flex_attention.py reads it);
  `supported_kv_cache_layouts` picks its physical order
  (vllm/v1/kv_cache_layout.py: `KVCacheLayout.LBNHC` stores each layer's
  blocks as (blocks, block_size, kv_heads, 2 * head_size)), unless the cache
  config already names a layout (`resolve_kv_cache_layout` in
  vllm/v1/attention/backends/utils.py). The view is built with the tensor's
  own block stride (`create_kv_cache_views` in vllm/v1/kv_cache_interface.py),
  which equals one page for layer-outermost tensors and is larger for
  padded or block-outermost ones: `token_rows` checks the strides and never
  copies.
- `slot_mapping` holds block * block_size + offset in the cache's (kernel)
  block size, -1 for a token that is not stored; a step's slots are distinct.
- `CommonAttentionMetadata`: `query_start_loc_cpu`, `seq_lens` (context
  length including this step's tokens), `block_table_tensor`, `slot_mapping`;
  a request's logical index of its first scheduled token is
  `seq_len - query_len` (chunked prefill and prefix-cache hits included).
- `Attention.__init__` sets `self.backend = AttentionBackendEnum[get_name()]`,
  so the backend's name must be a registered member (the plugin registers
  BREW_MULTI_ITEM).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch
from vllm.forward_context import get_forward_context
from vllm.v1.attention.backend import (
    AttentionBackend,
    AttentionImpl,
    AttentionMetadataBuilder,
    AttentionType,
    CommonAttentionMetadata,
    MultipleOf,
)
from vllm.v1.kv_cache_interface import KVCacheLayout

from brew.engines.vllm_multi_item.cpu_kernel import CpuStepPlan, StepRequest, cpu_kernel_available
from brew.engines.vllm_multi_item.kernel import RequestPlan, attend, plan_request
from brew.engines.vllm_multi_item.names import BACKEND_NAME

# Where the model leaves the step's per-token rows in vLLM's forward context.
LAYOUT_KEY = "brew_multi_item_rows"


def publish_step_rows(visible_prefix: torch.Tensor, block_start: torch.Tensor) -> None:
    """Called by the model before its layers run: this step's per-token rule."""
    get_forward_context().additional_kwargs[LAYOUT_KEY] = (visible_prefix, block_start)


@dataclass
class MultiItemAttentionMetadata:
    num_actual_tokens: int
    query_start_loc: list[int]
    seq_lens: list[int]
    block_table: torch.Tensor
    slot_mapping: torch.Tensor
    # One plan per request, made by the step's first layer and shared by the
    # rest (every layer sees the same rows).
    plans: list[RequestPlan] = field(default_factory=list)
    # On vLLM's CPU build: the step's virtual requests for vLLM's CPU kernel,
    # made by the first layer as well, with the scratch cache the layers share.
    cpu_step: CpuStepPlan | None = None


class MultiItemAttentionMetadataBuilder(AttentionMetadataBuilder[MultiItemAttentionMetadata]):
    def __init__(self, kv_cache_spec, layer_names, vllm_config, device) -> None:
        super().__init__(kv_cache_spec, layer_names, vllm_config, device)

    def build(self, common_prefix_len: int, common_attn_metadata: CommonAttentionMetadata,
              fast_build: bool = False) -> MultiItemAttentionMetadata:
        num_reqs = common_attn_metadata.num_reqs
        return MultiItemAttentionMetadata(
            num_actual_tokens=common_attn_metadata.num_actual_tokens,
            query_start_loc=common_attn_metadata.query_start_loc_cpu[: num_reqs + 1].tolist(),
            seq_lens=common_attn_metadata.seq_lens[:num_reqs].cpu().tolist(),
            block_table=common_attn_metadata.block_table_tensor,
            slot_mapping=common_attn_metadata.slot_mapping,
        )


class MultiItemAttentionImpl(AttentionImpl[MultiItemAttentionMetadata]):
    def __init__(self, num_heads: int, head_size: int, scale: float, num_kv_heads: int | None = None,
                 alibi_slopes: list[float] | None = None, sliding_window: int | None = None,
                 kv_cache_dtype: str = "auto", logits_soft_cap: float | None = None,
                 attn_type: str = AttentionType.DECODER, kv_sharing_target_layer_name: str | None = None,
                 **unsupported: object) -> None:
        refused = {
            "ALiBi": alibi_slopes is not None, "a sliding window": sliding_window is not None,
            "logit soft-capping": bool(logits_soft_cap), "a quantized KV cache": kv_cache_dtype != "auto",
            "non-decoder attention": attn_type != AttentionType.DECODER,
            "KV sharing between layers": kv_sharing_target_layer_name is not None,
            "extra attention arguments": any(value is not None for value in unsupported.values()),
        }
        if any(refused.values()):
            names = ", ".join(name for name, present in refused.items() if present)
            raise NotImplementedError(f"multi-item scoring on vLLM does not support {names}")
        self.num_heads = num_heads
        self.head_size = head_size
        self.scale = float(scale)
        self.num_kv_heads = num_kv_heads or num_heads
        self.kv_cache_dtype = kv_cache_dtype
        self.attn_type = attn_type
        self.kv_sharing_target_layer_name = None

    def do_kv_cache_update(self, layer: torch.nn.Module, key: torch.Tensor, value: torch.Tensor,
                           kv_cache: torch.Tensor, slot_mapping: torch.Tensor) -> None:
        count = min(key.shape[0], slot_mapping.shape[0])
        slots = slot_mapping[:count].long()
        # (tokens, kv_heads, 2 * head): one cache row per token
        entries = torch.cat((key[:count], value[:count]), dim=-1).to(kv_cache.dtype)
        if bool((slots < 0).any()):  # vLLM pads with slot -1: tokens that are not stored
            written = slots >= 0
            slots, entries = slots[written], entries[written]
        rows = token_rows(kv_cache)
        if rows is not None:
            rows.index_copy_(0, slots, entries)
        else:
            block_size = kv_cache.shape[2]
            kv_cache[slots // block_size, :, slots % block_size] = entries

    def context(self, kv_cache: torch.Tensor, blocks: torch.Tensor,
                seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values (kv_heads, seq_len, head_size) of the first `seq_len`
        tokens stored in these blocks (int64, in the request's order)."""
        rows = token_rows(kv_cache)
        if rows is not None:
            block_size = kv_cache.shape[2]
            # (blocks, block_size, kv_heads, 2 * head) -> (kv_heads, context, 2 * head), a strided view
            gathered = rows.view(-1, block_size, *rows.shape[1:]).index_select(0, blocks)
            context = gathered.flatten(0, 1)[:seq_len].transpose(0, 1)
        else:
            # (blocks, kv_heads, block_size, 2 * head) -> (kv_heads, context, 2 * head)
            context = kv_cache[blocks].transpose(0, 1).reshape(self.num_kv_heads, -1, 2 * self.head_size)[:, :seq_len]
        return context[..., : self.head_size], context[..., self.head_size:]

    def _plans(self, metadata: MultiItemAttentionMetadata, masks: bool) -> list[RequestPlan]:
        """One plan per request, made once per step; `masks` for `kernel.attend`."""
        if not metadata.plans:
            visible_prefix, block_start = get_forward_context().additional_kwargs[LAYOUT_KEY]
            for request, seq_len in enumerate(metadata.seq_lens):
                start, end = metadata.query_start_loc[request], metadata.query_start_loc[request + 1]
                metadata.plans.append(plan_request(seq_len - (end - start), visible_prefix[start:end],
                                                   block_start[start:end], masks=masks))
        return metadata.plans

    def forward(self, layer, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, kv_cache: torch.Tensor,
                attn_metadata: MultiItemAttentionMetadata | None, output: torch.Tensor,
                output_scale: torch.Tensor | None = None,
                output_block_scale: torch.Tensor | None = None) -> torch.Tensor:
        if attn_metadata is None:  # vLLM's warm-up and profiling runs
            return output
        block_size = kv_cache.shape[2]
        rows = token_rows(kv_cache)
        if rows is not None and cpu_kernel_available(query.device, self.head_size):
            plans = self._plans(attn_metadata, masks=False)
            self._forward_on_cpu_kernel(query, rows, attn_metadata, plans, block_size, output)
            return output
        plans = self._plans(attn_metadata, masks=True)
        for request, (seq_len, plan) in enumerate(zip(attn_metadata.seq_lens, plans)):
            start, end = attn_metadata.query_start_loc[request], attn_metadata.query_start_loc[request + 1]
            if end == start:
                continue
            num_blocks = -(-seq_len // block_size)
            keys, values = self.context(kv_cache, attn_metadata.block_table[request, :num_blocks].long(), seq_len)
            attend(plan, query[start:end], keys.to(query.dtype), values.to(query.dtype), self.scale,
                   output[start:end])
        return output

    def _forward_on_cpu_kernel(self, query: torch.Tensor, cache_rows: torch.Tensor,
                               metadata: MultiItemAttentionMetadata, plans: list[RequestPlan], block_size: int,
                               output: torch.Tensor) -> None:
        """The step on vLLM's CPU attention kernel (cpu_kernel): the same
        result as `kernel.attend`, request by request, in one kernel call."""
        if metadata.cpu_step is None:
            metadata.cpu_step = CpuStepPlan.build([
                StepRequest(plan, metadata.query_start_loc[request], seq_len,
                            metadata.block_table[request, : -(-seq_len // block_size)].long().cpu())
                for request, (seq_len, plan) in enumerate(zip(metadata.seq_lens, plans))], block_size)
        metadata.cpu_step.attend(query, cache_rows, self.scale, output)


def token_rows(kv_cache: torch.Tensor) -> torch.Tensor | None:
    """The per-layer cache as one row per slot, (blocks * block_size, kv_heads,
    2 * head_size), a view; None when the cache is not stored token-major with
    dense pages (the view would need a copy, and writes to it would be lost)."""
    blocks, heads, block_size, width = kv_cache.shape
    tokens = kv_cache.transpose(1, 2)  # (blocks, block_size, kv_heads, 2 * head)
    if not tokens.is_contiguous():
        return None
    return tokens.view(blocks * block_size, heads, width)


class MultiItemAttentionBackend(AttentionBackend):
    forward_includes_kv_cache_update: bool = False
    supported_dtypes: ClassVar[list[torch.dtype]] = [torch.float16, torch.bfloat16, torch.float32]
    supported_kv_cache_dtypes: ClassVar[list[str]] = ["auto"]

    @staticmethod
    def get_name() -> str:
        return BACKEND_NAME

    @staticmethod
    def get_impl_cls() -> type[MultiItemAttentionImpl]:
        return MultiItemAttentionImpl

    @staticmethod
    def get_builder_cls() -> type[MultiItemAttentionMetadataBuilder]:
        return MultiItemAttentionMetadataBuilder

    @staticmethod
    def get_supported_kernel_block_sizes(kv_cache_spec=None) -> list[int | MultipleOf]:
        return [MultipleOf(16)]

    @classmethod
    def supported_kv_cache_layouts(cls) -> tuple[KVCacheLayout, ...]:
        # Token-major blocks: one block's keys for all heads are one run.
        return (KVCacheLayout.LBNHC,)
