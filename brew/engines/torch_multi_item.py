"""Exact multi-item scoring in torch: groups packed into few forward passes.

`brew.engines.packing` lays groups out side by side (`prefix | cand_0 |
cand_1 | ...`) with a mask and position ids under which every candidate's
last token computes what it would after its plain prompt `prefix + suffix`
(docs/design/decisions.md, decision 7). Here each planned pass goes through the model's own
forward (no forked model code), and logits are computed only at the read-out
positions: the decoder runs, the read-out rows of its last hidden state are
gathered, and only they go through `lm_head`. Label log-probabilities are
fp32 full-vocabulary `log_softmax` values, as every engine reports them
(with bf16 or fp16 weights `lm_head` is brew.engines.loading.Fp32Head).
A pass's inputs are built apart from its run: `pass_inputs` on the
engine's host thread (pinned on CUDA, and padded to steady shapes by
`pad_pass` for a compiled decoder), `run_pass` on its worker thread.

The attention kernel is the model's own (`config._attn_implementation`),
chosen where the model is loaded (`from_pretrained(attn_implementation=...)`)
or with `model.set_attn_implementation(...)`, and the mask is built to match
it (`AttentionKernel`):
- "sdpa" (the transformers default) and "eager": a dense additive mask, 0
  where a token may attend and the dtype's minimum elsewhere. SDPA would
  take the boolean mask too, but torch turns a boolean mask into an additive
  one on every call, in every layer (`aten::where`: about a tenth of the
  demo model's forward on CPU); built once per pass it is not. Dense kernels
  pay for every masked entry of a row, which is why `plan_passes` keeps rows
  as short as the longest group by default.
- "flex_attention": a flex BlockMask from the same `may_attend` rule; its
  block sparsity skips masked-out blocks. Refused on CPU: there the kernel
  compiled for a first pass shape, then failed to compile for the next
  (torch 2.13 inductor, CppCompileError).

Transformers facts this relies on (transformers 5.19, checked in its source):
- `masking_utils._preprocess_mask_arguments`, called by `create_causal_mask`
  and `create_sliding_window_causal_mask`: an `attention_mask` that is
  already 4D (a tensor or a flex `BlockMask`) is returned as-is, so the
  packed mask reaches every layer unchanged; it also replaces any sliding
  window, which is why models with sliding-window layers are refused.
- `integrations/sdpa_attention.py` `sdpa_attention_forward`: the mask goes
  unchanged to `torch.nn.functional.scaled_dot_product_attention` as
  `attn_mask` (added to the scores), with `is_causal=False` whenever a mask
  is given; with grouped-query attention and a mask, `use_gqa_in_sdpa` is
  false on CPU and CUDA, so key/value heads are repeated (`repeat_kv`).
- `models/llama/modeling_llama.py` `eager_attention_forward` (Qwen2 and
  Qwen3 alike): the mask is added to the attention scores, so eager needs
  0 where attending and the dtype's minimum elsewhere.
- `integrations/flex_attention.py` `flex_attention_forward`: a `BlockMask`
  is passed to a `torch.compile`d `flex_attention` (`WrappedFlexAttention`,
  default dynamic shapes) as `block_mask`; the first call compiles.
- `LlamaModel.forward` (and `Qwen2Model`, `Qwen3Model`): the given
  `position_ids` (rows, length) feed the rotary embedding per row, and the
  final norm is applied before `last_hidden_state` is returned;
  `LlamaForCausalLM.forward` (and Qwen2's, Qwen3's) computes the logits as
  `lm_head(hidden_states)` and nothing more, so `lm_head` applied to the
  gathered read-out rows gives the model's logits there. Architectures that
  change logits after `lm_head` (softcapping, scaling) would not; hence the
  list of verified model types.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import torch
from transformers import PreTrainedModel

from brew.engines.loading import FLEX_ON_CPU_REFUSED
from brew.engines.packing import PackedPass, PackingStats, may_attend, plan_passes
from brew.types import CandidateLogprobs, GroupResult, ScoringGroup

# Model types whose packed scores are checked against plain forward passes
# (tests/integration/test_multi_item.py) and whose logits are lm_head(hidden).
VERIFIED_MODEL_TYPES = frozenset({"llama", "qwen2", "qwen3"})

# With bucketed shapes (TorchOptions.bucket_tokens), rows are padded to a
# multiple of this, so a compiled forward pass sees few distinct shapes.
ROW_BUCKET = 4


class AttentionKernel(StrEnum):
    """The transformers attention implementations a packed mask can drive."""

    SDPA = "sdpa"
    EAGER = "eager"
    FLEX = "flex_attention"


def _additive_mask(packed: PackedPass, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    allowed = packed.dense_mask(device)
    blocked = torch.finfo(dtype).min
    return torch.zeros(allowed.shape, dtype=dtype, device=device).masked_fill(~allowed, blocked)


def flex_mask_mod(packed: PackedPass, device: torch.device | str) -> Callable[..., torch.Tensor]:
    """The pass's mask as a flex-attention mask_mod (batch, head, q, kv) -> bool."""
    segment = packed.segment_ids.to(device)
    context = packed.context_ids.to(device)

    def mask_mod(batch: torch.Tensor, head: torch.Tensor, q: torch.Tensor, kv: torch.Tensor) -> torch.Tensor:
        return may_attend(segment[batch, q], segment[batch, kv], context[batch, q], q, kv)

    return mask_mod


