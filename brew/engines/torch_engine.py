"""A batched transformers engine that computes each group's prefix once.

Every candidate of a group starts with the same prefix, so the prefix is run
once with `use_cache=True` and its KV cache is copied into a batch of
candidate suffixes. Suffixes are right-padded: under the causal mask a real
token only attends to positions before it, so it never sees a pad and no
attention mask is needed (tests/integration/test_engine_parity.py checks this
against the naive engine). Logits are read at each row's own last real token.

It is the engine for machines without vLLM and the GPU baseline to compare
vLLM with; its outputs match the naive engine within fp32 rounding.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import torch
from transformers import DynamicCache, PreTrainedModel

from brew.engines.base import CallerOutcome, CallerWork, score_callers_concurrently, score_one_caller
from brew.engines.loading import load_causal_lm, probe_model
from brew.engines.options import TorchOptions
from brew.types import CandidateLogprobs, GroupResult, ScoringGroup

_PAD_ID = 0  # any valid id: no real token ever attends to a pad (right padding, causal mask)

T = TypeVar("T")


def _label_logprobs(logits: torch.Tensor, label_ids: Sequence[int]) -> list[tuple[float, ...]]:
    """(rows, vocab) logits -> per row, fp32 full-vocabulary logprobs of the labels."""
    logprobs = torch.log_softmax(logits.float(), dim=-1)[:, list(label_ids)]
    return [tuple(row) for row in logprobs.tolist()]


@torch.inference_mode()
def encode_prefix(
    model: PreTrainedModel, prefix_ids: Sequence[int], label_ids: Sequence[int]
) -> tuple[DynamicCache | None, tuple[float, ...] | None]:
    """The prefix's KV cache, and the label logprobs right after the prefix
    (the score of a candidate whose suffix is empty). (None, None) if no prefix."""
    if not prefix_ids:
        return None, None
    input_ids = torch.tensor([list(prefix_ids)], dtype=torch.long, device=model.device)
    out = model(input_ids=input_ids, use_cache=True, logits_to_keep=1)
    return out.past_key_values, _label_logprobs(out.logits[:, -1], label_ids)[0]


@torch.inference_mode()
def score_suffixes(
    model: PreTrainedModel,
    prefix_cache: DynamicCache | None,
    prefix_len: int,
    suffixes: Sequence[Sequence[int]],
    label_ids: Sequence[int],
) -> list[tuple[float, ...]]:
    """Label logprobs after `prefix + suffix` for each (non-empty) suffix, in one batch."""
    device = model.device
    rows, width = len(suffixes), max(len(s) for s in suffixes)
    lengths = torch.tensor([len(s) for s in suffixes], dtype=torch.long, device=device)
    padded = [list(s) + [_PAD_ID] * (width - len(s)) for s in suffixes]
    input_ids = torch.tensor(padded, dtype=torch.long, device=device)  # (rows, width)
    position_ids = (prefix_len + torch.arange(width, device=device)).expand(rows, width)

    cache = None
    if prefix_cache is not None:
        # The forward pass appends to the cache it is given: work on a copy.
        cache = copy.deepcopy(prefix_cache)
        cache.batch_repeat_interleave(rows)

    last = lengths - 1  # (rows,) each row's last real position
    keep = torch.unique(last)  # (k,) sorted: compute logits only where some row ends
    out = model(
        input_ids=input_ids, position_ids=position_ids, past_key_values=cache, use_cache=True, logits_to_keep=keep
    )
    column = torch.searchsorted(keep, last)  # (rows,) index of each row's last position in `keep`
    return _label_logprobs(out.logits[torch.arange(rows, device=device), column], label_ids)  # (rows, vocab)


class TorchEngine:
    """ScoringEngine over one transformers model, prefix computed once per group.

    All torch work runs on one worker thread (one model, used serially), one
    job per prefix and per chunk of at most `max_forward_candidates` suffixes:
    the event loop never waits on torch, and a cancelled or abandoned caller
    stops at the next job boundary.
    """

    def __init__(self, model: PreTrainedModel, model_name: str, options: TorchOptions | None = None) -> None:
        self._model = model
        self._model_name = model_name
        self._max_forward = (options or TorchOptions()).max_forward_candidates
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="brew-torch")

    @classmethod
    async def start(
        cls,
        model_dir: str | Path,
        *,
        dtype: str = "float32",
        device: str = "cpu",
        options: TorchOptions | None = None,
    ) -> TorchEngine:
        """Load the model off the event loop (loading takes seconds)."""
        model = await asyncio.to_thread(load_causal_lm, model_dir, dtype, device)
        return cls(model, Path(model_dir).name, options)

    @property
    def model_name(self) -> str:
        return self._model_name

    @property
    def max_model_len(self) -> int:
        return int(self._model.config.max_position_embeddings)

    async def _run(self, fn: Callable[..., T], *args: object) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, self._model, *args)

    async def _score_group(self, group: ScoringGroup) -> GroupResult:
        prefix_len = len(group.prefix_ids)
        if prefix_len == 0 and not all(group.suffix_ids):
            raise ValueError("cannot score an empty prompt: a candidate has neither prefix nor suffix")
        cache, after_prefix = await self._run(encode_prefix, group.prefix_ids, group.label_ids)

        # Candidates with an empty suffix are scored right after the prefix.
        logprobs = {i: after_prefix for i, suffix in enumerate(group.suffix_ids) if not suffix}
        pending = [i for i, suffix in enumerate(group.suffix_ids) if suffix]
        for start in range(0, len(pending), self._max_forward):
            chunk = pending[start : start + self._max_forward]
            values = await self._run(
                score_suffixes, cache, prefix_len, [group.suffix_ids[i] for i in chunk], group.label_ids
            )
            logprobs.update(zip(chunk, values, strict=True))

        return GroupResult(
            tuple(
                CandidateLogprobs(
                    label_logprobs=logprobs[index],
                    prompt_tokens=prefix_len + len(suffix),
                    # The prefix is computed for the first candidate and reused by the rest.
                    cached_tokens=prefix_len if index > 0 else 0,
                )
                for index, suffix in enumerate(group.suffix_ids)
            )
        )

    async def _score_groups(self, groups: Sequence[ScoringGroup]) -> list[GroupResult]:
        return [await self._score_group(group) for group in groups]

    async def score_batch(self, batch: Sequence[CallerWork]) -> list[CallerOutcome]:
        """Callers interleave on the one worker thread, job by job."""
        return await score_callers_concurrently(self._score_groups, batch)

    async def score(self, groups: Sequence[ScoringGroup]) -> list[GroupResult]:
        return await score_one_caller(self, groups)

    async def check_health(self) -> None:
        """A one-token forward pass, queued behind the jobs already on the worker thread."""
        await self._run(probe_model)

    async def close(self) -> None:
        await asyncio.to_thread(self._executor.shutdown, wait=True, cancel_futures=True)
