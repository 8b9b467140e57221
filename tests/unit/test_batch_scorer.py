"""A batch job's requests through the scoring service, with a fake engine
(serving.batch.scorer, and the Ray path's prepare hook in serving.batch.on_ray):
the outcome rows are the service's response, bad rows are Failed outcomes,
a refusal by admission waits and retries, and tasks rendered ahead score
as the service's own rendering does. Milliseconds."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest
from test_ranker import FakeEngine

from brew import defaults
from brew.errors import PromptTooLongError, TaskConfigError
from brew.ranker import Ranker
from brew.types import ScoreResponse
from brew.v1 import ranking_pb2 as pb
from brew.verbalize import Verbalizer
from brew.wire import parse_request_json, request_from_proto
from serving.batch.columns import Failed, Scored, candidate_rows
from serving.batch.on_ray import _prepared, rendered_tasks
from serving.batch.scorer import BatchScorer, CandidateWindow
from serving.config import Limits
from serving.errors import QueueFullError
from serving.limits import RequestShape
from serving.service import local_service
from serving.servicer import request_shape

pytestmark = pytest.mark.asyncio


@pytest.fixture
def example() -> pb.ScoreCandidatesRequest:
    return parse_request_json(defaults.EXAMPLE_REQUEST.read_text(encoding="utf-8"))


@pytest.fixture
def ranker(shipped_tasks, demo_tokenizer) -> Ranker:
    return Ranker(Verbalizer(shipped_tasks, demo_tokenizer, max_model_len=1024), FakeEngine())


async def test_the_window_holds_back_a_request_until_there_is_room_and_lets_a_huge_one_in_alone():
    window = CandidateWindow(10)
    await window.acquire(6)
    waiting = asyncio.create_task(window.acquire(5))
    await asyncio.sleep(0.01)
    assert not waiting.done()
    await window.release(6)
    await asyncio.wait_for(waiting, 1.0)
    await window.release(5)
    await asyncio.wait_for(window.acquire(50), 1.0)  # over the whole window, into an empty one
    assert window.used == 50


async def test_a_scored_row_is_the_services_response_and_a_bad_one_says_why(ranker, example):
    unknown = pb.ScoreCandidatesRequest()
    unknown.CopyFrom(example)
    unknown.request_id = "bad-1"
    unknown.tasks[1].task = "no_such_task"
    async with local_service(ranker) as service:
        expected = await service.score(request_shape(example), lambda: request_from_proto(example), None)
        scorer = BatchScorer(service, window_candidates=100)
        for message in (example, unknown):
            await scorer.window.acquire(request_shape(message).candidates)
        good, bad = await asyncio.gather(scorer.score(7, 8, example), scorer.score(9, 10, unknown))
    assert good == Scored(7, candidate_rows(7, expected))
    assert [row[:5] for row in good.rows[:2]] == [(7, "example-1", 0, "job_apply", "job-101"),
                                                  (7, "example-1", 0, "job_apply", "job-102")]
    assert isinstance(bad, Failed)
    assert (bad.request_index, bad.line, bad.request_id, bad.reason) == (9, 10, "bad-1", "invalid_argument")
    assert "tasks[1]: unknown task 'no_such_task'" in bad.message
    assert scorer.window.used == 0


class RefusingOnce:
    """A service whose admission refuses the first call until another call
    has been answered, as an adaptive queue limit does."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.release = asyncio.Event()

    async def score(self, shape: RequestShape, decode, deadline, prepare):  # type: ignore[no-untyped-def]
        self.calls.append(shape.request_id)
        if shape.request_id == "refused" and self.calls.count("refused") == 1:
            raise QueueFullError("queue full: over the adaptive limit")
        if shape.request_id == "slow":
            await self.release.wait()
        return ScoreResponse(request_id=decode().request_id, model="fake-model", results=())


async def test_a_request_refused_by_admission_waits_for_another_to_finish_then_asks_again(example):
    service = RefusingOnce()
    scorer = BatchScorer(service, window_candidates=100)  # type: ignore[arg-type]
    slow, refused = pb.ScoreCandidatesRequest(), pb.ScoreCandidatesRequest()
    for message, name in ((slow, "slow"), (refused, "refused")):
        message.CopyFrom(example)
        message.request_id = name
    first = asyncio.create_task(scorer.score(0, None, slow))
    second = asyncio.create_task(scorer.score(1, None, refused))
    await asyncio.sleep(0.05)
    assert service.calls == ["slow", "refused"] and not second.done()  # waiting, not spinning
    service.release.set()
    assert isinstance(await asyncio.wait_for(second, 1.0), Scored)
    assert isinstance(await first, Scored)
    assert service.calls == ["slow", "refused", "refused"]


async def test_tasks_rendered_ahead_score_as_the_services_own_rendering(ranker, example, shipped_tasks,
                                                                        demo_tokenizer):
    elsewhere = Verbalizer(shipped_tasks, demo_tokenizer, max_model_len=4096)  # a CPU task's: another limit
    raw, tasks = _prepared(elsewhere, Limits(), 0, 1, example)
    assert raw == example.SerializeToString()
    async with local_service(ranker) as service:
        shape, decode = request_shape(example), lambda: request_from_proto(example)
        own = await service.score(shape, decode, None)
        ahead = await service.score(shape, decode, None, rendered_tasks(tasks))
    assert dataclasses.replace(ahead, prepare_seconds=0, engine_seconds=0, queue_seconds=0, total_seconds=0) == \
        dataclasses.replace(own, prepare_seconds=0, engine_seconds=0, queue_seconds=0, total_seconds=0)


async def test_tasks_rendered_ahead_are_checked_against_the_scoring_engine(ranker, example, shipped_tasks,
                                                                           demo_tokenizer):
    request = request_from_proto(example)
    _, tasks = _prepared(Verbalizer(shipped_tasks, demo_tokenizer, max_model_len=4096), Limits(), 0, 1, example)
    other_version = [(name, "v0", *rest) for name, _, *rest in tasks]
    with pytest.raises(TaskConfigError, match="give every Ray node the same prompts"):
        rendered_tasks(other_version)(ranker, request)
    short = Ranker(Verbalizer(shipped_tasks, demo_tokenizer, max_model_len=64), FakeEngine())
    with pytest.raises(PromptTooLongError, match=r"job_apply \(tasks\[0\]\), candidate job-101: makes a prompt"):
        rendered_tasks(tasks)(short, request)