def _block_mask(packed: PackedPass, device: torch.device, dtype: torch.dtype) -> object:
    from torch.nn.attention.flex_attention import create_block_mask

    length = packed.length
    return create_block_mask(
        flex_mask_mod(packed, device), B=packed.rows, H=None, Q_LEN=length, KV_LEN=length, device=device
    )


_MASK_BUILDERS: dict[AttentionKernel, Callable[[PackedPass, torch.device, torch.dtype], object]] = {
    AttentionKernel.SDPA: _additive_mask,
    AttentionKernel.EAGER: _additive_mask,
    AttentionKernel.FLEX: _block_mask,
}


def attention_kernel(model: PreTrainedModel) -> AttentionKernel:
    """The model's attention kernel, if packed scoring is exact on this model;
    ValueError saying what to change otherwise."""
    config = model.config
    if config.model_type not in VERIFIED_MODEL_TYPES:
        raise ValueError(
            f"multi-item scoring is verified for model types {', '.join(sorted(VERIFIED_MODEL_TYPES))}; "
            f"this model is {config.model_type!r}: score it one group at a time"
        )
    layer_types = getattr(config, "layer_types", None) or ()
    if getattr(config, "sliding_window", None) is not None or any(t != "full_attention" for t in layer_types):
        raise ValueError(
            "multi-item scoring needs full attention in every layer: a packed 4D mask replaces the "
            "sliding window; turn sliding windows off in the config (use_sliding_window=false)"
        )
    try:
        kernel = AttentionKernel(config._attn_implementation)
    except ValueError:
        raise ValueError(
            f"multi-item scoring needs an attention kernel that takes an arbitrary mask; the model uses "
            f"{config._attn_implementation!r}: load it with attn_implementation set to one of "
            f"{', '.join(k.value for k in AttentionKernel)}"
        ) from None
    if kernel is AttentionKernel.FLEX and model.device.type == "cpu":
        raise ValueError(FLEX_ON_CPU_REFUSED)
    return kernel


def gather_label_logprobs(
    logprobs: torch.Tensor, label_ids: Sequence[Sequence[int]]
) -> list[tuple[float, ...]]:
    """(rows, vocab) log-probs -> per row, the values at that row's label ids."""
    width = max(len(labels) for labels in label_ids)
    index = torch.tensor(
        [list(labels) + [0] * (width - len(labels)) for labels in label_ids], device=logprobs.device
    )  # (rows, width), padded with any valid id
    values = logprobs.gather(1, index).tolist()
    return [tuple(row[: len(labels)]) for row, labels in zip(values, label_ids, strict=True)]


