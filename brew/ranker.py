"""The scoring core: verbalizer + engine, and the two ends of every request.

`prepare` verbalizes every task of a request into scoring groups (token ids;
raises on bad input before any engine work), `assemble_response` turns the
engine's label log-probabilities into scores. The serving path
(serving/service.py: admission, queue, deadlines, metrics) and `brew score`
put a dispatcher between the two; `Ranker.score` joins them directly, with
no queue, for evaluation and tests in-process. Either way a request gets the
same scores.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

from brew.engines.base import ScoringEngine
from brew.scoring import label_probabilities
from brew.types import CandidateScore, GroupResult, ScoreRequest, ScoreResponse, TaskScores
from brew.verbalize import PreparedTask, Verbalizer


class Ranker:
    """Verbalizer + engine: scores whole requests."""

    def __init__(self, verbalizer: Verbalizer, engine: ScoringEngine) -> None:
        self.verbalizer = verbalizer
        self.engine = engine

    @property
    def model_name(self) -> str:
        return self.engine.model_name

    def prepare(self, request: ScoreRequest) -> list[PreparedTask]:
        """Verbalize every task of the request; raises on bad input before any
        engine work is spent. An error names the task by its place in the
        request (`tasks[i]`), as a caller with two tasks of one name needs."""
        return [self.verbalizer.prepare(request.member, task, index) for index, task in enumerate(request.tasks)]

    async def score(self, request: ScoreRequest) -> ScoreResponse:
        """Prepare (off the event loop), one engine call, assemble: no queue."""
        started = time.perf_counter()
        prepared = await asyncio.to_thread(self.prepare, request)
        verbalized = time.perf_counter()
        results = await self.engine.score([p.group for p in prepared])
        return assemble_response(
            request.request_id,
            self.model_name,
            prepared,
            results,
            prepare_seconds=verbalized - started,
            engine_seconds=time.perf_counter() - verbalized,
        )


def assemble_response(
    request_id: str,
    model: str,
    prepared: Sequence[PreparedTask],
    results: Sequence[GroupResult],
    prepare_seconds: float = 0.0,
    engine_seconds: float = 0.0,
) -> ScoreResponse:
    """Pair each prepared task with its engine result, in order."""
    if len(results) != len(prepared):
        raise RuntimeError(f"engine returned {len(results)} results for {len(prepared)} groups")
    return ScoreResponse(
        request_id=request_id,
        model=model,
        results=tuple(task_scores(p, r) for p, r in zip(prepared, results)),
        prepare_seconds=prepare_seconds,
        engine_seconds=engine_seconds,
    )


def task_scores(prepared: PreparedTask, result: GroupResult) -> TaskScores:
    """One task's scores: softmax over the label log-probs, positive label's share."""
    if len(result.candidates) != len(prepared.item_ids):
        raise RuntimeError(
            f"engine returned {len(result.candidates)} candidates for {len(prepared.item_ids)}"
        )
    task = prepared.task
    candidates = []
    for item_id, logprobs in zip(prepared.item_ids, result.candidates):
        probs = label_probabilities(logprobs.label_logprobs)
        candidates.append(
            CandidateScore(
                item_id=item_id,
                score=probs[task.positive_index],
                label_probs=probs,
                label_logprobs=logprobs.label_logprobs,
            )
        )
    return TaskScores(
        task=task.name,
        template_version=task.version,
        labels=task.labels,
        positive_label=task.positive_label,
        candidates=tuple(candidates),
        prefix_tokens=len(prepared.group.prefix_ids),
        prompt_tokens=sum(c.prompt_tokens for c in result.candidates),
        cached_prompt_tokens=sum(c.cached_tokens for c in result.candidates),
    )
