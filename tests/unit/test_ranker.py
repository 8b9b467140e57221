"""The ranker with a fake engine: one engine call per request, results per
task and per candidate in request order, scores from label_probabilities."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Sequence

import pytest

from brew import defaults
from brew.engines.base import CallerOutcome, CallerWork, ScoringEngine, score_callers_concurrently
from brew.errors import EmptyCandidatesError, UnknownTaskError
from brew.ranker import Ranker, assemble_response
from brew.scoring import label_probabilities
from brew.tasks import TaskRegistry
from brew.types import CandidateLogprobs, GroupResult, ScoringGroup, TaskRequest
from brew.verbalize import Verbalizer
from brew.wire import parse_request_json, request_from_proto


def fake_logprobs(group: ScoringGroup, index: int) -> tuple[float, ...]:
    """Deterministic, different per candidate and per label; the first label
    gets less likely with each candidate."""
    rest = -1.0 - 0.01 * len(group.suffix_ids[index])
    return tuple(-0.3 - 0.4 * index if label == 0 else rest - 0.1 * label
                 for label in range(len(group.label_ids)))


class FakeEngine:
    """Answers fake_logprobs; counts the prefix as cached for every candidate
    after the first of a group; records the groups it was given."""

    model_name = "fake-model"
    max_model_len = 4096

    def __init__(self, results: list[GroupResult] | None = None) -> None:
        self.calls: list[list[ScoringGroup]] = []
        self.results = results
        self.delay = 0.0

    async def score(self, groups: Sequence[ScoringGroup]) -> list[GroupResult]:
        self.calls.append(list(groups))
        await asyncio.sleep(self.delay)  # the fake engine's work time, as a test sets it
        if self.results is not None:
            return self.results
        return [
            GroupResult(tuple(
                CandidateLogprobs(
                    label_logprobs=fake_logprobs(group, i),
                    prompt_tokens=len(group.prompt_ids(i)),
                    cached_tokens=len(group.prefix_ids) if i else 0,
                )
                for i in range(group.num_candidates)
            ))
            for group in groups
        ]

    async def score_batch(self, batch: Sequence[CallerWork]) -> list[CallerOutcome]:
        return await score_callers_concurrently(self.score, batch)

    async def check_health(self) -> None:
        pass

    async def close(self) -> None:
        pass


@pytest.fixture(scope="module")
def example():
    return request_from_proto(parse_request_json(defaults.EXAMPLE_REQUEST.read_text(encoding="utf-8")))


@pytest.fixture
def ranker(shipped_tasks, demo_tokenizer) -> Ranker:
    return Ranker(Verbalizer(shipped_tasks, demo_tokenizer, max_model_len=1024), FakeEngine())


def test_the_fake_implements_the_engine_protocol():
    assert isinstance(FakeEngine(), ScoringEngine)


@pytest.mark.asyncio
async def test_results_come_back_per_task_in_candidate_order(ranker, example, shipped_tasks):
    response = await ranker.score(example)
    assert response.request_id == "example-1" and response.model == "fake-model"
    assert [r.task for r in response.results] == ["job_apply", "feed_engagement", "pymk_connect"]
    for result, request in zip(response.results, example.tasks):
        task = shipped_tasks[request.task]
        assert result.labels == task.labels and result.positive_label == task.positive_label
        assert result.template_version == task.version
        assert [c.item_id for c in result.candidates] == [item.item_id for item in request.candidates]
    assert response.prepare_seconds > 0 and response.engine_seconds > 0


@pytest.mark.asyncio
async def test_scores_are_the_label_probabilities_of_the_engine_logprobs(ranker, example):
    response = await ranker.score(example)
    (groups,) = ranker.engine.calls
    for result, group in zip(response.results, groups):
        for index, candidate in enumerate(result.candidates):
            logprobs = fake_logprobs(group, index)
            assert candidate.label_logprobs == logprobs
            assert candidate.label_probs == pytest.approx(label_probabilities(logprobs), abs=1e-15)
            assert candidate.score == candidate.label_probs[0]  # every shipped positive label is first
    # the fake makes earlier candidates likelier: scores keep the engine's order
    job = response.results[0]
    assert job.candidates[0].score > job.candidates[1].score > job.candidates[2].score


@pytest.mark.asyncio
async def test_the_score_is_the_positive_labels_share_wherever_it_stands(
    shipped_tasks, demo_tokenizer, example
):
    task = dataclasses.replace(shipped_tasks["feed_engagement"], labels=(" No", " Yes"))
    ranker = Ranker(Verbalizer(TaskRegistry({"feed_engagement": task}), demo_tokenizer, 1024), FakeEngine())
    response = await ranker.score(dataclasses.replace(example, tasks=example.tasks[1:2]))
    for candidate in response.results[0].candidates:
        assert candidate.score == candidate.label_probs[1]


@pytest.mark.asyncio
async def test_token_counts_are_filled(ranker, example):
    response = await ranker.score(example)
    (groups,) = ranker.engine.calls
    for result, group in zip(response.results, groups):
        assert result.prefix_tokens == len(group.prefix_ids) > 0
        assert result.prompt_tokens == sum(len(group.prompt_ids(i)) for i in range(group.num_candidates))
        assert result.cached_prompt_tokens == len(group.prefix_ids) * (group.num_candidates - 1)


@pytest.mark.asyncio
async def test_all_tasks_go_to_the_engine_in_one_call(ranker, example):
    await ranker.score(example)
    assert len(ranker.engine.calls) == 1
    assert [g.num_candidates for g in ranker.engine.calls[0]] == [3, 2, 2]


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("bad_task", "error"),
    [(TaskRequest("job_search", ()), UnknownTaskError), (TaskRequest("job_apply", ()), EmptyCandidatesError)],
)
async def test_bad_input_fails_before_any_engine_work(ranker, example, bad_task, error):
    request = dataclasses.replace(example, tasks=(*example.tasks, bad_task))
    with pytest.raises(error):
        await ranker.score(request)
    assert ranker.engine.calls == []


@pytest.mark.asyncio
async def test_an_engine_answer_of_the_wrong_shape_is_an_error(shipped_tasks, demo_tokenizer, example):
    verbalizer = Verbalizer(shipped_tasks, demo_tokenizer, 1024)
    one = GroupResult((CandidateLogprobs((-0.1, -2.0), 5, 0),))
    with pytest.raises(RuntimeError, match="engine returned 1 results for 3 groups"):
        await Ranker(verbalizer, FakeEngine(results=[GroupResult(())])).score(example)
    with pytest.raises(RuntimeError, match="engine returned 1 candidates for 2"):
        assemble_response("r", "m", [verbalizer.prepare(example.member, example.tasks[1])], [one])
