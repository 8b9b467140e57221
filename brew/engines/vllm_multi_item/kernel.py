"""Attention of one request under the multi-item rule, computing only what is visible.

A dense (queries x keys) mask would spend most of its work on pairs the rule
hides (candidate k against candidate j, nonce and trailer), and on the demo
model that made attention cost more than the rest of the model. So each
engine step is planned once (`plan_request`, from the step's per-token rows
of `layout.layout_rows`) and every layer then runs three parts:

- prefix tokens: causal attention over the prefix, one SDPA call: plain
  `is_causal` when the step starts at the prompt's first token, else with an
  additive mask (a chunk or a cache hit may start inside the prefix, and
  SDPA's `is_causal` aligns the diagonal top-left);
- candidate blocks, in two parts merged by their log-sum-exp (as
  flash-attention merges the tiles of one row): every candidate query
  against the prefix it sees, as one attention call over the real queries
  only (on CPU torch's fused flash kernel, which returns the log-sum-exp
  and never writes the (queries x prefix) scores to memory), and each
  block's queries against the block's own tokens up to each query,
  batched one padded row per block (small: a block's length squared).
  Padding the prefix part to the longest block, as a first version did,
  cost as much again as its real rows when candidate lengths vary;
- nonce and trailer tokens see only themselves: their output is their value.

Plain torch (matmul and softmax), so it runs wherever vLLM's tensors live.
SDPA gets 4-D (batch, heads, tokens, head) inputs: with 3-D ones torch 2.13's
CPU dispatch skips its fused kernel (`_scaled_dot_product_flash_attention_for_cpu`)
for the unfused math path, which builds the whole (queries x keys) score
matrix; on a 1500-token prefix that took 4.7 times as long as the fused
kernel with `is_causal`, 2.7 times as long as the fused kernel with the mask
(loadtest/bench/mis_kernel.py).
Keys and values are the request's whole context (cached and new tokens),
one row per logical index; queries are this step's tokens, starting at
logical index `first`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class CandidateBatch:
    """Candidate blocks of one request in this step, one padded row per block."""

    query_rows: torch.Tensor  # (blocks, queries): row of each query in the step's tokens (padded: 0)
    query_valid: torch.Tensor  # (blocks, queries) bool
    own_keys: torch.Tensor  # (blocks, keys): logical index of each own key (padded: 0)
    own_bias: torch.Tensor  # (blocks, queries, keys): 0 where visible, -inf where not
    # (blocks, 1, prefix): 0 below the block's visible prefix, -inf above;
    # None when every block sees the whole prefix
    prefix_bias: torch.Tensor | None
    prefix_len: int  # the longest visible prefix among the blocks


@dataclass(frozen=True)
class RequestPlan:
    """What one request's step attends to; the same for every layer."""

    prefix_rows: tuple[int, int] | None  # rows [from, to) of prefix tokens in this step
    prefix_context: int  # they attend to keys [0, prefix_context)
    # (rows, keys) additive causal mask for them; None when their queries start
    # at logical index 0 (then rows == keys and the mask is SDPA's `is_causal`)
    prefix_bias: torch.Tensor | None
    isolated_rows: torch.Tensor  # rows of tokens that see only themselves
    candidates: CandidateBatch | None
    # the candidate blocks as planned: (from row, to row, logical index of the
    # block's first token, visible prefix length)
    blocks: tuple[tuple[int, int, int, int], ...] = ()
    query_len: int = 0  # the step's tokens of this request
    masks: bool = True  # whether prefix_bias and candidates were built (`attend` needs them)


def _runs(block_start: list[int]) -> list[tuple[int, int]]:
    """[from, to) row ranges of equal `block_start`."""
    runs, start = [], 0
    for row in range(1, len(block_start) + 1):
        if row == len(block_start) or block_start[row] != block_start[start]:
            runs.append((start, row))
            start = row
    return runs


def plan_request(first: int, visible_prefix: torch.Tensor, block_start: torch.Tensor, *,
                 masks: bool = True) -> RequestPlan:
    """The plan of a step whose tokens have logical indices first, first + 1, ...
    and these rows (see `layout.layout_rows`). `masks` builds what only
    `attend` reads (the prefix rows' bias and the padded candidate batch);
    vLLM's CPU kernel (cpu_kernel) reads the blocks alone, and building them
    for it cost 4-6% of the worker's time under load."""
    device = visible_prefix.device
    visible, starts = visible_prefix.tolist(), block_start.tolist()
    prefix_rows, isolated, blocks = None, [], []
    for begin, end in _runs(starts):
        lo = starts[begin]
        if lo == 0:  # prefix tokens: plain causal
            prefix_rows = (begin, end)
        elif end - begin == 1 and lo == first + begin and visible[begin] == 0:  # sees only itself
            isolated.append(begin)
        else:
            blocks.append((begin, end, lo, visible[begin]))
    prefix_bias, prefix_context = None, 0
    if prefix_rows is not None:
        prefix_context = first + prefix_rows[1]
        if masks and first + prefix_rows[0] > 0:
            queries = torch.arange(first + prefix_rows[0], prefix_context, device=device)
            keys = torch.arange(prefix_context, device=device)
            prefix_bias = _bias(keys[None, :] <= queries[:, None])
    context_len = first + len(starts)
    return RequestPlan(prefix_rows, prefix_context, prefix_bias,
                       torch.tensor(isolated, dtype=torch.long, device=device),
                       _candidate_batch(first, context_len, blocks, device) if masks and blocks else None,
                       tuple(blocks), len(starts), masks)


def _bias(visible: torch.Tensor) -> torch.Tensor:
    return torch.zeros(visible.shape, device=visible.device).masked_fill_(~visible, float("-inf"))


