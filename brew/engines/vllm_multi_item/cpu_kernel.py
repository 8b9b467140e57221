"""A multi-item step's attention on vLLM's own CPU attention kernel.

vLLM's CPU attention kernel (`cpu_attention_with_kv_cache`) computes plain
causal attention of each request's newest tokens over its paged context, and
does it about 1.7 times as fast per flop as torch's fused CPU
flash-attention kernel at this project's head sizes (measured:
BENCHMARKS.md section 9). It knows nothing of the multi-item rule, but the
rule is causal attention over a rearranged context: a candidate block's
queries see the prefix it may see, then its own tokens up to each query,
which is exactly what a request made of (visible prefix, own tokens) would
see. So each step is cut into virtual requests, planned once per step
(`CpuStepPlan.build`):

- the request's prefix rows in this step: queries over the prefix, causal;
- each candidate block: queries over (visible prefix, the block's own
  tokens up to the step's last one), causal, the queries at the end.

Their keys and values are written per layer into a scratch paged cache (the
kernel reads only its own ISA's layout, written by vLLM's
`cpu_attn_reshape_and_cache`): each request's prefix once, in blocks every
virtual request of that request shares, then per candidate block a fresh
block that starts with the prefix's last partial block (so the block's own
tokens land at the positions that follow the visible prefix) and holds its
own tokens. That costs one copy of each request's context per layer, small
beside the attention. Nonce and trailer tokens see only themselves: their
output is their value. Scores equal the plain-torch kernel's (`kernel.attend`)
to float rounding (tests/integration/test_engine_parity.py holds both within
1e-4 of the naive engine).

Facts of vLLM 0.32.0's CPU build relied on (read in
vllm/v1/attention/backends/cpu_attn.py and vllm/_custom_ops.py):
- `cpu_attention_with_kv_cache(query, key_cache, value_cache, output,
  query_start_loc, seq_lens, scale, causal, alibi_slopes, sliding_window,
  block_table, softcap, scheduler_metadata, s_aux)`: the queries of request
  i are rows query_start_loc[i]:query_start_loc[i+1], the last tokens of its
  seq_lens[i]; with `causal` each sees the context up to its own position.
  key_cache/value_cache are the two halves of a (blocks, kv_heads,
  2 * block_size, head) tensor split on its third axis.
- `cpu_attn_reshape_and_cache(key, value, key_cache, value_cache,
  slot_mapping, isa)` writes (tokens, kv_heads, head) rows to slots
  (block * block_size + offset).
- `cpu_attn_get_scheduler_metadata(...)` is made once per batch of requests
  and passed to the kernel; `_get_attn_isa(dtype, block_size, head_size)`
  picks the ISA both calls take; `CPUAttentionBackend.get_supported_head_sizes()`
  lists the head sizes the kernel takes.
- The kernel reads whole blocks and masks the slots past a request's
  length: a slot it was never given must still hold a number (a NaN there
  poisons the row), so the scratch cache starts zeroed.
"""

from __future__ import annotations

import functools
from array import array
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from brew.engines.vllm_multi_item.kernel import RequestPlan

BLOCK_SIZE = 32  # scratch cache blocks; a block size vLLM's CPU kernels support


def cpu_kernel_available(device: torch.device, head_size: int) -> bool:
    """Whether vLLM's CPU attention kernel is here (vLLM's CPU build) for
    tensors on `device` and this head size (it supports a fixed list)."""
    return _cpu_kernel_takes(device.type, head_size)


@functools.lru_cache(maxsize=None)
def _cpu_kernel_takes(device_type: str, head_size: int) -> bool:
    if device_type != "cpu":
        return False
    from vllm import _custom_ops  # noqa: F401  (loads vLLM's compiled ops into torch.ops._C)
    from vllm.v1.attention.backends.cpu_attn import CPUAttentionBackend

    if not hasattr(torch.ops._C, "cpu_attention_with_kv_cache"):
        return False

    return head_size in CPUAttentionBackend.get_supported_head_sizes()


def _ints() -> array:
    """A growable list of int64 (a tensor from it costs a quarter of one from a list)."""
    return array("q")


def _tensor(values: array) -> torch.Tensor:
    """An int64 tensor over the array's memory (the tensor keeps the array alive)."""
    return torch.frombuffer(values, dtype=torch.long) if len(values) else torch.zeros(0, dtype=torch.long)


