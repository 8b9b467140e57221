"""The scoring service: every step of a request, in one place, for any transport.

    shape (O(tasks), read at once)      readiness (lifecycle) -> limits -> deadline
                                        (the server's default if none) -> admission
    decode + prepare (off the loop)     proto -> domain, render, tokenize
    dispatch (queue, deadline)          serving.dispatcher -> the engine, batched
    assembly                            label log-probs -> scores, every timing
    metrics                             one place, success or failure

A transport hands over the request's shape and a `decode` callable (the
gRPC servicer: the proto message's conversion; `brew score`: the request
itself) plus a deadline, and gets a domain ScoreResponse with every timing,
or a transport-neutral error (brew.errors, serving.errors) to map to its own
codes. Decoding runs in the same worker-thread hop as rendering, so the
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

from brew.ranker import Ranker, assemble_response
from brew.tasks import TaskRegistry
from brew.types import ScoreRequest, ScoreResponse
from brew.verbalize import PreparedTask
from serving.config import Limits, ServerConfig
from serving.dispatcher import Dispatcher, Reservation
from serving.errors import NotReadyError, reason_of
from serving.lifecycle import Lifecycle
from serving.limits import RequestShape, check_limits
from serving.metrics import ServiceMetrics

OK = "OK"
CANCELLED = "CANCELLED"

# How a decoded request becomes the engine's groups: the ranker's own
# rendering (Ranker.prepare), or groups rendered ahead by a caller that
# checks them against this ranker (brew batch on Ray renders in CPU tasks).
Prepare = Callable[[Ranker, ScoreRequest], Sequence[PreparedTask]]


def _unlabelled(error: BaseException) -> str:
    return "INTERNAL"


class ScoringService:
    """Scores requests through the dispatcher; knows no transport.

    `status_name` names a failure's status for the metrics (the gRPC server
    passes its status table's code names; the canonical codes are gRPC's).
    `default_deadline_seconds` is the deadline of a request that comes
    without one (None: such a request has none).
    """

    def __init__(self, lifecycle: Lifecycle, metrics: ServiceMetrics, limits: Limits,
                 status_name: Callable[[BaseException], str] = _unlabelled,
                 default_deadline_seconds: float | None = None) -> None:
        self.lifecycle = lifecycle
        self._metrics = metrics
        self._limits = limits
        self._status_name = status_name
        self._default_deadline = default_deadline_seconds
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
        started = time.perf_counter()
        self._metrics.request_started()
        tasks = [(self._task_label(name), candidates) for name, candidates in shape.tasks]
        try:
            ranker, dispatcher = self._serving()
            check_limits(shape, self._limits)
            if deadline is None and self._default_deadline is not None:
                deadline = time.monotonic() + self._default_deadline
            reservation = dispatcher.reserve(shape.candidates, deadline)
            try:
                response = await self._score(ranker, dispatcher, decode, deadline, started, reservation, prepare)
            finally:
                reservation.release()
        except asyncio.CancelledError:
            self._failed(started, CANCELLED, "cancelled", tasks)
            raise
        except Exception as error:
            self._failed(started, self._status_name(error), reason_of(error), tasks)
            raise
        self._metrics.queue_and_engine(response.queue_seconds, response.engine_seconds)
        for result in response.results:
            self._metrics.task_scored(result.task, len(result.candidates), result.prompt_tokens,
                                      result.cached_prompt_tokens)
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
        await self._score(self._ranker, self._dispatcher, lambda: request, None, time.perf_counter())
        self._dispatcher.admission.forget()

    async def _score(self, ranker: Ranker, dispatcher: Dispatcher, decode: Callable[[], ScoreRequest],
                     deadline: float | None, started: float,
                     reservation: Reservation | None = None, prepare: Prepare = Ranker.prepare) -> ScoreResponse:
        request, prepared, prepare_seconds = await asyncio.to_thread(_decode_and_prepare, ranker, decode, prepare)
        dispatcher.prepared(prepare_seconds)
        verbalized = time.perf_counter()
        dispatched = await dispatcher.score([p.group for p in prepared], deadline, reservation)
        response = assemble_response(
            request.request_id, ranker.model_name, prepared, dispatched.results,
            prepare_seconds=verbalized - started, engine_seconds=dispatched.engine_seconds,
        )
        return dataclasses.replace(response, queue_seconds=dispatched.queue_seconds,
                                   total_seconds=time.perf_counter() - started)

    def _serving(self) -> tuple[Ranker, Dispatcher]:
        self.lifecycle.require_serving()
        if self._ranker is None or self._dispatcher is None:
            raise NotReadyError("server not ready: model is loading; retry shortly")
        return self._ranker, self._dispatcher

    def _task_label(self, task: str) -> str:
        """A metric label: the task name if loaded, else "unknown" (caller
        input must not create label values)."""
        ranker = self._ranker
        return task if ranker is not None and task in ranker.verbalizer.tasks else "unknown"

    def _failed(self, started: float, status: str, reason: str, tasks: list[tuple[str, int]]) -> None:
        self._metrics.rejected(reason)
        for task, candidates in tasks:
            self._metrics.task_failed(task, candidates, status)
        self._metrics.request_finished(status, time.perf_counter() - started)


def _decode_and_prepare(ranker: Ranker, decode: Callable[[], ScoreRequest], prepare: Prepare
                        ) -> tuple[ScoreRequest, Sequence[PreparedTask], float]:
    """The request's CPU work, on a worker thread: decode it, verbalize every
    task; and the seconds it took."""
    started = time.perf_counter()
    request = decode()
    prepared = prepare(ranker, request)
    return request, prepared, time.perf_counter() - started


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
    dispatcher = Dispatcher(ranker.engine, config.batching, on_engine_failure=lifecycle.to_failed)
    dispatcher.start()
    service.install(ranker, dispatcher)
    lifecycle.to_serving()
    try:
        yield service
    finally:
        await dispatcher.close()
