"""The serving engine: vLLM's AsyncLLM in-process, one request per candidate or per group.

Per candidate (default): every candidate prompt goes to vLLM as its own
request, all at once; vLLM's scheduler batches them and its automatic prefix
caching computes each shared prefix once (the first request of a group
computes it, later ones hit the cache block by block). Each request
generates one token and asks for the logprobs of exactly the label ids
(`logprob_token_ids`).

Multi-item (`VllmOptions.multi_item`): one vLLM pooling request per group
(or per run of its candidates that fits the model's length) holding the
prefix and every candidate, scored by Brew's vLLM plugin
(brew.engines.vllm_multi_item); the same label log-probabilities, one
request's client-side cost instead of one per candidate.

Facts of vLLM 0.32 this module relies on (read in its source):
- Logprobs are fp32 full-vocabulary log-softmax of the raw logits: with the
  default `logprobs_mode="raw_logprobs"` the sampler computes
  `logits.log_softmax(dim=-1, dtype=torch.float32)` before any temperature or
  penalty (vllm/v1/sample/sampler.py), then gathers the requested ids.
- The answer is `output.outputs[0].logprobs[0]`: a dict token id -> Logprob
  holding the requested ids plus the sampled token.
- `AsyncLLM.add_request` registers the request with the output processor
  before its first await and returns a collector; the output handler task
  puts the finished RequestOutput (with `RequestOutputKind.FINAL_ONLY`, the
  only one) or an error such as EngineDeadError into it.
  `AsyncLLM.abort(ids)` takes the ids the caller chose (external ids: vLLM
  appends a random suffix internally), aborts them in the output processor
  and the engine core, and ignores ids already finished; so a cancelled or
  failed `score` aborts all its ids, wherever each one was.
- On CPU, `kv_cache_memory_bytes` sizes the KV cache just as the legacy
  `VLLM_CPU_KVCACHE_SPACE` variable does (the variable, if set, overrides it;
  it only takes whole GiB), so no environment variable is changed here.
- vLLM caches prefixes in whole KV blocks, and its CPU backend defaults to
  128-token blocks: a shared prefix shorter than a block is never cached,
  and up to a block of every prefix is recomputed per candidate. Scoring
  lives on shared prefixes, so on CPU the default here is 32 tokens (the
  smallest size the CPU backend prefers); on GPU vLLM's default (16) stays.
- A prompt passed as a rendered `TokensInput` (`vllm.inputs.engine.
  tokens_input`, a dict with `"type": "token"`) is turned into an engine
  request synchronously on the calling thread (`AsyncLLM.add_request` calls
  `input_processor.process_inputs`); a bare `TokensPrompt` goes through
  `process_inputs_async` instead, one hop to the renderer's thread pool and
  back per candidate, which cost Brew's server more CPU than the rest of
  vLLM's client path.
- `process_inputs` copies the SamplingParams of every request
  (`params.clone()`): a deep copy unless `skip_clone` is set, then a shallow
  one. Brew's params are built once per label set and never changed after,
  so a shallow copy is enough.
- The engine core runs in a spawned process: scripts that start this engine
  need an `if __name__ == "__main__":` guard.
- A dead engine is seen without sending it a request:
  `AsyncLLM.check_health()` raises EngineDeadError when `errored`, which
  is `engine_core.resources.engine_dead or not is_running` (the output
  handler task ended); it reads flags only, no call to the engine process.
  `engine_dead` is set by a daemon thread of the client
  (`MPClientEngineMonitor`, vllm/v1/engine/core_client.py) that waits on
  the engine-core processes' sentinels, the moment one exits, so a killed
  engine core is reported within a watchdog tick even when idle
  (tests/e2e/test_engine_restart.py kills it). A dead model worker of a
  multiprocess executor is reported to the engine core by its worker
  monitor (vllm/v1/executor/multiproc_executor.py), which sends
  ENGINE_CORE_DEAD to the client (`validate_alive` sets `engine_dead`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import uuid
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from vllm import SamplingParams
from vllm.engine.arg_utils import AsyncEngineArgs
from vllm.inputs.engine import tokens_input
from vllm.platforms import current_platform
from vllm.sampling_params import RequestOutputKind
from vllm.v1.engine.async_llm import AsyncLLM
from vllm.v1.engine.output_processor import RequestOutputCollector

from brew.engines.base import CallerOutcome, CallerWork, score_callers_concurrently, score_one_caller
from brew.engines.options import VllmOptions
from brew.engines.vllm_multi_item import requests as multi_item_requests
from brew.types import CandidateLogprobs, GroupResult, ScoringGroup

_GIB = 1 << 30
# On CPU this is the share of the NUMA node's memory vLLM reserves; vLLM's
# default (0.92) refuses to start next to anything else.
CPU_MEMORY_UTILIZATION = 0.3
# KV block size on CPU, where vLLM's own default (128) wastes shared prefixes.
CPU_BLOCK_SIZE = 32


def engine_args(options: VllmOptions, model_dir: str | Path, *, dtype: str, on_cpu: bool) -> AsyncEngineArgs:
    """The AsyncEngineArgs for these options; unset ones keep vLLM's defaults."""
    settings = asdict(options)
    kv_cache_gib = settings.pop("kv_cache_gib")
    multi_item = settings.pop("multi_item")
    if settings["gpu_memory_utilization"] is None and on_cpu:
        settings["gpu_memory_utilization"] = CPU_MEMORY_UTILIZATION
    if settings["block_size"] is None and on_cpu:
        settings["block_size"] = CPU_BLOCK_SIZE
    return AsyncEngineArgs(
        model=str(model_dir),
        dtype=dtype,
        kv_cache_memory_bytes=int(kv_cache_gib * _GIB),
        enable_prefix_caching=True,
        # Token ids in, logprobs out: vLLM never needs the tokenizer.
        skip_tokenizer_init=True,
        disable_log_stats=True,
        **(multi_item_requests.engine_overrides(model_dir) if multi_item else {}),
        **{name: value for name, value in settings.items() if value is not None},
    )