@dataclass(frozen=True)
class StepRequest:
    """One request of the step, as the backend's metadata gives it."""

    plan: RequestPlan
    query_start: int  # its first row in the step's tokens
    seq_len: int  # its context length, this step's tokens included
    blocks: torch.Tensor  # its blocks in the paged cache, in order (int64)

    def slots(self, logical: torch.Tensor, block_size: int) -> torch.Tensor:
        """Cache slots (block * block_size + offset) of these logical indices."""
        return self.blocks[logical // block_size] * block_size + logical % block_size

    @property
    def first(self) -> int:
        """Logical index of its first token in this step."""
        return self.seq_len - self.plan.query_len


@dataclass
class CpuStepPlan:
    """The step's virtual requests, the same for every layer."""

    query_rows: torch.Tensor  # (virtual queries,) step rows, virtual request by virtual request
    query_start_loc: torch.Tensor  # int32 (virtual requests + 1,)
    seq_lens: torch.Tensor  # int32 (virtual requests,)
    block_table: torch.Tensor  # int32 (virtual requests, blocks): scratch blocks
    # the context the virtual requests read: slots in the paged cache, and
    # where each goes in the scratch cache
    cache_slots: torch.Tensor
    scratch_slots: torch.Tensor
    isolated_rows: torch.Tensor  # step rows that see only themselves
    isolated_slots: torch.Tensor  # their own slots in the paged cache
    num_blocks: int
    scheduler_metadata: torch.Tensor | None = None
    scratch: torch.Tensor | None = None

    @classmethod
    def build(cls, requests: Sequence[StepRequest], block_size: int) -> CpuStepPlan:
        """The virtual requests of these requests, whose keys and values are
        stored in a paged cache of `block_size`-token blocks. Plain Python
        int arrays until the tensors at the end: made once per step, it ran
        tensor operations per block before, which cost 4 times as much
        (loadtest.bench.mis_kernel's plan)."""
        rows = _ints()
        starts, seq_lens, tables = [0], [], []
        cache_slots, isolated_rows, isolated_slots = [], [], []
        scratch_slots = _ints()  # where each of cache_slots goes in the scratch cache
        next_block = 0

        def new_blocks(tokens: int) -> list[int]:
            nonlocal next_block
            count = -(-tokens // BLOCK_SIZE)
            blocks = list(range(next_block, next_block + count))
            next_block += count
            return blocks

        def add(query_rows: range, seq_len: int, table: list[int]) -> None:
            rows.extend(query_rows)
            starts.append(len(rows))
            seq_lens.append(seq_len)
            tables.append(table)

        # scratch block of each whole block of context already written this step,
        # by its cache slots: requests behind the same cached prefix share them
        written: dict[tuple[int, ...], int] = {}

        for request in requests:
            plan, first, base = request.plan, request.first, request.query_start
            cache_blocks = request.blocks.tolist()
            logical = _ints()  # this request's context indices to copy, in order

            def write(indices: Sequence[int], scratch_block: int) -> None:
                logical.extend(indices)
                scratch_slots.extend(range(scratch_block * BLOCK_SIZE, scratch_block * BLOCK_SIZE + len(indices)))

            def run_key(start: int) -> tuple[int, ...]:
                """The cache slots of context [start, start + BLOCK_SIZE), named by
                the first slot in each cache block they touch (slots run on within a block)."""
                positions = [start, *range(start - start % block_size + block_size, start + BLOCK_SIZE, block_size)]
                return tuple(cache_blocks[p // block_size] * block_size + p % block_size for p in positions)

            def shared_blocks(length: int) -> list[int]:
                """Scratch blocks holding the request's context [0, length)."""
                blocks = []
                for start in range(0, length, BLOCK_SIZE):
                    end = min(start + BLOCK_SIZE, length)
                    key = run_key(start) if end - start == BLOCK_SIZE else None
                    if key is not None and key in written:
                        blocks.append(written[key])
                        continue
                    (block,) = new_blocks(end - start)
                    write(range(start, end), block)
                    if key is not None:
                        written[key] = block
                    blocks.append(block)
                return blocks

            visibles = [visible for _, _, _, visible in plan.blocks]
            shared = shared_blocks(max([plan.prefix_context, *(v - v % BLOCK_SIZE for v in visibles)]))
            if plan.prefix_rows is not None:
                begin, end = plan.prefix_rows
                add(range(base + begin, base + end), plan.prefix_context,
                    shared[: -(-plan.prefix_context // BLOCK_SIZE)])
            for begin, end, lo, visible in plan.blocks:
                aligned = visible - visible % BLOCK_SIZE
                own = [*range(aligned, visible), *range(lo, first + end)]
                blocks = new_blocks(len(own))
                for index, block in enumerate(blocks):
                    write(own[index * BLOCK_SIZE: (index + 1) * BLOCK_SIZE], block)
                add(range(base + begin, base + end), visible + first + end - lo,
                    shared[: aligned // BLOCK_SIZE] + blocks)
            if logical:
                cache_slots.append(request.slots(_tensor(logical), block_size))
            if plan.isolated_rows.numel():
                isolated_rows.append(plan.isolated_rows.cpu() + base)
                isolated_slots.append(request.slots(plan.isolated_rows.cpu() + first, block_size))
        width = max((len(table) for table in tables), default=1)
        table = _ints()
        for blocks in tables:
            table.extend(blocks)
            table.extend([0] * (width - len(blocks)))

        def joined(parts: list[torch.Tensor]) -> torch.Tensor:
            return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.long)

        return cls(_tensor(rows), torch.tensor(starts, dtype=torch.int32), torch.tensor(seq_lens, dtype=torch.int32),
                   _tensor(table).to(torch.int32).view(len(tables), width), joined(cache_slots),
                   _tensor(scratch_slots), joined(isolated_rows), joined(isolated_slots), next_block)

    def attend(self, query: torch.Tensor, cache_rows: torch.Tensor, scale: float, out: torch.Tensor) -> None:
        """Write the step's attention output into `out` (tokens, heads, head).
        `cache_rows` is the layer's paged cache as one row per slot (slots,
        kv_heads, 2 * head): keys, then values (attention.token_rows)."""
        from vllm import _custom_ops as ops
        from vllm.v1.attention.backends.cpu_attn import _get_attn_isa

        heads, head = query.shape[1], query.shape[2]
        kv_heads, dtype = cache_rows.shape[1], cache_rows.dtype
        isa = _get_attn_isa(dtype, BLOCK_SIZE, head)
        if len(self.query_rows):
            if self.scratch is None:  # the first layer of the step: one scratch cache for all layers
                # zeroed: the kernel reads whole blocks and masks what lies past a
                # request's length, so unwritten slots must hold numbers (as vLLM's
                # own cache, zeroed when it is allocated); later layers leave finite ones
                self.scratch = torch.zeros((self.num_blocks, kv_heads, 2 * BLOCK_SIZE, head), dtype=dtype)
                self.scheduler_metadata = ops.cpu_attn_get_scheduler_metadata(
                    num_reqs=len(self.seq_lens), num_heads=heads, num_kv_heads=kv_heads, head_dim=head,
                    seq_lens=self.seq_lens, dtype=query.dtype, query_start_loc=self.query_start_loc,
                    causal=True, sliding_window_size=-1, isa=isa, enable_kv_split=False)
            key_cache, value_cache = self.scratch.chunk(2, dim=2)
            entries = cache_rows.index_select(0, self.cache_slots)  # (tokens, kv_heads, 2 * head)
            ops.cpu_attn_reshape_and_cache(entries[..., :head].contiguous(), entries[..., head:].contiguous(),
                                           key_cache, value_cache, self.scratch_slots, isa)
            attended = torch.empty((len(self.query_rows), heads, head), dtype=query.dtype)
            ops.cpu_attention_with_kv_cache(
                query=query.index_select(0, self.query_rows).contiguous(), key_cache=key_cache,
                value_cache=value_cache, output=attended, query_start_loc=self.query_start_loc,
                seq_lens=self.seq_lens, scale=scale, causal=True, alibi_slopes=None, sliding_window=-1,
                block_table=self.block_table, softcap=0.0, scheduler_metadata=self.scheduler_metadata, s_aux=None)
            out.index_copy_(0, self.query_rows, attended.to(out.dtype))
        if len(self.isolated_rows):
            values = cache_rows.index_select(0, self.isolated_slots)[..., head:]  # (rows, kv_heads, head)
            if heads != kv_heads:
                values = values.repeat_interleave(heads // kv_heads, dim=1)
            out[self.isolated_rows] = values.to(out.dtype)
