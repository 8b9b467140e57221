"""The scoring service: every step of a request, in one place, for any transport.

    shape (O(tasks), read at once)      readiness (lifecycle) -> limits -> deadline
                                        (the server's default if none) -> admission
    decode + prepare (off the loop)     proto -> domain, render, tokenize
    dispatch (queue, deadline)          serving.dispatcher -> the engine, batched
    assembly                            label log-probs -> scores, every timing
    metrics                             one place, success or failure

A transport hands over the request's shape and a `decode` callable (the
gRPC servicer: the proto message's conversion; the HTTP API: the JSON's;
`brew score`: the request itself) plus a deadline, and gets a domain
ScoreResponse with every timing, or a transport-neutral error (brew.errors,
serving.errors) to map to its own codes. A raw query/items request
(brew.query_items: the peer scoring APIs' shape, no template) takes the same
path through `score_query_items`: only its prepare step (tokenize the query
and the items) and its assembly differ, each the request kind's own (`_Work`). Decoding runs in the same worker-thread hop as rendering, so the
event loop never does O(history + candidates) work for a request, and the
dispatcher's admission is asked before that hop, so an overloaded server
refuses without rendering anything (the admission there holds its place
while the request is prepared: serving.dispatcher.Reservation).

The ranker (tasks, tokenizer, engine) is swapped as a whole on a prompt
reload: a request holds the ranker it started with.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Protocol, TypeVar

from brew.query_items import QueryItemsRequest, QueryItemsResponse, query_items_groups
from brew.ranker import Ranker, assemble_response
from brew.tasks import TaskRegistry
from brew.types import GroupResult, ScoreRequest, ScoreResponse, ScoringGroup
from brew.verbalize import PreparedTask
from serving.admission import AdmissionPolicy
from serving.config import Limits, ServerConfig
from serving.dispatcher import Dispatcher, Reservation
from serving.errors import NotReadyError, reason_of
from serving.lifecycle import Lifecycle
from serving.limits import RequestShape, check_limits
from serving.metrics import ServiceMetrics

OK = "OK"
CANCELLED = "CANCELLED"
# The task label of raw query/items requests in the metrics (they name no task).
QUERY_ITEMS_TASK = "query_items"

Response = TypeVar("Response", ScoreResponse, QueryItemsResponse)

# How a decoded request becomes the engine's groups: the ranker's own
# rendering (Ranker.prepare), or groups rendered ahead by a caller that
# checks them against this ranker (brew batch on Ray renders in CPU tasks).
Prepare = Callable[[Ranker, ScoreRequest], Sequence[PreparedTask]]


class _Work(Protocol[Response]):
    """What differs between the request kinds: how a decoded request becomes
    scoring groups (on a worker thread), how the engine's results become the
    response, and what the response adds to the per-task metrics."""

    def prepare(self, ranker: Ranker) -> list[ScoringGroup]: ...

    def assemble(self, ranker: Ranker, results: list[GroupResult], prepare_seconds: float,
                 engine_seconds: float) -> Response: ...


class _TaskWork:
    """A ScoreRequest: every task verbalized by its template (or by `prepare`, see Prepare)."""

    def __init__(self, decode: Callable[[], ScoreRequest], prepare: Prepare = Ranker.prepare) -> None:
        self._decode = decode
        self._prepare = prepare
        self._request: ScoreRequest | None = None
        self._prepared: Sequence[PreparedTask] = []

    def prepare(self, ranker: Ranker) -> list[ScoringGroup]:
        self._request = self._decode()
        self._prepared = self._prepare(ranker, self._request)
        return [p.group for p in self._prepared]

    def assemble(self, ranker: Ranker, results: list[GroupResult], prepare_seconds: float,
                 engine_seconds: float) -> ScoreResponse:
        assert self._request is not None
        return assemble_response(self._request.request_id, ranker.model_name, self._prepared, results,
                                 prepare_seconds=prepare_seconds, engine_seconds=engine_seconds)


class _QueryItemsWork:
    """A raw query/items request: its groups, tokenized and split as brew.query_items says."""

    def __init__(self, decode: Callable[[], QueryItemsRequest]) -> None:
        self._decode = decode
        self._request: QueryItemsRequest | None = None

    def prepare(self, ranker: Ranker) -> list[ScoringGroup]:
        self._request = self._decode()
        verbalizer = ranker.verbalizer
        return query_items_groups(self._request, verbalizer.tokenizer, verbalizer.max_model_len)

    def assemble(self, ranker: Ranker, results: list[GroupResult], prepare_seconds: float,
                 engine_seconds: float) -> QueryItemsResponse:
        assert self._request is not None
        items = tuple(candidate for result in results for candidate in result.candidates)  # groups in item order
        if len(items) != len(self._request.items):
            raise RuntimeError(f"engine returned {len(items)} results for {len(self._request.items)} items")
        return QueryItemsResponse(self._request.request_id, ranker.model_name, items,
                                  prepare_seconds=prepare_seconds, engine_seconds=engine_seconds)


def _scored(response: ScoreResponse | QueryItemsResponse) -> list[tuple[str, int, int, int, str | None]]:
    """(task label, candidates, prompt tokens, cached tokens, template version) per task of an
    answer, for the metrics."""
    if isinstance(response, QueryItemsResponse):
        return [(QUERY_ITEMS_TASK, len(response.items), response.prompt_tokens, response.cached_tokens, None)]
    return [(r.task, len(r.candidates), r.prompt_tokens, r.cached_prompt_tokens, r.template_version)
            for r in response.results]


def _unlabelled(error: BaseException) -> str:
    return "INTERNAL"


class ScoringService:
    """Scores requests through the dispatcher; knows no transport.

    `status_name` names a failure's status for the metrics (the gRPC server
    passes its status table's code names; the canonical codes are gRPC's).
    `default_deadline_seconds` is the deadline of a request that comes
    without one (None: such a request has none). `slo_seconds` is the
    server's latency SLO, the time admission gives a request whose tasks
    name no SLO of their own (serving.admission; None: none).
    """

    def __init__(self, lifecycle: Lifecycle, metrics: ServiceMetrics, limits: Limits,
                 status_name: Callable[[BaseException], str] = _unlabelled,
                 default_deadline_seconds: float | None = None, slo_seconds: float | None = None) -> None:
        self.lifecycle = lifecycle
        self._metrics = metrics
        self._limits = limits
        self._status_name = status_name
        self._default_deadline = default_deadline_seconds
        self._slo = slo_seconds
        self._ranker: Ranker | None = None
        self._dispatcher: Dispatcher | None = None

    @property
    def ranker(self) -> Ranker | None:
        return self._ranker

    @property
    def dispatcher(self) -> Dispatcher | None:
        return self._dispatcher

    def install(self, ranker: Ranker, dispatcher: Dispatcher | None = None) -> None:
        """One assignment each: a call holds the ranker it started with."""
        if dispatcher is not None:
            self._dispatcher = dispatcher
        self._ranker = ranker
        self._metrics.tasks_loaded({name: task.version for name, task in ranker.verbalizer.tasks.items()})

    def tasks(self) -> tuple[TaskRegistry, str]:
        """The loaded tasks and the model name, once serving."""
        ranker, _ = self._serving()
        return ranker.verbalizer.tasks, ranker.model_name

    async def score(self, shape: RequestShape, decode: Callable[[], ScoreRequest],
                    deadline: float | None, prepare: Prepare = Ranker.prepare) -> ScoreResponse:
        """Score one request; `deadline` is time.monotonic()-based (None: none).
        `prepare` runs on the worker thread, after `decode`."""
        return await self._serve(shape, _TaskWork(decode, prepare), deadline)

    async def score_query_items(self, shape: RequestShape, decode: Callable[[], QueryItemsRequest],
                                deadline: float | None) -> QueryItemsResponse:
        """Score one raw query/items request (brew.query_items) through the
        same door, queue and engine as a task request; `shape` names its one
        group `QUERY_ITEMS_TASK` with its item count."""
        return await self._serve(shape, _QueryItemsWork(decode), deadline)

    async def _serve(self, shape: RequestShape, work: _Work[Response], deadline: float | None) -> Response:
        started = time.perf_counter()
        self._metrics.request_started()
        tasks = [(self._task_label(name), candidates) for name, candidates in shape.tasks]
        try:
            ranker, dispatcher = self._serving()
            check_limits(shape, self._limits)
            now = time.monotonic()
            if deadline is None and self._default_deadline is not None:
                deadline = now + self._default_deadline
            slo = self._slo_of(shape, ranker)
            reservation = dispatcher.reserve(shape.candidates, deadline, None if slo is None else now + slo)
            try:
                response = await self._score(ranker, dispatcher, work, deadline, started, reservation)
            finally:
                reservation.release()
        except asyncio.CancelledError:
            self._failed(started, CANCELLED, "cancelled", tasks)
            raise
        except Exception as error:
            self._failed(started, self._status_name(error), reason_of(error), tasks)
            raise
        self._metrics.queue_and_engine(response.queue_seconds, response.engine_seconds)
        for task, candidates, prompt_tokens, cached_tokens, version in _scored(response):
            self._metrics.task_scored(task, candidates, prompt_tokens, cached_tokens, version)
        self._metrics.request_finished(OK, response.total_seconds)
        return response

    def refused(self, error: Exception) -> None:
        """Count a request the transport refused before the service could
        read it (bytes that are not a request)."""
        self._metrics.request_started()
        self._failed(time.perf_counter(), self._status_name(error), reason_of(error), [])

    async def warm_up(self, request: ScoreRequest) -> None:
        """Score one request through the whole path before serving, so the
        first caller does not pay for lazy initialisation. Neither counted
        nor learned from (its engine time says nothing of the engine's speed)."""
        if self._ranker is None or self._dispatcher is None:
            raise NotReadyError("nothing to warm up: no ranker installed")
        await self._score(self._ranker, self._dispatcher, _TaskWork(lambda: request), None, time.perf_counter())
        self._dispatcher.admission.forget()

    async def _score(self, ranker: Ranker, dispatcher: Dispatcher, work: _Work[Response],
                     deadline: float | None, started: float,
                     reservation: Reservation | None = None) -> Response:
        groups, prepare_seconds = await asyncio.to_thread(_timed_prepare, work, ranker)
        dispatcher.prepared(prepare_seconds)
        verbalized = time.perf_counter()
        dispatched = await dispatcher.score(groups, deadline, reservation)
        response = work.assemble(ranker, dispatched.results, prepare_seconds=verbalized - started,
                                 engine_seconds=dispatched.engine_seconds)
        return dataclasses.replace(response, queue_seconds=dispatched.queue_seconds,
                                   total_seconds=time.perf_counter() - started)

    def _serving(self) -> tuple[Ranker, Dispatcher]:
        self.lifecycle.require_serving()
        if self._ranker is None or self._dispatcher is None:
            raise NotReadyError("server not ready: model is loading; retry shortly")
        return self._ranker, self._dispatcher

    def _slo_of(self, shape: RequestShape, ranker: Ranker) -> float | None:
        """The request's SLO in seconds: the smallest of its tasks' own
        (`slo_ms` in a task's config), else the server's."""
        tasks = ranker.verbalizer.tasks
        own = [task.slo_seconds for name, _ in shape.tasks
               if (task := tasks.get(name)) is not None and task.slo_seconds is not None]
        return min(own) if own else self._slo

    def _task_label(self, task: str) -> str:
        """A metric label: the task name if loaded, else "unknown" (caller
        input must not create label values)."""
        ranker = self._ranker
        if task == QUERY_ITEMS_TASK:
            return task
        return task if ranker is not None and task in ranker.verbalizer.tasks else "unknown"

    def _failed(self, started: float, status: str, reason: str, tasks: list[tuple[str, int]]) -> None:
        self._metrics.rejected(reason)
        for task, candidates in tasks:
            self._metrics.task_failed(task, candidates, status)
        self._metrics.request_finished(status, time.perf_counter() - started)


def _timed_prepare(work: _Work[Response], ranker: Ranker) -> tuple[list[ScoringGroup], float]:
    """The request's CPU work, on a worker thread: decode it, turn it into
    scoring groups (render and tokenize); and the seconds it took."""
    started = time.perf_counter()
    groups = work.prepare(ranker)
    return groups, time.perf_counter() - started


@asynccontextmanager
async def local_service(ranker: Ranker, config: ServerConfig | None = None) -> AsyncIterator[ScoringService]:
    """The service in-process, serving at once (no transport, no metrics
    endpoint) with `config`'s batching, limits and SLO (default: the declared
    defaults): how `brew score` scores a request through the same path as
    the server. No default deadline: a one-off score waits for its answer.
    The dispatcher is closed on exit; the engine is the caller's."""
    from serving.status import code_for  # the canonical code names (gRPC's), for the metrics

    config = config or ServerConfig()
    lifecycle = Lifecycle()
    service = ScoringService(lifecycle, ServiceMetrics(slo_seconds=config.slo_seconds, model=ranker.model_name),
                             config.limits, status_name=lambda error: code_for(error).name)
    dispatcher = Dispatcher(ranker.engine, config.batching, on_engine_failure=lifecycle.to_failed,
                            admission=AdmissionPolicy(config.batching, slo_seconds=config.slo_seconds))
    dispatcher.start()
    service.install(ranker, dispatcher)
    lifecycle.to_serving()
    try:
        yield service
    finally:
        await dispatcher.close()