@functools.lru_cache(maxsize=256)
def _sampling_params(label_ids: tuple[int, ...]) -> SamplingParams:
    """One greedy token, with the logprobs of exactly the label ids. Built
    once per label set and shared by its requests: vLLM copies it per
    request, shallowly (`skip_clone`, see the module docstring)."""
    return SamplingParams(max_tokens=1, temperature=0.0, logprob_token_ids=list(label_ids), detokenize=False,
                          output_kind=RequestOutputKind.FINAL_ONLY, skip_clone=True)


class VllmEngine:
    """ScoringEngine over an in-process vLLM AsyncLLM."""

    def __init__(self, llm: AsyncLLM, model_name: str, *, multi_item: bool = False) -> None:
        self._llm = llm
        self._model_name = model_name
        self._multi_item = multi_item

    @classmethod
    async def start(cls, model_dir: str | Path, options: VllmOptions | None = None, *,
                    dtype: str = "float32") -> VllmEngine:
        """Start vLLM (tens of seconds on CPU) on a worker thread: AsyncLLM can
        be built outside the event loop and starts its output task lazily."""
        args = engine_args(options or VllmOptions(), model_dir, dtype=dtype, on_cpu=current_platform.is_cpu())
        llm = await asyncio.to_thread(AsyncLLM.from_engine_args, args)
        return cls(llm, Path(model_dir).name, multi_item=(options or VllmOptions()).multi_item)

    @property
    def model_name(self) -> str:
        return self._model_name

    @property
    def max_model_len(self) -> int:
        """The longest prompt of one candidate: vLLM's limit, less what a packed
        request adds in multi-item mode."""
        overhead = multi_item_requests.OVERHEAD_TOKENS if self._multi_item else 0
        return int(self._llm.model_config.max_model_len) - overhead

    @property
    def kv_block_size(self) -> int:
        """Tokens per KV cache block: prefixes are cached in whole blocks."""
        return int(self._llm.vllm_config.cache_config.block_size)

    @property
    def num_unfinished_requests(self) -> int:
        """Requests vLLM still holds: zero when idle, also after a cancelled score."""
        return self._llm.get_num_unfinished_requests()

    async def _final_output(self, request_id: str, collector: RequestOutputCollector,
                            label_ids: Sequence[int], prompt_tokens: int) -> CandidateLogprobs:
        """The label log-probabilities of one finished request."""
        output = await collector.get()  # FINAL_ONLY: one output, the finished one
        if not output.outputs or not output.outputs[0].logprobs:
            raise RuntimeError(f"vLLM returned no logprobs for request {request_id}")
        logprobs = output.outputs[0].logprobs[0]  # first generated position: token id -> Logprob
        return CandidateLogprobs(
            label_logprobs=tuple(logprobs[token_id].logprob for token_id in label_ids),
            prompt_tokens=prompt_tokens,
            cached_tokens=output.num_cached_tokens or 0,
        )

    async def score_batch(self, batch: Sequence[CallerWork]) -> list[CallerOutcome]:
        """Every caller's requests at once; vLLM schedules them into the same
        steps, and a caller that leaves aborts only its own requests."""
        score = self._score_groups_packed if self._multi_item else self._score_groups
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
                await asyncio.shield(self._llm.abort(request_ids))
            raise

    async def _score_groups(self, groups: Sequence[ScoringGroup]) -> list[GroupResult]:
        """One vLLM request per candidate, all added before any is awaited,
        so vLLM schedules them into the same steps. Each request is added
        and read directly (`add_request` and its output collector), not
        through `generate()`'s async generator and a task per candidate:
        that machinery cost more of the server's CPU than the requests'
        own processing. So the aborts are this method's to do: any failure
        or cancellation aborts all its requests (an id already finished is
        a no-op)."""
        jobs = [
            (uuid.uuid4().hex, group.prompt_ids(index), group.label_ids)
            for group in groups
            for index in range(group.num_candidates)
        ]
        async with self._aborted_on_failure([request_id for request_id, _, _ in jobs]):
            added = []
            for request_id, ids, label_ids in jobs:
                collector = await self._llm.add_request(request_id, tokens_input(list(ids)),
                                                        _sampling_params(tuple(label_ids)))
                added.append((request_id, collector, label_ids, len(ids)))
            outputs = iter([await self._final_output(*request) for request in added])
        return [GroupResult(tuple(next(outputs) for _ in range(group.num_candidates))) for group in groups]

    async def _score_groups_packed(self, groups: Sequence[ScoringGroup]) -> list[GroupResult]:
        """One vLLM request per group (per run of candidates that fits the
        model), all added before any is awaited; aborts as `_score_groups`."""
        limit = int(self._llm.model_config.max_model_len)
        jobs = [
            (uuid.uuid4().hex, position, run)
            for position, group in enumerate(groups)
            for run in multi_item_requests.split_candidates(group, limit)
        ]
        async with self._aborted_on_failure([request_id for request_id, _, _ in jobs]):
            added = []
            for request_id, position, run in jobs:
                group = groups[position]
                prompt = tokens_input(multi_item_requests.packed_prompt(group, run))
                params = multi_item_requests.pooling_params(tuple(group.label_ids))
                added.append((position, run, await self._llm.add_request(request_id, prompt, params)))
            results: list[list[CandidateLogprobs]] = [[] for _ in groups]
            for position, run, collector in added:
                output = await collector.get()  # FINAL_ONLY: the finished output
                results[position].extend(multi_item_requests.candidate_results(
                    groups[position], run, output.outputs.data, output.num_cached_tokens or 0))
        return [GroupResult(tuple(candidates)) for candidates in results]

    async def check_health(self) -> None:
        """EngineDeadError once vLLM's engine core has died (see the module docstring)."""
        await self._llm.check_health()

    async def close(self) -> None:
        # Stop vLLM's output handler first: left running, it sees the engine
        # process exit and logs a spurious EngineDeadError traceback.
        handler = getattr(self._llm, "output_handler", None)
        if handler is not None and not handler.done():
            handler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await handler
        # shutdown() joins the engine process: keep that off the event loop.
        await asyncio.to_thread(self._llm.shutdown)
