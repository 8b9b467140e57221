"""The RankingService servicer: translate, delegate, map errors. No scoring here.

proto -> domain (brew.wire) -> verbalize off the event loop (Ranker.prepare)
-> the batcher (queue, deadline, engine) -> domain -> proto. Every failure is
mapped by the status table (serving.status); unexpected ones are logged with
their traceback and answered INTERNAL. One caller's failure never touches
another's request.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

import grpc

from brew.ranker import Ranker, assemble_response
from brew.v1 import ranking_pb2 as pb
from brew.v1 import ranking_pb2_grpc
from brew.wire import list_tasks_response, request_from_proto, response_to_proto
from serving.batcher import Batcher
from serving.config import Limits
from serving.limits import check_limits
from serving.metrics import ServiceMetrics
from serving.status import NotReadyError, status_for

log = logging.getLogger(__name__)


@dataclass
class ServingState:
    """What the servicer needs, swapped as a whole: the ranker (tasks,
    tokenizer, engine) and the batcher in front of its engine. `ready` is
    False until warm-up is done and again while draining or after an engine
    failure."""

    ranker: Ranker | None = None
    batcher: Batcher | None = None
    ready: bool = False
    not_ready_reason: str = "model is loading"


class RankingServicer(ranking_pb2_grpc.RankingServiceServicer):
    def __init__(self, state: ServingState, metrics: ServiceMetrics, limits: Limits, max_message_bytes: int) -> None:
        self._state = state
        self._metrics = metrics
        self._limits = limits
        self._max_message_bytes = max_message_bytes

    def _ready(self) -> tuple[Ranker, Batcher]:
        state = self._state
        if not state.ready or state.ranker is None or state.batcher is None:
            raise NotReadyError(f"server not ready: {state.not_ready_reason}; retry shortly")
        return state.ranker, state.batcher

    async def ScoreCandidates(
        self, request: pb.ScoreCandidatesRequest, context: grpc.aio.ServicerContext
    ) -> pb.ScoreCandidatesResponse:
        started = time.perf_counter()
        self._metrics.request_started()
        tasks = [(self._task_label(t.task), len(t.candidates)) for t in request.tasks]
        try:
            ranker, batcher = self._ready()
            check_limits(request, self._limits, self._max_message_bytes)
            domain = request_from_proto(request)
            prepared = await asyncio.to_thread(ranker.prepare, domain)
            remaining = context.time_remaining()
            deadline = None if remaining is None else time.monotonic() + remaining
            verbalized = time.perf_counter()
            outcome = await batcher.score([p.group for p in prepared], deadline)
            response = assemble_response(
                domain.request_id, ranker.model_name, prepared, outcome.results,
                prepare_seconds=verbalized - started, engine_seconds=outcome.engine_seconds,
            )
        except asyncio.CancelledError:
            self._finish(started, "CANCELLED", tasks)
            self._metrics.rejected("cancelled")
            raise
        except Exception as error:  # mapped to a status below; nothing is swallowed
            code, reason = status_for(error)
            if code is grpc.StatusCode.INTERNAL:
                log.exception("ScoreCandidates failed (request_id=%s)", request.request_id)
            self._metrics.rejected(reason)
            self._finish(started, code.name, tasks)
            await context.abort(code, str(error))
        total = time.perf_counter() - started
        self._metrics.queue_and_engine(outcome.queue_seconds, outcome.engine_seconds)
        for result in response.results:
            self._metrics.task_scored(result.task, len(result.candidates), result.prompt_tokens,
                                      result.cached_prompt_tokens)
        self._metrics.request_finished("OK", total)
        return response_to_proto(response, queue_seconds=outcome.queue_seconds, total_seconds=total)

    def _task_label(self, task: str) -> str:
        """A metric label: the task name if loaded, else "unknown" (caller
        input must not create label values)."""
        ranker = self._state.ranker
        return task if ranker is not None and task in ranker.verbalizer.tasks else "unknown"

    def _finish(self, started: float, code_name: str, tasks: list[tuple[str, int]]) -> None:
        for task, candidates in tasks:
            self._metrics.task_failed(task, candidates, code_name)
        self._metrics.request_finished(code_name, time.perf_counter() - started)

    async def ListTasks(self, request: pb.ListTasksRequest, context: grpc.aio.ServicerContext) -> pb.ListTasksResponse:
        try:
            ranker, _ = self._ready()
        except NotReadyError as error:
            await context.abort(grpc.StatusCode.UNAVAILABLE, str(error))
        return list_tasks_response(ranker.verbalizer.tasks, ranker.model_name)
