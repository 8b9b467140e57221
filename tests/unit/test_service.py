"""The scoring service with a fake engine: every step of a request in one place
(readiness, limits, decode + prepare off the loop, dispatch, assembly,
timings, metrics), transport-neutral errors, no gRPC. Milliseconds."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time

import pytest
from test_ranker import FakeEngine
from waiting import eventually_async

from brew import defaults
from brew.errors import UnknownTaskError
from brew.ranker import Ranker
from brew.tasks import TaskRegistry
from brew.types import ScoreRequest, ScoringGroup
from brew.verbalize import Verbalizer
from brew.wire import parse_request_json, request_from_proto
from serving.admission import AdmissionPolicy
from serving.config import BatchingConfig, Limits, ServerConfig
from serving.dispatcher import Dispatcher
from serving.errors import DeadlineExceededError, LimitExceededError, NotReadyError, QueueFullError
from serving.lifecycle import Lifecycle
from serving.limits import RequestShape
from serving.metrics import ServiceMetrics
from serving.service import ScoringService, local_service

pytestmark = pytest.mark.asyncio


@pytest.fixture
def example() -> ScoreRequest:
    return request_from_proto(parse_request_json(defaults.EXAMPLE_REQUEST.read_text(encoding="utf-8")))


@pytest.fixture
def ranker(shipped_tasks, demo_tokenizer) -> Ranker:
    return Ranker(Verbalizer(shipped_tasks, demo_tokenizer, max_model_len=1024), FakeEngine())


def status_name(error: BaseException) -> str:
    return type(error).__name__


async def test_a_request_is_scored_with_every_timing_and_counted(ranker, example):
    async with local_service(ranker) as service:
        response = await service.score(RequestShape.of(example), lambda: example, deadline=None)
        assert response == dataclasses.replace(await ranker.score(example), prepare_seconds=response.prepare_seconds,
                                               engine_seconds=response.engine_seconds,
                                               queue_seconds=response.queue_seconds,
                                               total_seconds=response.total_seconds)
        assert response.total_seconds >= response.prepare_seconds > 0
        assert response.engine_seconds > 0 and response.queue_seconds >= 0
        totals = service._metrics.snapshot()
        assert (totals.requests, totals.candidates, totals.inflight_requests) == (1, 7, 0)


async def test_decoding_and_rendering_run_off_the_event_loop(ranker, example):
    threads: list[int] = []

    def decode() -> ScoreRequest:
        threads.append(threading.get_ident())
        return example

    async with local_service(ranker) as service:
        await service.score(RequestShape.of(example), decode, deadline=None)
    assert threads and threads[0] != threading.get_ident()


async def test_not_serving_refuses_before_any_work(ranker, example):
    metrics = ServiceMetrics(slo_seconds=0.5, model="fake")
    lifecycle = Lifecycle()
    service = ScoringService(lifecycle, metrics, Limits(), status_name=status_name)
    service.install(ranker, Dispatcher(ranker.engine, BatchingConfig()))
    decoded: list[bool] = []
    with pytest.raises(NotReadyError, match="model is loading"):
        await service.score(RequestShape.of(example), lambda: decoded.append(True) or example, deadline=None)
    assert decoded == [] and ranker.engine.calls == []
    assert metrics.rejections.labels(reason="not_ready")._value.get() == 1
    assert metrics.requests.labels(status="NotReadyError")._value.get() == 1


async def test_a_request_over_a_limit_is_refused_from_its_shape_alone(ranker, example):
    async with local_service(ranker, ServerConfig(limits=Limits(max_candidates_per_request=5))) as service:
        with pytest.raises(LimitExceededError, match="max_candidates_per_request=5"):
            await service.score(RequestShape.of(example), lambda: pytest.fail("decoded"), deadline=None)
    assert ranker.engine.calls == []


async def test_bad_input_is_counted_under_its_reason_and_unknown_tasks_under_unknown(ranker, example):
    bad = dataclasses.replace(example, tasks=(dataclasses.replace(example.tasks[0], task="no_such_task"),))
    async with local_service(ranker) as service:
        with pytest.raises(UnknownTaskError):
            await service.score(RequestShape.of(bad), lambda: bad, deadline=None)
        metrics = service._metrics
        assert metrics.rejections.labels(reason="invalid_argument")._value.get() == 1
        assert metrics.candidates.labels(task="unknown", status="INVALID_ARGUMENT")._value.get() == 3
        # the service keeps serving everyone else
        response = await service.score(RequestShape.of(example), lambda: example, deadline=None)
        assert len(response.results) == 3


async def test_a_cancelled_call_is_counted_as_cancelled(ranker, example):
    ranker.engine.delay = 1.0
    async with local_service(ranker) as service:
        call = asyncio.ensure_future(service.score(RequestShape.of(example), lambda: example, deadline=None))
        await eventually_async(lambda: ranker.engine.calls)  # the engine is working on it
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        metrics = service._metrics
        assert metrics.rejections.labels(reason="cancelled")._value.get() == 1
        assert metrics.requests.labels(status="CANCELLED")._value.get() == 1


def never_decoded() -> ScoreRequest:
    pytest.fail("decoded a request that admission refused")


async def test_a_request_without_a_deadline_gets_the_server_s_default(ranker, example):
    lifecycle = Lifecycle()
    service = ScoringService(lifecycle, ServiceMetrics(slo_seconds=0.5, model="fake"), Limits(),
                             status_name=status_name, default_deadline_seconds=0.05)
    dispatcher = Dispatcher(ranker.engine, BatchingConfig(collect_window_ms=0))
    dispatcher.start()
    service.install(ranker, dispatcher)
    lifecycle.to_serving()
    ranker.engine.delay = 1.0
    try:
        with pytest.raises(DeadlineExceededError):
            await service.score(RequestShape.of(example), lambda: example, deadline=None)
    finally:
        await dispatcher.close()


class RecordingAdmission(AdmissionPolicy):
    """Admits everything; records the deadline and SLO time each check was given."""

    def __init__(self) -> None:
        super().__init__(BatchingConfig())
        self.checks: list[tuple[float | None, float | None]] = []

    def check(self, candidates, deadline, queued, inflight, preparing=0, slo=None) -> None:
        self.checks.append((deadline, slo))


@pytest.mark.parametrize(("task_slos_ms", "expected_slo"), [
    ({}, 0.5),  # no task names one: the server's
    ({"job_apply": 200.0}, 0.2),
    ({"job_apply": 200.0, "feed_engagement": 100.0}, 0.1),  # the smallest of the request's tasks
    ({"rerank": 50.0}, 0.5),  # a task the request does not have does not count
])
async def test_admission_is_given_the_request_s_slo_the_task_s_own_or_the_server_s(
        ranker, example, task_slos_ms, expected_slo):
    tasks = TaskRegistry({name: dataclasses.replace(task, slo_ms=task_slos_ms.get(name))
                          for name, task in ranker.verbalizer.tasks.items()})
    assert {t.task for t in example.tasks} >= {"job_apply", "feed_engagement"} and "rerank" not in {
        t.task for t in example.tasks}
    ranker = Ranker(Verbalizer(tasks, ranker.verbalizer.tokenizer, max_model_len=1024), ranker.engine)
    lifecycle, admission = Lifecycle(), RecordingAdmission()
    service = ScoringService(lifecycle, ServiceMetrics(slo_seconds=0.5, model="fake"), Limits(),
                             status_name=status_name, default_deadline_seconds=5.0, slo_seconds=0.5)
    dispatcher = Dispatcher(ranker.engine, BatchingConfig(collect_window_ms=0), admission=admission)
    dispatcher.start()
    service.install(ranker, dispatcher)
    lifecycle.to_serving()
    try:
        before = time.monotonic()
        await service.score(RequestShape.of(example), lambda: example, deadline=None)
        after = time.monotonic()
    finally:
        await dispatcher.close()
    [(deadline, slo)] = admission.checks
    assert before + 5.0 <= deadline <= after + 5.0
    assert before + expected_slo <= slo <= after + expected_slo


async def test_an_overloaded_dispatcher_refuses_before_the_request_is_decoded(ranker, example):
    async with local_service(ranker, ServerConfig(batching=BatchingConfig(max_queue_candidates=256),
                                                    limits=Limits(max_candidates_per_request=256))) as service:
        service.dispatcher.stats.queued_candidates = 250  # a queue with no room for 7 candidates
        with pytest.raises(QueueFullError, match="queue full"):
            await service.score(RequestShape.of(example), never_decoded, deadline=None)
        service.dispatcher.stats.queued_candidates = 0
        assert service._metrics.rejections.labels(reason="queue_full")._value.get() == 1
    assert ranker.engine.calls == []


async def test_a_query_items_request_takes_the_same_path_as_one_group(ranker):
    from brew.query_items import QueryItemsRequest
    from serving.service import QUERY_ITEMS_TASK

    raw = QueryItemsRequest("raw-1", query=(5, 6, 7), items=((8,), (9, 10)), label_ids=(392, 391))
    async with local_service(ranker) as service:
        response = await service.score_query_items(RequestShape("raw-1", ((QUERY_ITEMS_TASK, 2),), 0),
                                                   lambda: raw, deadline=None)
        assert ranker.engine.calls[-1] == [ScoringGroup((5, 6, 7), ((8,), (9, 10)), (392, 391))]
        assert [item.prompt_tokens for item in response.items] == [4, 5]
        assert (response.request_id, response.model) == ("raw-1", "fake-model")
        assert response.total_seconds >= response.prepare_seconds > 0
        assert service._metrics.candidates.labels(task=QUERY_ITEMS_TASK, status="OK")._value.get() == 2
        with pytest.raises(LimitExceededError, match="max_candidates_per_request"):
            await service.score_query_items(RequestShape("big", ((QUERY_ITEMS_TASK, 5000),), 0), lambda: raw, None)


async def test_tasks_scored_are_counted_by_model_and_template_version(ranker, example):
    async with local_service(ranker) as service:
        await service.score(RequestShape.of(example), lambda: example, deadline=None)
        counter = service._metrics.version_tasks
        for task in example.tasks:
            version = ranker.verbalizer.tasks[task.task].version
            assert counter.labels(model=ranker.model_name, task=task.task, version=version)._value.get() == 1
