"""The attention backend of multi-item requests: vLLM's paged KV cache, Brew's rule.

Each request's keys and values are gathered from the paged cache through its
block table and attended under the layout's rule (`layout.may_attend`):
every query sees the visible prefix and its own block, causally. The
per-token rule comes from the model (`model.MultiItemScoring.forward` puts
the step's `visible_prefix` and `block_start` rows into vLLM's forward
context before the layers run); the step's first layer plans each request
once (`kernel.plan_request`) and every layer reuses the plan
(`kernel.attend` computes only the visible parts).

Plain torch only, so the same code runs on vLLM's CPU build and on CUDA. It
gathers each request's whole context per layer and runs a few matmuls per
request; on GPUs a fused paged kernel with a mask (FlexAttention's
`mask_mod` over the block table, FlashInfer's custom masks) would be the fast
path, and is not written here.

Facts of vLLM 0.32 relied on (read in its source):
- `Attention.forward` calls `do_kv_cache_update` before `forward` when the
  backend's `forward_includes_kv_cache_update` is False, with the step's
  `slot_mapping`; `forward` receives `query` (tokens, heads, head_size),
  `key`/`value` and `output` (tokens, heads, head_size).
- The per-layer cache handed to the backend is the logical view
  (blocks, kv_heads, block_size, 2 * head_size), keys in the first half of
  the last axis (as vllm/v1/attention/backends/flex_attention.py reads it);
  `supported_kv_cache_layouts` picks its physical order.
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
        block_size = kv_cache.shape[2]
        slots = slot_mapping[: key.shape[0]].long()
        written = slots >= 0  # vLLM pads with slot -1: tokens that are not stored
        slots = slots[written]
        blocks, offsets = slots // block_size, slots % block_size
        kv_cache[blocks, :, offsets, : self.head_size] = key[: written.shape[0]][written].to(kv_cache.dtype)
        kv_cache[blocks, :, offsets, self.head_size:] = value[: written.shape[0]][written].to(kv_cache.dtype)

    def _plans(self, metadata: MultiItemAttentionMetadata) -> list[RequestPlan]:
        if not metadata.plans:
            visible_prefix, block_start = get_forward_context().additional_kwargs[LAYOUT_KEY]
            for request, seq_len in enumerate(metadata.seq_lens):
                start, end = metadata.query_start_loc[request], metadata.query_start_loc[request + 1]
                metadata.plans.append(plan_request(seq_len - (end - start), visible_prefix[start:end],
                                                   block_start[start:end]))
        return metadata.plans

    def forward(self, layer, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, kv_cache: torch.Tensor,
                attn_metadata: MultiItemAttentionMetadata | None, output: torch.Tensor,
                output_scale: torch.Tensor | None = None,
                output_block_scale: torch.Tensor | None = None) -> torch.Tensor:
        if attn_metadata is None:  # vLLM's warm-up and profiling runs
            return output
        block_size = kv_cache.shape[2]
        plans = self._plans(attn_metadata)
        for request, (seq_len, plan) in enumerate(zip(attn_metadata.seq_lens, plans)):
            start, end = attn_metadata.query_start_loc[request], attn_metadata.query_start_loc[request + 1]
            if end == start:
                continue
            num_blocks = -(-seq_len // block_size)
            blocks = attn_metadata.block_table[request, :num_blocks].long()
            # (blocks, kv_heads, block_size, 2 * head) -> (kv_heads, context, 2 * head)
            context = kv_cache[blocks].transpose(0, 1).reshape(self.num_kv_heads, -1, 2 * self.head_size)[:, :seq_len]
            keys = context[..., : self.head_size].to(query.dtype)
            values = context[..., self.head_size:].to(query.dtype)
            attend(plan, query[start:end], keys, values, self.scale, output[start:end])
        return output


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
