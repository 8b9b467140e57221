"""Multi-item scoring models for vLLM: a stock causal LM, packed prompts, label read-out.

`MultiItemScoring` turns vLLM's own CausalLM classes (Llama, Qwen2, Qwen3;
the model types Brew's torch multi-item engine verifies) into pooling models
that score every candidate of a packed prompt (`layout`):

- Positions and the attention rule reach the model through vLLM's M-RoPE
  channel: `get_mrope_input_positions` returns three rows per prompt token
  (`layout.layout_rows`), which vLLM computes once per request from its
  token ids and slices per step (chunked prefill and prefix-cache hits
  included). `forward` hands row 0 to the stock model as plain positions and
  publishes rows 1-2 to the attention backend.
- Every attention layer runs `attention.MultiItemAttentionBackend`.
- The pooler reads each candidate's last hidden state, applies the model's
  own `compute_logits` (lm_head and its scaling, as the generate path does)
  and an fp32 full-vocabulary `log_softmax`, and returns only the label ids'
  values (candidates x labels): what vLLM's sampler computes for a
  per-candidate request (`logprobs_mode="raw_logprobs"`).

Facts of vLLM 0.32 relied on (read in its source):
- The model runner uses M-RoPE when the hf config has `mrope_section`; a
  top-level attribute is enough (`vllm/transformers_utils/config.py`,
  `_mrope_section`), and the stock model's rotary embedding is built from
  `rope_parameters`, which stays as it was. It then calls
  `get_mrope_input_positions(prompt_token_ids, mm_features)` once per request
  and passes `positions` of shape (rows, tokens) to `forward`, the rows of
  the scheduled tokens (`gpu_model_runner._calc_mrope_positions`).
- A pooling model's `pooler(hidden_states, pooling_metadata)` gets the
  scheduled tokens' hidden states of all requests in the step; the cursor
  gives each request's scheduled count and context length, and
  `pooling_states[i].hidden_states_cache` persists across a request's chunks
  until `clean()`. Output None means "not finished".
  `get_pooling_updates(...).requires_token_ids` makes the prompt ids
  available (`get_prompt_token_ids_cpu`).
- `PoolingParams.extra_kwargs` reaches the pooler unchanged
  (`pooling_metadata.pooling_params`); the runner only reads its
  `compressed_token_type_ids` key.
- Attention layers keep their backend in `attn_backend`, `backend` and
  `impl` (vllm/model_executor/layers/attention/attention.py); swapping all
  three right after the model is built, before the KV cache is specified
  and bound, is what `Attention.__init__(attn_backend=...)` would have done.
"""

from __future__ import annotations

from collections.abc import Set

import torch
from vllm.model_executor.layers.attention import Attention
from vllm.model_executor.layers.pooler import Pooler, PoolingParamsUpdate
from vllm.model_executor.models.llama import LlamaForCausalLM
from vllm.model_executor.models.qwen2 import Qwen2ForCausalLM
from vllm.model_executor.models.qwen3 import Qwen3ForCausalLM
from vllm.v1.attention.backends.registry import AttentionBackendEnum
from vllm.v1.pool.metadata import PoolingMetadata

from brew.engines.vllm_multi_item.attention import MultiItemAttentionBackend, publish_step_rows
from brew.engines.vllm_multi_item.layout import Layout, layout_rows, parse, plain_rows
from brew.engines.vllm_multi_item.names import LABEL_IDS_KEY, POOLING_TASK


def _layout_or_none(ids: list[int]) -> Layout | None:
    try:
        return parse(ids)
    except ValueError:
        return None


