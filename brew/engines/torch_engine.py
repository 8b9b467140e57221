"""A batched transformers engine that computes each group's prefix once.

Every candidate of a group starts with the same prefix, so the prefix is run
once with `use_cache=True` and its KV cache is copied into a batch of
candidate suffixes. Suffixes are right-padded: under the causal mask a real
token only attends to positions before it, so it never sees a pad and no
attention mask is needed (tests/integration/test_engine_parity.py checks this
against the naive engine). Logits are read at each row's own last real token.

It is the engine for machines without vLLM and the GPU baseline to compare
vLLM with; its outputs match the naive engine within fp32 rounding. With
bf16 or fp16 weights its head stays fp32 (brew.engines.loading).

With multi-item scoring (`multi_item` on or auto) it scores the groups of the
dispatcher's whole batch (every caller's) that the packing rule packs
(brew.engines.multi_item_rule: all that fit a row with on, those whose shape
gains with auto) by exact multi-item scoring instead: groups packed side by
side into as few forward passes as the token budget allows
(brew.engines.packing plans them, brew.engines.torch_multi_item runs them),
each candidate isolated by the attention mask, no prefix KV copied; the other
groups take the per-group path. A caller is answered as soon as the last pass
holding one of its candidates is done; a pass holding only abandoned callers
is skipped. A batch is prepared (`prepare_batch`: paths, plan, pass inputs,
on a host thread) apart from its run (`run_prepared`: the passes, on the
worker thread), so the dispatcher prepares the next batch while one runs
(brew.engines.base.PreparesBatches; docs/design/decisions.md, decision 16).
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import torch
from transformers import DynamicCache, PreTrainedModel

from brew.engines.base import CallerOutcome, CallerWork, score_callers_concurrently, score_one_caller
from brew.engines.compiled import compiled_decoder
from brew.engines.loading import load_causal_lm, probe_model
from brew.engines.multi_item_rule import GroupPath, MultiItemMode, PackingRule
from brew.engines.options import TorchOptions
from brew.engines.packing import PackingStats, plan_passes
from brew.engines.quantization import quantize_loaded
from brew.engines.torch_multi_item import (
    PassInputs,
    assemble_results,
    attention_kernel,
    pass_inputs,
    run_pass,
)
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


def _check_not_empty(group: ScoringGroup) -> None:
    if not group.prefix_ids and not all(group.suffix_ids):
        raise ValueError("cannot score an empty prompt: a candidate has neither prefix nor suffix")


def _caller_results(groups: Sequence[ScoringGroup], span: range,
                    logprobs: dict[tuple[int, int], tuple[float, ...]]) -> list[GroupResult]:
    """One caller's GroupResults from the batch's read-outs, keyed by batch group index."""
    own = [groups[i] for i in span]
    return assemble_results(own, {(i - span.start, c): logprobs[i, c]
                                  for i in span for c in range(groups[i].num_candidates)})


@dataclass
class PreparedBatch:
    """A batch whose host work is done (TorchEngine.prepare_batch): each
    group's path, the packed passes' inputs, and the callers refused before
    any pass (an empty prompt). With multi-item off, only the batch."""

    batch: Sequence[CallerWork]
    outcomes: list[CallerOutcome | None] = field(default_factory=list)
    groups: list[ScoringGroup] = field(default_factory=list)
    spans: dict[int, range] = field(default_factory=dict)  # caller -> its groups' indices in `groups`
    paths: list[GroupPath] = field(default_factory=list)  # per group
    packable: list[int] = field(default_factory=list)  # the packed groups' indices in `groups`
    passes: list[PassInputs] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.outcomes:
            self.outcomes = [None] * len(self.batch)


class TorchEngine:
    """ScoringEngine over one transformers model, prefix computed once per group.

    All forward passes run on one worker thread (one model, used serially),
    one job per prefix and per chunk of at most `max_forward_candidates`
    suffixes, or per packed pass: the event loop never waits on torch, and a
    cancelled or abandoned caller stops at the next job boundary. A batch's
    host work (its plan and pass inputs) runs on a second, host thread
    (`prepare_batch`), so the next batch is ready when the device is free.
    """

    def __init__(self, model: PreTrainedModel, model_name: str, options: TorchOptions | None = None,
                 multi_item: MultiItemMode = MultiItemMode.OFF, packing: PackingRule | None = None) -> None:
        self._model = model
        self._model_name = model_name
        self._options = options or TorchOptions()
        self._multi_item = MultiItemMode(multi_item)
        self._packing = packing or PackingRule()
        self._max_forward = self._options.max_forward_candidates
        if self._multi_item is not MultiItemMode.OFF:
            attention_kernel(model)  # refuse a model the packed path cannot run, at start
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="brew-torch")
        # The host work of a batch (plan, pass inputs) runs here, beside the
        # worker thread, so the next batch is prepared while one computes.
        self._host = ThreadPoolExecutor(max_workers=1, thread_name_prefix="brew-torch-host")
        # A compiled decoder for the packed passes (TorchOptions.compile), or None: eager.
        self._decoder = compiled_decoder(model) if self._options.compile else None
        # Called after every packed forward pass with what it cost, and with
        # each group's path (metrics).
        self.on_forward: Callable[[PackingStats], None] | None = None
        self.on_group_path: Callable[[GroupPath], None] | None = None

    @classmethod
    async def start(
        cls,
        model_dir: str | Path,
        *,
        dtype: str = "float32",
        device: str = "cpu",
        options: TorchOptions | None = None,
        multi_item: MultiItemMode = MultiItemMode.OFF,
        packing: PackingRule | None = None,
        quantization: str | None = None,
    ) -> TorchEngine:
        """Load the model off the event loop (loading takes seconds), with
        the attention kernel `options.attention` names, if it names one,
        quantized at load to `quantization` (brew.engines.quantization)."""
        options = options or TorchOptions()
        model = await asyncio.to_thread(load_causal_lm, model_dir, dtype, device, options.attention)
        model = await asyncio.to_thread(quantize_loaded, model, quantization)
        return cls(model, Path(model_dir).name, options, multi_item, packing)

    @property
    def model_name(self) -> str:
        return self._model_name

    @property
    def max_model_len(self) -> int:
        return int(self._model.config.max_position_embeddings)

    async def _run(self, fn: Callable[..., T], *args: object) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, self._model, *args)

    @property
    def multi_item(self) -> MultiItemMode:
        return self._multi_item

    async def _score_group(self, group: ScoringGroup) -> GroupResult:
        prefix_len = len(group.prefix_ids)
        _check_not_empty(group)
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
        """Multi-item on or auto: the groups the packing rule packs, every
        caller's together, the rest per group. Off: callers interleave on the
        one worker thread, job by job."""
        return await self.run_prepared(await self.prepare_batch(batch))

    async def prepare_batch(self, batch: Sequence[CallerWork]) -> PreparedBatch:
        """The batch's host work, on the host thread: check the groups, choose
        each group's path, plan the packed passes and build their inputs
        (pinned on CUDA). The dispatcher runs it while the batch before
        computes on the worker thread (serving.dispatcher)."""
        if self._multi_item is MultiItemMode.OFF:
            return PreparedBatch(batch)
        prepared = await asyncio.get_running_loop().run_in_executor(self._host, self._plan, batch)
        if self.on_group_path is not None:
            for path in prepared.paths:
                self.on_group_path(path)
        return prepared

    def _plan(self, batch: Sequence[CallerWork]) -> PreparedBatch:
        prepared = PreparedBatch(batch)
        for caller, work in enumerate(batch):
            try:
                for group in work.groups:
                    _check_not_empty(group)
            except ValueError as error:
                prepared.outcomes[caller] = error
                continue
            prepared.spans[caller] = range(len(prepared.groups), len(prepared.groups) + len(work.groups))
            prepared.groups.extend(work.groups)
        prepared.paths = [self._packing.path(self._multi_item, group) for group in prepared.groups]
        prepared.packable = [i for i, path in enumerate(prepared.paths) if path is GroupPath.PACKED]
        packed_groups = [prepared.groups[i] for i in prepared.packable]
        plan = plan_passes(packed_groups, self._options.max_batch_tokens)
        bucket = self._options.bucket_tokens if self._decoder is not None else 1
        device = self._model.device
        prepared.passes = [pass_inputs(packed, packed_groups, device, bucket) for packed in plan.passes]
        return prepared

    async def run_prepared(self, prepared: PreparedBatch) -> list[CallerOutcome]:
        """Run a prepared batch on the worker thread, one job per pass (and
        per prefix or chunk on the per-group path)."""
        batch = prepared.batch
        if self._multi_item is MultiItemMode.OFF:
            return await score_callers_concurrently(self._score_groups, batch)
        outcomes, groups, spans = prepared.outcomes, prepared.groups, prepared.spans
        owner = {index: caller for caller, span in spans.items() for index in span}
        pending = {caller: sum(groups[i].num_candidates for i in span) for caller, span in spans.items()}
        logprobs: dict[tuple[int, int], tuple[float, ...]] = {}

        def record(index: int, candidate: int, value: tuple[float, ...]) -> None:
            logprobs[index, candidate] = value
            caller = owner[index]
            pending[caller] -= 1
            if not pending[caller] and outcomes[caller] is None:
                outcomes[caller] = _caller_results(groups, spans[caller], logprobs)
                batch[caller].deliver(outcomes[caller])

        packable = prepared.packable
        per_group = [i for i, path in enumerate(prepared.paths) if path is GroupPath.PER_CANDIDATE]
        loop = asyncio.get_running_loop()
        try:
            for inputs in prepared.passes:
                readouts = inputs.packed.readouts
                if all(batch[owner[packable[r.group]]].abandoned for r in readouts):
                    continue
                values = await loop.run_in_executor(self._executor, run_pass, self._model, inputs,
                                                    self._decoder)
                if self.on_forward is not None:
                    self.on_forward(inputs.packed.stats)
                for readout, value in zip(readouts, values, strict=True):
                    record(packable[readout.group], readout.candidate, value)
            for index in per_group:
                if batch[owner[index]].abandoned:
                    continue
                result = await self._score_group(groups[index])
                for candidate, scored in enumerate(result.candidates):
                    record(index, candidate, scored.label_logprobs)
        except Exception as error:  # the engine failed: every caller not yet answered gets it
            return [error if outcome is None else outcome for outcome in outcomes]
        return [asyncio.CancelledError("the caller left") if outcome is None else outcome for outcome in outcomes]

    async def score(self, groups: Sequence[ScoringGroup]) -> list[GroupResult]:
        return await score_one_caller(self, groups)

    async def check_health(self) -> None:
        """A one-token forward pass, queued behind the jobs already on the worker thread."""
        await self._run(probe_model)

    async def close(self) -> None:
        await asyncio.to_thread(self._host.shutdown, wait=True, cancel_futures=True)
        await asyncio.to_thread(self._executor.shutdown, wait=True, cancel_futures=True)
