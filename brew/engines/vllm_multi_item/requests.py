"""Brew's side of multi-item scoring on vLLM: engine settings, packed requests, results.

Used by `brew.engines.vllm_engine` when it runs with `multi_item`; the vLLM
side (model, attention, plugin) lives beside this module.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from pathlib import Path

import torch
from vllm import PoolingParams
from vllm.sampling_params import RequestOutputKind

from brew.engines.vllm_multi_item.cpu_kernel import cpu_kernel_available
from brew.engines.vllm_multi_item.layout import MIN_VOCAB_SIZE, NONCE_TOKENS, pack, packed_len, parse, trailer_len
from brew.engines.vllm_multi_item.names import ARCHITECTURES, LABEL_IDS_KEY, POOLING_TASK
from brew.types import CandidateLogprobs, ScoringGroup

# Tokens a packed request spends beyond a plain prompt of its one candidate.
OVERHEAD_TOKENS = NONCE_TOKENS + trailer_len(1) + 1  # + 1: an empty candidate takes one token


def engine_overrides(model_dir: str | Path) -> dict[str, object]:
    """AsyncEngineArgs settings that run the checkpoint as Brew's multi-item model;
    ValueError naming what is missing when it cannot."""
    config = json.loads((Path(model_dir) / "config.json").read_text())
    architectures = config.get("architectures") or []
    wrapped = [ARCHITECTURES[name] for name in architectures if name in ARCHITECTURES]
    if not wrapped:
        raise ValueError(f"multi-item scoring on vLLM supports architectures {', '.join(sorted(ARCHITECTURES))}; "
                         f"this checkpoint is {', '.join(architectures) or 'unnamed'}")
    vocab_size = int(config.get("vocab_size") or 0)
    if vocab_size < MIN_VOCAB_SIZE:
        raise ValueError(f"multi-item scoring on vLLM needs a vocabulary of at least {MIN_VOCAB_SIZE} ids "
                         f"(it spells each prompt's layout in ids); this model has {vocab_size}")
    # A top-level mrope_section switches vLLM's per-request position rows on
    # (brew.engines.vllm_multi_item.model); the model's own rope settings stay.
    return {"runner": "pooling", "hf_overrides": {"architectures": wrapped[:1], "mrope_section": [1, 1, 1]}}


def packs_fast_here(model_dir: str | Path) -> bool:
    """Whether the pooling model can run this checkpoint and its attention
    runs on vLLM's own CPU kernel here (vLLM's CPU build, a head size the
    kernel takes): what `multi_item = "auto"` needs to choose per group
    (brew.engines.vllm_engine says why)."""
    try:
        engine_overrides(model_dir)
    except ValueError:
        return False
    config = json.loads((Path(model_dir) / "config.json").read_text())
    head_size = config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"]
    return cpu_kernel_available(torch.device("cpu"), int(head_size))


@functools.lru_cache(maxsize=256)
def pooling_params(label_ids: tuple[int, ...]) -> PoolingParams:
    """One per label set, shared by its requests (vLLM copies it per request).
    Prefix-cache reads are switched on explicitly: vLLM turns them off by
    default for token-wise pooling, and they are what shares a member's context."""
    return PoolingParams(task=POOLING_TASK, skip_reading_prefix_cache=False,
                         extra_kwargs={LABEL_IDS_KEY: list(label_ids)}, output_kind=RequestOutputKind.FINAL_ONLY)


def split_candidates(group: ScoringGroup, max_len: int) -> list[range]:
    """The group's candidates in runs whose packed prompt fits `max_len` tokens
    (each run is one request behind the same prefix, which vLLM caches)."""
    prefix_len = len(group.prefix_ids)
    runs: list[range] = []
    start = 0
    while start < group.num_candidates:
        end = start + 1
        lengths = [len(group.suffix_ids[start])]
        while end < group.num_candidates and packed_len(prefix_len, [*lengths, len(group.suffix_ids[end])]) <= max_len:
            lengths.append(len(group.suffix_ids[end]))
            end += 1
        runs.append(range(start, end))
        start = end
    return runs


def packed_prompt(group: ScoringGroup, run: range) -> list[int]:
    return pack(group.prefix_ids, [group.suffix_ids[index] for index in run])


def plain_prompt(group: ScoringGroup, index: int) -> list[int]:
    """Candidate `index`'s prompt for the pooling model's per-candidate path:
    the plain prompt (prefix + candidate, read at its last token, no nonce or
    trailer), unless its ids happen to spell a packed layout (`layout.parse`
    reads a prompt's layout from its ids alone, so it would read one there):
    then the packed prompt of that one candidate, which scores the same. So
    a plain prompt never reaches the worker looking packed, whatever its ids."""
    ids = list(group.prompt_ids(index))
    try:
        parse(ids)
    except ValueError:
        return ids
    split = max(len(group.prefix_ids), 1)  # a packed prompt needs a prefix: an empty one lends the first id
    return pack(ids[:split], [ids[split:]])


def candidate_results(group: ScoringGroup, run: range, label_logprobs: torch.Tensor,
                      cached_tokens: int) -> list[CandidateLogprobs]:
    """Per candidate of a run, from the request's (candidates x labels) output.
    Cached tokens as the other engines count them: the first candidate gets
    what vLLM's prefix cache served, every later one the whole prefix."""
    if tuple(label_logprobs.shape) != (len(run), len(group.label_ids)):
        raise RuntimeError(f"vLLM returned label log-probabilities of shape {tuple(label_logprobs.shape)} "
                           f"for {len(run)} candidates and {len(group.label_ids)} labels")
    rows: Sequence[Sequence[float]] = label_logprobs.tolist()
    prefix_len = len(group.prefix_ids)
    return [
        CandidateLogprobs(label_logprobs=tuple(row), prompt_tokens=prefix_len + len(group.suffix_ids[index]),
                          cached_tokens=cached_tokens if position == 0 else prefix_len)
        for position, (index, row) in enumerate(zip(run, rows))
    ]