class CandidateEndPooler(Pooler):
    """Label log-probabilities at every candidate's last token (candidates x labels)."""

    def __init__(self, compute_logits) -> None:
        super().__init__()
        self._compute_logits = compute_logits  # a bound method: lm_head is not registered twice

    def get_supported_tasks(self) -> Set[str]:
        return {POOLING_TASK}

    def get_pooling_updates(self, task) -> PoolingParamsUpdate:
        return PoolingParamsUpdate(requires_token_ids=True)

    def forward(self, hidden_states: torch.Tensor, pooling_metadata: PoolingMetadata) -> list[torch.Tensor | None]:
        cursor = pooling_metadata.get_pooling_cursor()
        scheduled = cursor.num_scheduled_tokens_cpu.tolist()
        seq_lens = cursor.seq_lens_cpu.tolist()
        prompt_ids = pooling_metadata.get_prompt_token_ids_cpu()
        outputs: list[torch.Tensor | None] = []
        offset = 0
        for request, (count, seq_len, finished) in enumerate(zip(scheduled, seq_lens, cursor.get_finished_mask())):
            params = pooling_metadata.pooling_params[request]
            state = pooling_metadata.pooling_states[request]
            label_ids = (params.extra_kwargs or {}).get(LABEL_IDS_KEY, [])
            layout = _layout_or_none(prompt_ids[request].tolist())
            first = seq_len - count  # logical index of this chunk's first row
            # a packed prompt: every candidate's last token; a plain one (a single
            # candidate's prompt, requests.plain_prompt): its last token
            ends = layout.readout_positions if layout is not None else (len(prompt_ids[request]) - 1,)
            rows = [end - first for end in ends if first <= end < seq_len]
            if rows:
                hidden = hidden_states[offset + torch.tensor(rows, device=hidden_states.device)]
                logprobs = self._compute_logits(hidden).float().log_softmax(dim=-1)
                state.hidden_states_cache.append(logprobs[:, label_ids])
            offset += count
            if not finished:
                outputs.append(None)
                continue
            parts = state.hidden_states_cache
            width = len(label_ids)
            outputs.append(torch.cat(parts) if parts else hidden_states.new_zeros((0, width), dtype=torch.float32))
            state.clean()
        return outputs


class MultiItemScoring:
    """Mixin over a vLLM CausalLM class: see the module docstring."""

    is_pooling_model = True
    supports_mrope = True

    def __init__(self, *, vllm_config, prefix: str = "") -> None:
        super().__init__(vllm_config=vllm_config, prefix=prefix)
        self.pooler = CandidateEndPooler(self.compute_logits)
        backend = AttentionBackendEnum[MultiItemAttentionBackend.get_name()]
        for layer in self.modules():
            if isinstance(layer, Attention):
                old = layer.impl
                layer.attn_backend = MultiItemAttentionBackend
                layer.backend = backend
                layer.impl = MultiItemAttentionBackend.get_impl_cls()(
                    layer.num_heads, layer.head_size, old.scale, layer.num_kv_heads,
                    sliding_window=layer.sliding_window, kv_cache_dtype=layer.kv_cache_dtype,
                    attn_type=layer.attn_type, kv_sharing_target_layer_name=layer.kv_sharing_target_layer_name,
                )

    def get_mrope_input_positions(self, input_tokens: list[int], mm_features) -> tuple[torch.Tensor, int]:
        layout = _layout_or_none(list(input_tokens))
        rows = layout_rows(layout) if layout is not None else plain_rows(len(input_tokens))
        return rows, 0

    def forward(self, input_ids, positions, intermediate_tensors=None, inputs_embeds=None, **kwargs):
        if positions.ndim == 2:
            publish_step_rows(positions[1], positions[2])
            positions = positions[0]
        else:  # not expected: vLLM passes rows whenever the config asks for M-RoPE
            publish_step_rows(positions + 1, torch.zeros_like(positions))
        return super().forward(input_ids, positions, intermediate_tensors, inputs_embeds, **kwargs)


class BrewMultiItemLlamaForCausalLM(MultiItemScoring, LlamaForCausalLM):
    pass


class BrewMultiItemQwen2ForCausalLM(MultiItemScoring, Qwen2ForCausalLM):
    pass


class BrewMultiItemQwen3ForCausalLM(MultiItemScoring, Qwen3ForCausalLM):
    pass