def _candidate_batch(first: int, context_len: int, blocks: list[tuple[int, int, int, int]],
                     device: torch.device) -> CandidateBatch:
    num_queries = max(end - begin for begin, end, _, _ in blocks)
    num_keys = max(first + end - lo for begin, end, lo, _ in blocks)
    prefix_len = max(visible for _, _, _, visible in blocks)
    begins, counts, los, visibles = (torch.tensor(column, device=device) for column in zip(
        *((begin, end - begin, lo, visible) for begin, end, lo, visible in blocks)))
    offsets = torch.arange(num_queries, device=device)
    query_valid = offsets[None, :] < counts[:, None]
    query_rows = torch.where(query_valid, begins[:, None] + offsets[None, :], 0)
    query_index = first + begins[:, None] + offsets[None, :]  # logical
    key_index = los[:, None] + torch.arange(num_keys, device=device)[None, :]
    # Every query, padding included, sees at least the prefix (blocks here have
    # a visible prefix of at least one token), so no softmax row is all -inf.
    own_visible = (key_index[:, None, :] <= query_index[:, :, None]) & query_valid[:, :, None]
    if all(visible == prefix_len for _, _, _, visible in blocks):
        prefix_bias = None
    else:
        prefix_bias = _bias(torch.arange(prefix_len, device=device)[None, None, :] < visibles[:, None, None])
    return CandidateBatch(query_rows, query_valid, key_index.clamp(max=context_len - 1),
                          _bias(own_visible), prefix_bias, prefix_len)


def attend(plan: RequestPlan, query: torch.Tensor, keys: torch.Tensor, values: torch.Tensor,
           scale: float, out: torch.Tensor) -> None:
    """Write the attention output of one request's step into `out`.

    query (tokens, heads, head), keys/values (kv_heads, context, head), out
    (tokens, heads, head); kv heads are repeated for grouped-query attention.
    """
    if not plan.masks:
        raise ValueError("this plan was made without masks (for vLLM's CPU kernel); attend needs them")
    heads, kv_heads = query.shape[1], keys.shape[0]
    if heads != kv_heads:
        keys = keys.repeat_interleave(heads // kv_heads, dim=0)
        values = values.repeat_interleave(heads // kv_heads, dim=0)
    if plan.prefix_rows is not None:
        begin, end = plan.prefix_rows
        context = plan.prefix_context
        attended = torch.nn.functional.scaled_dot_product_attention(
            query[begin:end].transpose(0, 1)[None], keys[None, :, :context], values[None, :, :context],
            attn_mask=plan.prefix_bias, is_causal=plan.prefix_bias is None, scale=scale)
        out[begin:end] = attended[0].transpose(0, 1).to(out.dtype)
    if plan.isolated_rows.numel():
        first = keys.shape[1] - query.shape[0]
        out[plan.isolated_rows] = values[:, first + plan.isolated_rows].transpose(0, 1).to(out.dtype)
    if plan.candidates is not None:
        _attend_candidates(plan.candidates, query, keys, values, scale, out)


def attend_with_lse(query: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, scale: float,
                    bias: torch.Tensor | None, fused: bool | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention of (heads, queries, head) against (heads, keys, head) with an
    optional additive (queries, keys) bias: the output and each query's
    log-sum-exp of its scores, (heads, queries). `fused` (default: on CPU)
    takes torch's fused CPU kernel, else plain matmuls and softmax."""
    if query.device.type == "cpu" if fused is None else fused:
        # torch's fused CPU flash-attention kernel (what SDPA calls on CPU), which
        # also returns the log-sum-exp; the scores stay in cache-sized tiles
        out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
            query[None], keys[None], values[None], attn_mask=bias, scale=scale)
        return out[0], lse[0]
    scores = torch.matmul(query, keys.transpose(1, 2)) * scale
    if bias is not None:
        scores = scores + bias
    lse = scores.logsumexp(dim=-1)
    return torch.matmul((scores - lse[..., None]).exp(), values), lse


def _attend_candidates(batch: CandidateBatch, query: torch.Tensor, keys: torch.Tensor, values: torch.Tensor,
                       scale: float, out: torch.Tensor) -> None:
    heads, head = query.shape[1], query.shape[2]
    blocks, num_queries = batch.query_rows.shape
    valid = batch.query_valid.reshape(-1)
    rows = batch.query_rows.reshape(-1)[valid]  # the real queries' rows in the step, block by block
    prefix_bias = None
    if batch.prefix_bias is not None:  # (blocks, 1, prefix) -> (real queries, prefix)
        prefix_bias = batch.prefix_bias.expand(blocks, num_queries, -1).reshape(blocks * num_queries, -1)[valid]
    prefix_out, prefix_lse = attend_with_lse(query[rows].transpose(0, 1), keys[:, : batch.prefix_len],
                                             values[:, : batch.prefix_len], scale, prefix_bias)
    # each block against its own tokens: (heads, blocks, queries, keys), padded
    padded = query[batch.query_rows.reshape(-1)].transpose(0, 1).reshape(heads, blocks, num_queries, head)
    own_scores = torch.matmul(padded * scale, keys[:, batch.own_keys].transpose(2, 3)).add_(batch.own_bias)
    own_lse = own_scores.logsumexp(dim=-1)  # -inf on padding rows, which are dropped below
    own_out = torch.matmul((own_scores - own_lse[..., None]).exp(), values[:, batch.own_keys])
    own_lse = own_lse.reshape(heads, -1)[:, valid]
    own_out = own_out.reshape(heads, -1, head)[:, valid]
    lse = torch.logaddexp(prefix_lse, own_lse)
    attended = prefix_out * (prefix_lse - lse).exp()[..., None] + own_out * (own_lse - lse).exp()[..., None]
    out[rows] = attended.transpose(0, 1).to(out.dtype)
