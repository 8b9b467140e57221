"""The serving engine: vLLM's AsyncLLM in-process, one request per candidate.

Every candidate prompt goes to vLLM as its own request, all at once; vLLM's
scheduler batches them and its automatic prefix caching computes each shared
prefix once (the first request of a group computes it, later ones hit the
cache block by block). Each request generates one token and asks for the
logprobs of exactly the label ids (`logprob_token_ids`).

Facts of vLLM 0.32 this module relies on (read in its source):
- Logprobs are fp32 full-vocabulary log-softmax of the raw logits: with the
  default `logprobs_mode="raw_logprobs"` the sampler computes
  `logits.log_softmax(dim=-1, dtype=torch.float32)` before any temperature or
  penalty (vllm/v1/sample/sampler.py), then gathers the requested ids.
- The answer is `output.outputs[0].logprobs[0]`: a dict token id -> Logprob
  holding the requested ids plus the sampled token.
- `AsyncLLM.generate` aborts its request in vLLM when the iterating task is
  cancelled (`except (asyncio.CancelledError, GeneratorExit): await
  self.abort(...)` in vllm/v1/engine/async_llm.py). It cannot abort a request
  cancelled while still being added (its collector is not yet returned), so
  `score` also aborts all its request ids by external id when cancelled;
  aborting an id that is already gone is a no-op.
- On CPU, `kv_cache_memory_bytes` sizes the KV cache just as the legacy
  `VLLM_CPU_KVCACHE_SPACE` variable does (the variable, if set, overrides it;
  it only takes whole GiB), so no environment variable is changed here.
- vLLM caches prefixes in whole KV blocks, and its CPU backend defaults to
  128-token blocks: a shared prefix shorter than a block is never cached,
  and up to a block of every prefix is recomputed per candidate. Scoring
  lives on shared prefixes, so on CPU the default here is 32 tokens (the
  smallest size the CPU backend prefers); on GPU vLLM's default (16) stays.
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
import uuid
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from vllm import SamplingParams
from vllm.engine.arg_utils import AsyncEngineArgs
from vllm.inputs import TokensPrompt
from vllm.platforms import current_platform
from vllm.v1.engine.async_llm import AsyncLLM

from brew.engines.base import CallerOutcome, CallerWork, score_callers_concurrently, score_one_caller
from brew.engines.options import VllmOptions
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
        **{name: value for name, value in settings.items() if value is not None},
    )


def _sampling_params(label_ids: Sequence[int]) -> SamplingParams:
    """One greedy token, with the logprobs of exactly the label ids."""
    return SamplingParams(max_tokens=1, temperature=0.0, logprob_token_ids=list(label_ids), detokenize=False)


class VllmEngine:
    """ScoringEngine over an in-process vLLM AsyncLLM."""

    def __init__(self, llm: AsyncLLM, model_name: str) -> None:
        self._llm = llm
        self._model_name = model_name

    @classmethod
    async def start(cls, model_dir: str | Path, options: VllmOptions | None = None, *,
                    dtype: str = "float32") -> VllmEngine:
        """Start vLLM (tens of seconds on CPU) on a worker thread: AsyncLLM can
        be built outside the event loop and starts its output task lazily."""
        args = engine_args(options or VllmOptions(), model_dir, dtype=dtype, on_cpu=current_platform.is_cpu())
        llm = await asyncio.to_thread(AsyncLLM.from_engine_args, args)
        return cls(llm, Path(model_dir).name)

    @property
    def model_name(self) -> str:
        return self._model_name

    @property
    def max_model_len(self) -> int:
        return int(self._llm.model_config.max_model_len)

    @property
    def kv_block_size(self) -> int:
        """Tokens per KV cache block: prefixes are cached in whole blocks."""
        return int(self._llm.vllm_config.cache_config.block_size)

    @property
    def num_unfinished_requests(self) -> int:
        """Requests vLLM still holds: zero when idle, also after a cancelled score."""
        return self._llm.get_num_unfinished_requests()

    async def _score_prompt(self, request_id: str, ids: Sequence[int], label_ids: Sequence[int]) -> CandidateLogprobs:
        prompt = TokensPrompt(prompt_token_ids=list(ids))
        final = None
        async for output in self._llm.generate(prompt, _sampling_params(label_ids), request_id):
            final = output
        if final is None:
            raise RuntimeError(f"vLLM returned no output for request {request_id}")
        logprobs = final.outputs[0].logprobs[0]  # first generated position: token id -> Logprob
        return CandidateLogprobs(
            label_logprobs=tuple(logprobs[token_id].logprob for token_id in label_ids),
            prompt_tokens=len(ids),
            cached_tokens=final.num_cached_tokens or 0,
        )

    async def score_batch(self, batch: Sequence[CallerWork]) -> list[CallerOutcome]:
        """Every caller's requests at once; vLLM schedules them into the same
        steps, and a caller that leaves aborts only its own requests."""
        return await score_callers_concurrently(self._score_groups, batch)

    async def score(self, groups: Sequence[ScoringGroup]) -> list[GroupResult]:
        return await score_one_caller(self, groups)

    async def _score_groups(self, groups: Sequence[ScoringGroup]) -> list[GroupResult]:
        jobs = [
            (uuid.uuid4().hex, group.prompt_ids(index), group.label_ids)
            for group in groups
            for index in range(group.num_candidates)
        ]
        try:
            # A TaskGroup cancels the other requests when one fails, and all
            # of them when this task is cancelled; cancelling generate() aborts.
            async with asyncio.TaskGroup() as requests:
                tasks = [requests.create_task(self._score_prompt(*job)) for job in jobs]
        except asyncio.CancelledError:
            # Catches requests cancelled while being added (see module docstring).
            await self._llm.abort([request_id for request_id, _, _ in jobs])
            raise
        except BaseExceptionGroup as failed:
            raise failed.exceptions[0]  # callers map errors by class, not by group

        outputs = iter(task.result() for task in tasks)
        return [GroupResult(tuple(next(outputs) for _ in range(group.num_candidates))) for group in groups]

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
