"""The serving engine: vLLM's engine core, one request per candidate or per group.

Per candidate (`multi_item` off): every candidate prompt goes to vLLM as its own
request, all at once; vLLM's scheduler batches them and its automatic prefix
caching computes each shared prefix once (the first request of a group
computes it, later ones hit the cache block by block). Each request
generates one token and asks for the logprobs of exactly the label ids
(`logprob_token_ids`).

Multi-item (`multi_item` on or auto, EngineSettings.multi_item): vLLM runs
Brew's pooling model (brew.engines.vllm_multi_item), and each group takes
the path the packing rule gives it (brew.engines.multi_item_rule, the same
rule as the torch engine's). A packed group is one pooling request (or one
per run of its candidates that fits the model's length) holding the prefix
and every candidate: the same label log-probabilities, one request's cost
instead of one per candidate. Any other group is one pooling request per
candidate, its plain prompt read at its last token
(`requests.plain_prompt`), the prefix served by the prefix cache. So one
engine serves both paths, and `auto` chooses per group.

`auto` runs the pooling model where Brew's multi-item attention runs on
vLLM's own CPU kernel (vLLM's CPU build, a head size that kernel takes:
`packs_fast_here`) and the checkpoint is one the pooling model wraps;
elsewhere (a GPU, where the backend is plain torch and vLLM's own kernels
are much faster; another architecture) `auto` is vLLM's per-candidate
path. `on` runs the pooling model wherever it can, and refuses a
checkpoint it cannot run.

Facts of vLLM 0.32 this module relies on (read in its source):
- Logprobs are fp32 full-vocabulary log-softmax of the raw logits: with the
  default `logprobs_mode="raw_logprobs"` the sampler computes
  `logits.log_softmax(dim=-1, dtype=torch.float32)` before any temperature or
  penalty (vllm/v1/sample/sampler.py), then gathers the requested ids.
- The LM head runs in fp32 with `hf_overrides={"head_dtype": "float32"}`:
  `ModelConfig.head_dtype` reads it from the HF config, and
  `LogitsProcessor._apply_head` (vllm/model_executor/layers/logits_processor.py)
  casts the hidden states and the head's weight to it when it differs from
  the model's dtype (an unquantized head only; Brew's checkpoints and vLLM's
  fp8 leave lm_head unquantized). In fp32 it changes nothing.
- An int8 W8A8 compressed-tensors checkpoint (`brew quantize`) runs on the
  x86 CPU build: `CompressedTensorsW8A8Int8` selects
  `CPUInt8ScaledMMLinearKernel` (vllm/model_executor/kernels/linear/scaled_mm/cpu.py),
  which without AMX takes its oneDNN path: `onednn_scaled_int8_quant`
  quantizes each token's activations at run time (dynamic, symmetric:
  `_C.dynamic_scaled_int8_quant`) and
  `onednn_scaled_mm` multiplies int8 by int8 with the per-channel weight
  scales. Both are in the AVX2 build's `_C_AVX2` library.
- Requests go to the engine core through Brew's own client
  (brew.engines.vllm_core_client, which lists the facts it relies on), not
  AsyncLLM's per-request front end: that front end cost Brew's server four
  times the CPU per candidate of the rest of the vLLM path. A group's
  requests travel in one engine-core message (brew.engines.vllm_core_batch),
  added by the engine core as its own ADD path adds one.
- A finished one-token request's `new_logprobs` row holds the sampled
  token's id and log-probability first, then exactly the requested ids
  (`Sampler.gather_specific_token_logprobs`); `prefill_stats` of its output
  says how many prompt tokens the prefix cache served.
- On CPU, `kv_cache_memory_bytes` sizes the KV cache just as the legacy
  `VLLM_CPU_KVCACHE_SPACE` variable does (the variable, if set, overrides it;
  it only takes whole GiB), so no environment variable is changed here.
- vLLM caches prefixes in whole KV blocks, and its CPU backend defaults to
  128-token blocks: a shared prefix shorter than a block is never cached,
  and up to a block of every prefix is recomputed per candidate. Scoring
  lives on shared prefixes, so on CPU the default here is 32 tokens (the
  smallest size the CPU backend prefers); on GPU vLLM's default (16) stays.
- vLLM copies the SamplingParams of every request it processes
  (`params.clone()`, shallow with `skip_clone`); Brew's are built once per
  label set, never changed, and processed once (the client's template).
- The engine core runs in its own process, spawned on CPU (vLLM's CPU
  platform sets VLLM_WORKER_MULTIPROC_METHOD=spawn; on GPU vLLM forks
  unless CUDA is already initialised): scripts that start this engine need
  an `if __name__ == "__main__":` guard.
- A dead engine is seen without sending it a request (the client's
  `check_health` reads `engine_core.resources.engine_dead`, set by a daemon
  thread of vLLM's client, `MPClientEngineMonitor` in
  vllm/v1/engine/core_client.py, the moment an engine-core process exits;
  tests/e2e/test_engine_restart.py kills it). A dead model worker of a
  multiprocess executor is reported to the engine core by its worker
  monitor (vllm/v1/executor/multiproc_executor.py), which sends
  ENGINE_CORE_DEAD to the client (`validate_alive` sets `engine_dead`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path

from brew.engines.vllm_version import require_supported_vllm

# Before vLLM's internals are imported: on another vLLM release they may not
# even import, and `brew serve` then says in one line what to install.
require_supported_vllm()

from vllm import SamplingParams  # noqa: E402
from vllm.engine.arg_utils import AsyncEngineArgs  # noqa: E402
from vllm.platforms import current_platform  # noqa: E402
from vllm.sampling_params import RequestOutputKind  # noqa: E402
from vllm.v1.engine import EngineCoreOutput  # noqa: E402
from vllm.v1.engine.async_llm import AsyncLLM  # noqa: E402

from brew.engines.base import CallerOutcome, CallerWork, score_callers_concurrently, score_one_caller
from brew.engines.options import VllmOptions
from brew.engines.multi_item_rule import GroupPath, MultiItemMode, PackingRule
from brew.engines.vllm_core_client import EngineCoreClient
from brew.engines.vllm_multi_item import requests as multi_item_requests
from brew.errors import EngineConfigError
from brew.quantization.schemes import FP8_ON_CPU, LoadScheme
from brew.types import CandidateLogprobs, GroupResult, ScoringGroup

_GIB = 1 << 30
# On CPU this is the share of the NUMA node's memory vLLM reserves; vLLM's
# default (0.92) refuses to start next to anything else.
CPU_MEMORY_UTILIZATION = 0.3
# KV block size on CPU, where vLLM's own default (128) wastes shared prefixes.
CPU_BLOCK_SIZE = 32
# The LM head's matmul in fp32 whatever the weights' dtype (ModelConfig.head_dtype).
FP32_HEAD = {"head_dtype": "float32"}


def engine_args(options: VllmOptions, model_dir: str | Path, *, dtype: str, on_cpu: bool,
                pooling: bool = False, quantization: str | None = None) -> AsyncEngineArgs:
    """The AsyncEngineArgs for these options; unset ones keep vLLM's defaults.
    `pooling` starts vLLM as Brew's pooling model (multi-item scoring);
    `quantization` fp8 is vLLM's own fp8 at load, on a GPU only. The LM head
    runs in fp32 whatever the model's dtype (`head_dtype`, see the module
    docstring)."""
    if quantization is not None and LoadScheme(quantization) is LoadScheme.FP8 and on_cpu:
        raise EngineConfigError(f"quantization fp8 on vLLM's CPU build: {FP8_ON_CPU}")
    settings = asdict(options)
    kv_cache_gib = settings.pop("kv_cache_gib")
    if settings["gpu_memory_utilization"] is None and on_cpu:
        settings["gpu_memory_utilization"] = CPU_MEMORY_UTILIZATION
    if settings["block_size"] is None and on_cpu:
        settings["block_size"] = CPU_BLOCK_SIZE
    overrides = multi_item_requests.engine_overrides(model_dir) if pooling else {}
    hf_overrides = {**FP32_HEAD, **overrides.pop("hf_overrides", {})}
    if quantization is not None:
        settings["quantization"] = LoadScheme(quantization).value
    return AsyncEngineArgs(
        model=str(model_dir),
        dtype=dtype,
        hf_overrides=hf_overrides,
        kv_cache_memory_bytes=int(kv_cache_gib * _GIB),
        enable_prefix_caching=True,
        # Token ids in, logprobs out: vLLM never needs the tokenizer.
        skip_tokenizer_init=True,
        disable_log_stats=True,
        **overrides,
        **{name: value for name, value in settings.items() if value is not None},
    )


def uses_pooling_model(multi_item: MultiItemMode, model_dir: str | Path, *, on_cpu: bool) -> bool:
    """Whether vLLM runs Brew's pooling model: always with multi_item on;
    with auto where its attention runs on vLLM's CPU kernel and it can run
    this checkpoint (see the module docstring); never with off."""
    if multi_item is MultiItemMode.ON:
        return True
    return multi_item is MultiItemMode.AUTO and on_cpu and multi_item_requests.packs_fast_here(model_dir)


@functools.lru_cache(maxsize=256)
def _sampling_params(label_ids: tuple[int, ...]) -> SamplingParams:
    """One greedy token, with the logprobs of exactly the label ids. Built
    once per label set and shared by its requests: vLLM copies it per
    request, shallowly (`skip_clone`, see the module docstring)."""
    return SamplingParams(max_tokens=1, temperature=0.0, logprob_token_ids=list(label_ids), detokenize=False,
                          output_kind=RequestOutputKind.FINAL_ONLY, skip_clone=True)


class VllmEngine:
    """ScoringEngine over vLLM's engine core, started by AsyncLLM and fed by
    Brew's own client (brew.engines.vllm_core_client)."""

    def __init__(self, llm: AsyncLLM, client: EngineCoreClient, model_name: str, *,
                 multi_item: MultiItemMode = MultiItemMode.OFF, pooling: bool = False,
                 packing: PackingRule | None = None) -> None:
        self._llm = llm
        self._client = client
        self._model_name = model_name
        self._mode = MultiItemMode(multi_item)
        self._pooling = pooling
        self._packing = packing or PackingRule()
        # Called with each group's path, packed or one request per candidate (metrics).
        self.on_group_path: Callable[[GroupPath], None] | None = None

    @classmethod
    async def start(cls, model_dir: str | Path, options: VllmOptions | None = None, *,
                    dtype: str = "float32", multi_item: MultiItemMode = MultiItemMode.OFF,
                    packing: PackingRule | None = None, quantization: str | None = None) -> VllmEngine:
        """Start vLLM (tens of seconds on CPU) on a worker thread: AsyncLLM can
        be built outside the event loop."""
        on_cpu = current_platform.is_cpu()
        pooling = uses_pooling_model(MultiItemMode(multi_item), model_dir, on_cpu=on_cpu)
        args = engine_args(options or VllmOptions(), model_dir, dtype=dtype, on_cpu=on_cpu,
                           pooling=pooling, quantization=quantization)
        llm = await asyncio.to_thread(AsyncLLM.from_engine_args, args)
        try:
            client = await EngineCoreClient.attach(llm)
        except BaseException:
            await asyncio.to_thread(llm.shutdown)
            raise
        return cls(llm, client, Path(model_dir).name, multi_item=multi_item, pooling=pooling, packing=packing)

    def viewed_as(self, multi_item: MultiItemMode, packing: PackingRule | None = None) -> VllmEngine:
        """This running engine under another mode and packing rule, sharing its
        vLLM engine and prefix cache: benchmarks and tests compare the paths
        of one pooling model side by side (with `off`, a pooling engine sends
        every group as plain per-candidate requests). Closing either closes both."""
        return VllmEngine(self._llm, self._client, self._model_name, multi_item=multi_item,
                          pooling=self._pooling, packing=packing)

    @property
    def model_name(self) -> str:
        return self._model_name

    @property
    def max_model_len(self) -> int:
        """The longest prompt of one candidate: vLLM's limit for a prompt that
        generates one token, less what a packed request adds in multi-item
        mode."""
        if self._pooling:
            return self._client.max_prompt_len(generates=False) - multi_item_requests.OVERHEAD_TOKENS
        return self._client.max_prompt_len(generates=True)

    @property
    def kv_block_size(self) -> int:
        """Tokens per KV cache block: prefixes are cached in whole blocks."""
        return int(self._llm.vllm_config.cache_config.block_size)

    @property
    def num_unfinished_requests(self) -> int:
        """Requests vLLM still holds: zero when idle, also after a cancelled score."""
        return self._client.num_unfinished_requests

    async def score_batch(self, batch: Sequence[CallerWork]) -> list[CallerOutcome]:
        """Every caller's requests at once; vLLM schedules them into the same
        steps, and a caller that leaves aborts only its own requests."""
        score = self._score_groups_pooled if self._pooling else self._score_groups
        return await score_callers_concurrently(score, batch)

    async def score(self, groups: Sequence[ScoringGroup]) -> list[GroupResult]:
        return await score_one_caller(self, groups)

    @contextlib.asynccontextmanager
    async def _aborted_on_failure(self, request_ids: list[str]):
        """Abort all these requests if the block fails or is cancelled (an id
        already finished is a no-op), then re-raise the original error: an
        abort sent to a dead engine fails too."""
        try:
            yield
        except BaseException:
            with contextlib.suppress(Exception):
                await asyncio.shield(self._client.abort(request_ids))
            raise

    async def _score_groups(self, groups: Sequence[ScoringGroup]) -> list[GroupResult]:
        """One vLLM request per candidate, a group's in one engine-core
        message, every group sent before any is awaited, so vLLM schedules
        them into the same steps; any failure or cancellation aborts all."""
        client = self._client
        if self.on_group_path is not None:
            for _ in groups:
                self.on_group_path(GroupPath.PER_CANDIDATE)
        request_ids = [[client.new_request_id() for _ in range(group.num_candidates)] for group in groups]
        async with self._aborted_on_failure([request_id for ids in request_ids for request_id in ids]):
            sent = [
                client.submit(ids, group.prefix_ids, group.suffix_ids, _sampling_params(tuple(group.label_ids)))
                for group, ids in zip(groups, request_ids)
            ]
            results = []
            for group, future in zip(groups, sent):
                outputs = await future
                results.append(GroupResult(tuple(_label_logprobs(output, group, index)
                                                 for index, output in enumerate(outputs))))
            return results

    async def _score_groups_pooled(self, groups: Sequence[ScoringGroup]) -> list[GroupResult]:
        """Brew's pooling model: each group by the packing rule's path, packed
        (one request per run of candidates that fits the model) or one plain
        request per candidate; a group's requests in one engine-core message,
        all sent before any is awaited; aborts as `_score_groups`."""
        client = self._client
        prompts = [self._prompts(group) for group in groups]
        request_ids = [[client.new_request_id() for _ in group_prompts] for group_prompts in prompts]
        async with self._aborted_on_failure([request_id for ids in request_ids for request_id in ids]):
            sent = [
                client.submit(ids, (), [prompt for _, prompt in group_prompts],
                              multi_item_requests.pooling_params(tuple(group.label_ids)))
                for group, group_prompts, ids in zip(groups, prompts, request_ids)
            ]
            results = []
            for group, group_prompts, future in zip(groups, prompts, sent):
                candidates: list[CandidateLogprobs] = []
                for (run, _), output in zip(group_prompts, await future):
                    candidates.extend(multi_item_requests.candidate_results(
                        group, run, output.pooling_output, _cached_tokens(output)))
                results.append(GroupResult(tuple(candidates)))
            return results

    def _prompts(self, group: ScoringGroup) -> list[tuple[range, list[int]]]:
        """The requests of a group on the pooling model: the candidates each
        scores and its prompt, by the packing rule's path for this mode."""
        # Brew's backend computes only what the layout lets each token see: no dense mask
        path = self._packing.path(self._mode, group, dense_attention=False)
        if self.on_group_path is not None:
            self.on_group_path(path)
        if path is GroupPath.PER_CANDIDATE:
            return [(range(index, index + 1), multi_item_requests.plain_prompt(group, index))
                    for index in range(group.num_candidates)]
        return [(run, multi_item_requests.packed_prompt(group, run))
                for run in multi_item_requests.split_candidates(group, self._client.max_prompt_len(generates=False))]

    async def check_health(self) -> None:
        """EngineDeadError once vLLM's engine core has died (see
        brew.engines.vllm_core_client); reads flags only."""
        self._client.check_health()

    async def close(self) -> None:
        await self._client.close()
        # shutdown() joins the engine process: keep that off the event loop.
        await asyncio.to_thread(self._llm.shutdown)


def _cached_tokens(output: EngineCoreOutput) -> int:
    """Prompt tokens vLLM's prefix cache served (reported with the first output)."""
    stats = output.prefill_stats
    return stats.num_cached_tokens if stats is not None else 0


def _label_logprobs(output: EngineCoreOutput, group: ScoringGroup, index: int) -> CandidateLogprobs:
    """The label log-probabilities of one finished one-token request: its
    logprobs row holds the sampled token, then exactly the requested ids."""
    logprobs = output.new_logprobs
    if logprobs is None or len(logprobs.logprobs) == 0:
        raise RuntimeError(f"vLLM returned no logprobs for request {output.request_id}")
    by_id = dict(zip(logprobs.logprob_token_ids[0].tolist(), logprobs.logprobs[0].tolist()))
    return CandidateLogprobs(
        label_logprobs=tuple(by_id[token_id] for token_id in group.label_ids),
        prompt_tokens=len(group.prefix_ids) + len(group.suffix_ids[index]),
        cached_tokens=_cached_tokens(output),
    )
