"""Engine options: typed, validated, and importable without vLLM.

The server's configuration, the CLI and the benchmarks all build these; only
the engine module that uses them imports its framework (vLLM takes seconds to
import and may not be installed where only the torch engines run).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

DEFAULT_MAX_FORWARD_CANDIDATES = 64
DEFAULT_MAX_BATCH_TOKENS = 16384
# Measured on the CPU with the dense SDPA kernel (BENCHMARKS.md, scaling): a
# group packed alone beat the per-group path up to about 3,000 tokens and lost
# beyond, where a dense mask's length-squared attention outweighs the saving.
DEFAULT_MAX_ROW_TOKENS = 3072
# The attention kernels the torch engines run exactly, any mask included
# (brew.engines.multi_item.AttentionKernel).
ATTENTION_KERNELS = ("sdpa", "eager", "flex_attention")


@dataclass(frozen=True)
class VllmOptions:
    """How to start vLLM. None means vLLM's own default.

    `gpu_memory_utilization` None means a small share on CPU (see
    brew.engines.vllm_engine) and vLLM's default on GPU; `block_size` None
    means 32 tokens on CPU and vLLM's default on GPU. One model over several
    GPUs: `tensor_parallel_size` shards it across GPUs, `data_parallel_size`
    runs that many engine copies inside the replica, balanced by vLLM (not by
    member: more replicas behind `brew cluster` keep prefix-cache affinity
    instead). Both go to vLLM's AsyncEngineArgs as they are. Prefix caching is always
    on: it is what makes scoring many candidates behind one prefix cheap. The
    dtype is the engine-wide setting (`create_engine(dtype=...)`).

    `multi_item`: one vLLM request per (member, task) group instead of one per
    candidate (brew.engines.vllm_multi_item): candidates isolated by the
    attention rule, label log-probabilities read at every candidate's end.
    """

    max_model_len: int | None = None
    kv_cache_gib: float = 1.0
    gpu_memory_utilization: float | None = None
    tensor_parallel_size: int = 1
    data_parallel_size: int = 1
    quantization: str | None = None
    enforce_eager: bool = True
    max_num_seqs: int | None = None
    max_num_batched_tokens: int | None = None
    block_size: int | None = None
    multi_item: bool = False

    def __post_init__(self) -> None:
        if self.kv_cache_gib <= 0:
            raise ValueError(f"kv_cache_gib must be positive, got {self.kv_cache_gib}")
        if self.gpu_memory_utilization is not None and not 0 < self.gpu_memory_utilization <= 1:
            raise ValueError(f"gpu_memory_utilization must be in (0, 1], got {self.gpu_memory_utilization}")
        for name in ("tensor_parallel_size", "data_parallel_size", "max_model_len", "max_num_seqs",
                     "max_num_batched_tokens", "block_size"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be at least 1, got {value}")


@dataclass(frozen=True)
class TorchOptions:
    """How the transformers engine (`torch`) runs its forward passes.

    Per-group path (default): each group's prefix runs once, its KV cache is
    reused by the candidate rows; `max_forward_candidates` caps the candidate
    rows of one forward pass (a group with more is split into several passes
    behind its one prefix).

    `multi_item`: exact multi-item scoring (brew.engines.multi_item): the
    whole engine batch (every caller's groups) packed into as few forward
    passes as `max_batch_tokens` (rows x length, pads included) allows,
    candidates isolated by the attention mask. A group longer than
    `max_row_tokens` (its prefix plus every candidate) takes the per-group
    path instead: dense attention kernels pay length squared per row, masked
    or not. Both budgets bound activation memory, not batching across
    callers: that is the dispatcher's `max_batch_candidates`.

    `attention`: the attention kernel the model runs with, one of
    ATTENTION_KERNELS; None keeps the checkpoint's (transformers' default,
    sdpa). On a GPU, "flex_attention" lets multi-item passes skip the blocks
    the mask rules out (BENCHMARKS.md, section 8); it is refused on CPU.
    """

    max_forward_candidates: int = DEFAULT_MAX_FORWARD_CANDIDATES
    multi_item: bool = False
    max_batch_tokens: int = DEFAULT_MAX_BATCH_TOKENS
    max_row_tokens: int = DEFAULT_MAX_ROW_TOKENS
    attention: str | None = None

    def __post_init__(self) -> None:
        if self.max_forward_candidates < 1:
            raise ValueError(f"max_forward_candidates must be at least 1, got {self.max_forward_candidates}")
        for name in ("max_batch_tokens", "max_row_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.attention is not None and self.attention not in ATTENTION_KERNELS:
            raise ValueError(f"attention must be one of {', '.join(ATTENTION_KERNELS)}, got {self.attention!r}")


def option_names(options: type) -> frozenset[str]:
    """The settings an options class takes, as a config section spells them."""
    return frozenset(f.name for f in fields(options))
