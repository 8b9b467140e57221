"""Engine settings: typed, validated, declared once, importable without vLLM.

The server's configuration, `brew score`, the CLI flags and the benchmarks all
build these (brew.settings reads the declarations); only the engine module
that uses them imports its framework (vLLM takes seconds to import and may
not be installed where only the torch engines run).
"""

from __future__ import annotations

from dataclasses import dataclass

from brew.settings import Settings, setting

DEFAULT_MAX_FORWARD_CANDIDATES = 64
DEFAULT_MAX_BATCH_TOKENS = 16384
DEFAULT_BUCKET_TOKENS = 128
# The attention kernels the torch engines run exactly, any mask included
# (brew.engines.torch_multi_item.AttentionKernel).
ATTENTION_KERNELS = ("sdpa", "eager", "flex_attention")
# The weights' dtypes every engine takes (auto: the checkpoint's). On the
# torch engines the head stays fp32 (brew.engines.loading.Fp32Head).
DTYPES = ("float32", "bfloat16", "float16", "auto")


@dataclass(frozen=True)
class VllmOptions(Settings):
    """How to start vLLM (`[vllm]`). None means vLLM's own default.

    One model over several GPUs: `tensor_parallel_size` shards it across
    GPUs, `data_parallel_size` runs that many engine copies inside the
    replica, balanced by vLLM (not by member: more replicas behind `brew
    cluster` keep prefix-cache affinity instead). Both go to vLLM's
    AsyncEngineArgs as they are. Prefix caching is always on: it is what makes
    scoring many candidates behind one prefix cheap. The dtype and multi-item
    scoring are engine-wide settings (EngineSettings).
    """

    max_model_len: int | None = setting(
        None, ge=1, help="vLLM: longest prompt in tokens (not set: the checkpoint's max_position_embeddings)")
    kv_cache_gib: float = setting(1.0, gt=0, help="vLLM on CPU: GiB of KV cache (VLLM_CPU_KVCACHE_SPACE)")
    gpu_memory_utilization: float | None = setting(
        None, gt=0, le=1, help="vLLM: share of device memory for weights and KV cache (not set: a small share "
                               "on CPU, vLLM's default on GPU)")
    tensor_parallel_size: int = setting(1, ge=1, help="vLLM: GPUs one model is sharded over")
    data_parallel_size: int = setting(1, ge=1, help="vLLM: engine copies inside this replica")
    enforce_eager: bool = setting(True, help="vLLM: no CUDA graphs / compilation (faster start)")
    max_num_seqs: int | None = setting(None, ge=1, help="vLLM: sequences per engine step")
    max_num_batched_tokens: int | None = setting(None, ge=1, help="vLLM: tokens per engine step")
    block_size: int | None = setting(None, ge=1, help="vLLM: KV cache block size in tokens (not set: 32 on "
                                                      "CPU, vLLM's default on GPU)")


@dataclass(frozen=True)
class TorchOptions(Settings):
    """How the transformers engine (`torch`) runs its forward passes (`[torch]`).

    Per-group path (default): each group's prefix runs once, its KV cache is
    reused by the candidate rows; `max_forward_candidates` caps the candidate
    rows of one forward pass (a group with more is split into several passes
    behind its one prefix).

    Multi-item scoring (EngineSettings.multi_item, brew.engines.torch_multi_item):
    the groups of the whole engine batch (every caller's) that the packing
    rule packs (brew.engines.multi_item_rule) go into as few forward passes
    as `max_batch_tokens` (rows x length, pads included) allows, candidates
    isolated by the attention mask; the others take the per-group path.
    Both budgets bound activation memory, not batching across callers: that
    is the dispatcher's `max_batch_candidates`.

    `attention`: on a GPU, "flex_attention" lets multi-item passes skip the
    blocks the mask rules out (BENCHMARKS.md, section 8); it is refused on CPU.

    `compile` (brew.engines.compiled): the packed passes run a
    `torch.compile`d decoder over shapes padded to `bucket_tokens`.
    """

    max_forward_candidates: int = setting(DEFAULT_MAX_FORWARD_CANDIDATES, ge=1,
                                          help="torch, per-group path: candidate rows per forward pass")
    max_batch_tokens: int = setting(DEFAULT_MAX_BATCH_TOKENS, ge=1,
                                    help="torch, multi-item: token slots (rows x length) per packed forward pass")
    attention: str | None = setting(None, choices=ATTENTION_KERNELS,
                                    help="torch: attention kernel (not set: the checkpoint's, sdpa)")
    compile: bool = setting(False, help="torch, multi-item: torch.compile the packed forward pass "
                                        "(CUDA graphs on CUDA) over bucketed shapes; each shape's first "
                                        "pass compiles")
    bucket_tokens: int = setting(DEFAULT_BUCKET_TOKENS, ge=1,
                                 help="torch, compile: packed passes are padded to a multiple of this many "
                                      "tokens, so few shapes are compiled")