def bucketed(size: int, bucket: int) -> int:
    """`size` rounded up to a multiple of `bucket` (1: unchanged)."""
    return -(-size // bucket) * bucket


def pad_pass(packed: PackedPass, rows: int, length: int, pad_id: int = 0) -> PackedPass:
    """`packed` right-padded to (rows, length) with pads that attend only to
    themselves (segment -1): no real token sees them, read-outs are unchanged.
    How steady shapes are made for a compiled forward pass."""
    extra_rows, extra_columns = rows - packed.rows, length - packed.length
    if extra_rows < 0 or extra_columns < 0:
        raise ValueError(f"cannot pad a {packed.rows}x{packed.length} pass to {rows}x{length}")
    if not extra_rows and not extra_columns:
        return packed

    def padded(tensor: torch.Tensor, value: int) -> torch.Tensor:
        return torch.nn.functional.pad(tensor, (0, extra_columns, 0, extra_rows), value=value)

    return dataclasses.replace(
        packed, input_ids=padded(packed.input_ids, pad_id), position_ids=padded(packed.position_ids, 0),
        segment_ids=padded(packed.segment_ids, -1), context_ids=padded(packed.context_ids, -1),
        attended_pairs=packed.attended_pairs + rows * length - packed.rows * packed.length)


@dataclass(frozen=True)
class PassInputs:
    """One packed pass's host-side inputs, built before the pass runs (on
    CUDA in pinned memory, so the copy to the device is asynchronous): the
    host work the dispatcher's next batch does while this one computes."""

    packed: PackedPass  # its tensors pinned where the device is CUDA
    readout_rows: torch.Tensor  # (readouts,) long
    readout_columns: torch.Tensor  # (readouts,) long
    label_ids: tuple[tuple[int, ...], ...]  # per read-out


def pass_inputs(packed: PackedPass, groups: Sequence[ScoringGroup], device: torch.device | str,
                bucket_tokens: int = 1) -> PassInputs:
    """The pass's inputs: padded to a multiple of `bucket_tokens` in length
    (and rows, for steady shapes), pinned if `device` is CUDA."""
    if bucket_tokens > 1:
        packed = pad_pass(packed, bucketed(packed.rows, ROW_BUCKET), bucketed(packed.length, bucket_tokens))
    pin = torch.device(device).type == "cuda"

    def host(tensor: torch.Tensor) -> torch.Tensor:
        return tensor.pin_memory() if pin else tensor

    return PassInputs(_with_tensors(packed, host), host(packed.readout_rows), host(packed.readout_columns),
                      tuple(groups[r.group].label_ids for r in packed.readouts))


def _with_tensors(packed: PackedPass, change: Callable[[torch.Tensor], torch.Tensor]) -> PackedPass:
    """`packed` with `change` applied to each of its token tensors (pinning, the copy to the device)."""
    return dataclasses.replace(
        packed, input_ids=change(packed.input_ids), position_ids=change(packed.position_ids),
        segment_ids=change(packed.segment_ids), context_ids=change(packed.context_ids))


@torch.inference_mode()
def run_pass(model: PreTrainedModel, inputs: PassInputs,
             decoder: Callable[..., Any] | None = None) -> list[tuple[float, ...]]:
    """One forward pass over prepared inputs: fp32 full-vocabulary label
    log-probs of each read-out, in read-out order. `decoder` replaces the
    model's decoder (a compiled one, brew.engines.compiled)."""
    kernel = attention_kernel(model)
    device = model.device
    packed = _with_tensors(inputs.packed, lambda tensor: tensor.to(device, non_blocking=True))
    forward = decoder if decoder is not None else model.get_decoder()
    hidden = forward(
        input_ids=packed.input_ids,
        position_ids=packed.position_ids,
        attention_mask=_MASK_BUILDERS[kernel](packed, device, model.dtype),
        use_cache=False,
    ).last_hidden_state  # (rows, length, hidden)
    rows = inputs.readout_rows.to(device, non_blocking=True)
    columns = inputs.readout_columns.to(device, non_blocking=True)
    picked = hidden[rows, columns]  # (readouts, hidden)
    # The head is fp32 whatever the body's dtype (brew.engines.loading.Fp32Head);
    # .float() keeps a plain fp32 model's logits as they were.
    logits = model.get_output_embeddings()(picked)  # (readouts, vocab)
    logprobs = torch.log_softmax(logits.float(), dim=-1)
    return gather_label_logprobs(logprobs, inputs.label_ids)


def score_pass(
    model: PreTrainedModel, packed: PackedPass, groups: Sequence[ScoringGroup]
) -> list[tuple[float, ...]]:
    """One forward pass: fp32 full-vocabulary label log-probs of each read-out
    of `packed`, in `packed.readouts` order (`groups` are the planned ones)."""
    return run_pass(model, pass_inputs(packed, groups, model.device))


def assemble_results(
    groups: Sequence[ScoringGroup], logprobs: Mapping[tuple[int, int], tuple[float, ...]]
) -> list[GroupResult]:
    """One GroupResult per group, from label log-probs keyed by (group, candidate).

    Token counts as the per-group torch engine reports them: the whole prompt,
    and the prefix counted as cached for every candidate but the first.
    """
    return [
        GroupResult(
            tuple(
                CandidateLogprobs(
                    label_logprobs=logprobs[index, candidate],
                    prompt_tokens=len(group.prefix_ids) + len(suffix),
                    cached_tokens=len(group.prefix_ids) if candidate > 0 else 0,
                )
                for candidate, suffix in enumerate(group.suffix_ids)
            )
        )
        for index, group in enumerate(groups)
    ]


@torch.inference_mode()
def score_groups_packed(
    model: PreTrainedModel,
    groups: Sequence[ScoringGroup],
    *,
    max_batch_tokens: int,
    max_row_tokens: int | None = None,
) -> tuple[list[GroupResult], PackingStats]:
    """Score every candidate of `groups` in as few packed forward passes as
    `max_batch_tokens` allows (see `plan_passes`); the results, in group and
    candidate order, and what the passes cost."""
    attention_kernel(model)  # refuse an unsupported model before any work
    plan = plan_passes(groups, max_batch_tokens, max_row_tokens=max_row_tokens)
    logprobs: dict[tuple[int, int], tuple[float, ...]] = {}
    for packed in plan.passes:
        values = score_pass(model, packed, groups)
        logprobs.update(((r.group, r.candidate), v) for r, v in zip(packed.readouts, values, strict=True))
    return assemble_results(groups, logprobs), plan.stats
