"""The reference engine: one plain forward pass per candidate prompt.

No cache, no batching, no padding: nothing that could make it wrong in a
subtle way. It is slow on purpose; the other engines are tested against it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from transformers import PreTrainedModel

from brew.engines.base import CallerOutcome, CallerWork, score_callers_concurrently, score_one_caller
from brew.engines.loading import load_causal_lm, probe_model
from brew.engines.quantization import quantize_loaded
from brew.types import CandidateLogprobs, GroupResult, ScoringGroup


@torch.inference_mode()
def last_position_label_logprobs(
    model: PreTrainedModel, ids: Sequence[int], label_ids: Sequence[int]
) -> tuple[float, ...]:
    """Full-vocabulary fp32 log-probabilities of `label_ids` as the next token
    after `ids`: the score every engine must reproduce."""
    if not ids:
        raise ValueError("cannot score an empty prompt")
    input_ids = torch.tensor([list(ids)], dtype=torch.long, device=model.device)
    logits = model(input_ids=input_ids, use_cache=False).logits[0, -1]  # (vocab,)
    logprobs = torch.log_softmax(logits.float(), dim=-1)
    return tuple(logprobs[list(label_ids)].tolist())


class NaiveTorchEngine:
    """ScoringEngine over a transformers model, one candidate at a time.

    Each candidate is one job on a single worker thread, so the event loop
    never waits on torch and a cancelled `score` stops at the next candidate.
    """

    def __init__(self, model: PreTrainedModel, model_name: str) -> None:
        self._model = model
        self._model_name = model_name
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="brew-naive")

    @classmethod
    async def start(cls, model_dir: str | Path, *, dtype: str = "float32", device: str = "cpu",
                    quantization: str | None = None) -> NaiveTorchEngine:
        """Load the model off the event loop (loading takes seconds), quantized
        at load to `quantization` (brew.engines.quantization)."""
        model = await asyncio.to_thread(load_causal_lm, model_dir, dtype, device)
        model = await asyncio.to_thread(quantize_loaded, model, quantization)
        return cls(model, Path(model_dir).name)

    @property
    def model_name(self) -> str:
        return self._model_name

    @property
    def max_model_len(self) -> int:
        return int(self._model.config.max_position_embeddings)

    async def score_batch(self, batch: Sequence[CallerWork]) -> list[CallerOutcome]:
        return await score_callers_concurrently(self._score_groups, batch)

    async def score(self, groups: Sequence[ScoringGroup]) -> list[GroupResult]:
        return await score_one_caller(self, groups)

    async def _score_groups(self, groups: Sequence[ScoringGroup]) -> list[GroupResult]:
        loop = asyncio.get_running_loop()
        results = []
        for group in groups:
            candidates = []
            for index in range(group.num_candidates):
                ids = group.prompt_ids(index)
                logprobs = await loop.run_in_executor(
                    self._executor, last_position_label_logprobs, self._model, ids, group.label_ids
                )
                candidates.append(CandidateLogprobs(logprobs, prompt_tokens=len(ids), cached_tokens=0))
            results.append(GroupResult(tuple(candidates)))
        return results

    async def check_health(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._executor, probe_model, self._model)

    async def close(self) -> None:
        await asyncio.to_thread(self._executor.shutdown, wait=True, cancel_futures=True)
