"""The API edge: request JSON -> proto -> domain, domain -> proto response."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest
from google.protobuf import json_format

from brew import defaults
from brew.errors import InvalidRequestError
from brew.types import CandidateScore, ScoreResponse, TaskScores
from brew.v1 import ranking_pb2 as pb
from brew.wire import (
    list_tasks_response,
    message_to_json,
    parse_request_json,
    request_from_proto,
    response_to_proto,
)

EXAMPLE_TEXT = defaults.EXAMPLE_REQUEST.read_text(encoding="utf-8")
MINIMAL = {"requestId": "r-1", "member": {"memberId": "m-1"}, "tasks": [{"task": "job_apply"}]}


def utc(*fields: int) -> float:
    return datetime(*fields, tzinfo=timezone.utc).timestamp()


# --- requests ---------------------------------------------------------------------

def test_the_example_request_becomes_the_domain_request():
    request = request_from_proto(parse_request_json(EXAMPLE_TEXT))
    assert request.request_id == "example-1"
    assert request.member.member_id == "m-42"
    assert request.member.profile["title"] == "data analyst" and len(request.member.profile) == 6
    assert [(t.task, len(t.candidates)) for t in request.tasks] == [
        ("job_apply", 3), ("feed_engagement", 2), ("pymk_connect", 2),
    ]
    assert [c.item_id for c in request.tasks[2].candidates] == ["member-301", "member-302"]
    assert request.tasks[1].candidates[0].entity_type == "post"
    assert request.tasks[1].candidates[0].fields == {"topic": "ai", "format": "video", "author": "colleague"}


def test_history_times_become_unix_seconds():
    history = request_from_proto(parse_request_json(EXAMPLE_TEXT)).member.history
    assert len(history) == 8
    first = history[0]
    assert (first.action, first.item.item_id, first.item.entity_type) == ("viewed", "job-7", "job")
    assert first.timestamp == utc(2026, 10, 2, 9, 15)
    assert history[-1].timestamp == utc(2026, 10, 14, 10, 5)


def test_fractional_seconds_are_kept():
    text = json.dumps({**MINIMAL, "member": {"memberId": "m", "history": [
        {"action": "viewed", "item": {"itemId": "j"}, "time": "2026-10-02T09:15:00.250Z"}]}})
    (interaction,) = request_from_proto(parse_request_json(text)).member.history
    assert interaction.timestamp == pytest.approx(utc(2026, 10, 2, 9, 15) + 0.25, abs=1e-6)


def test_snake_case_names_are_accepted_too():
    text = json.dumps({"request_id": "r-2", "member": {"member_id": "m-2"},
                       "tasks": [{"task": "pymk_connect",
                                  "candidates": [{"item_id": "x", "entity_type": "member"}]}]})
    request = request_from_proto(parse_request_json(text))
    assert (request.request_id, request.member.member_id) == ("r-2", "m-2")
    assert request.tasks[0].candidates[0].item_id == "x"


def test_a_task_without_candidates_passes_the_structural_checks():
    # The verbalizer refuses it later, naming the task.
    request = request_from_proto(parse_request_json(json.dumps(MINIMAL)))
    assert request.tasks[0].task == "job_apply" and request.tasks[0].candidates == ()
    assert request.member.history == () and dict(request.member.profile) == {}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{", "Failed to load JSON"),
        ('{"requestId": "x", "memberz": {}}', 'no field named "memberz"'),
        ('{"member": {"memberId": 42}}', "Failed to parse memberId field"),
        ('{"member": {"history": [{"time": "yesterday"}]}}', "Failed to parse time field"),
    ],
)
def test_json_that_does_not_fit_the_message_is_an_invalid_request(text, message):
    expected = "request JSON does not match brew.v1.ScoreCandidatesRequest"
    with pytest.raises(InvalidRequestError, match=expected) as caught:
        parse_request_json(text)
    assert message in str(caught.value)


def test_a_request_without_a_member_is_refused():
    with pytest.raises(InvalidRequestError, match="member is missing"):
        request_from_proto(pb.ScoreCandidatesRequest(request_id="r", tasks=[pb.TaskCandidates(task="t")]))


def test_a_request_without_tasks_is_refused():
    with pytest.raises(InvalidRequestError, match="tasks is empty; name at least one task"):
        request_from_proto(pb.ScoreCandidatesRequest(request_id="r", member=pb.Member(member_id="m")))


# --- responses -----------------------------------------------------------------

RESPONSE = ScoreResponse(
    request_id="r-9",
    model="brew-demo",
    results=(
        TaskScores(
            task="feed_engagement",
            template_version="abc123def456",
            labels=(" Yes", " No"),
            positive_label=" Yes",
            candidates=(
                CandidateScore("post-1", 0.75, (0.75, 0.25), (-0.5, -1.5986122886681098)),
                CandidateScore("post-2", 0.125, (0.125, 0.875), (-3.0, -1.0540725)),
            ),
            prefix_tokens=90,
            prompt_tokens=200,
            cached_prompt_tokens=90,
        ),
    ),
    prepare_seconds=0.002,
    engine_seconds=0.031,
    queue_seconds=0.004,
    total_seconds=0.04,
)


def test_a_response_becomes_the_api_message():
    message = response_to_proto(RESPONSE)
    assert message.request_id == "r-9" and message.model == "brew-demo"
    (result,) = message.results
    assert (result.task, result.template_version, result.positive_label) == (
        "feed_engagement", "abc123def456", " Yes",
    )
    assert list(result.labels) == [" Yes", " No"]
    assert [(s.item_id, s.score) for s in result.scores] == [("post-1", 0.75), ("post-2", 0.125)]
    assert list(result.scores[1].label_probs) == [0.125, 0.875]
    assert list(result.scores[1].label_logprobs) == [-3.0, -1.0540725]
    tokens = result.tokens
    assert (tokens.prefix_tokens, tokens.prompt_tokens, tokens.cached_prompt_tokens) == (90, 200, 90)
    timing = message.timing
    assert (timing.queue_seconds, timing.prepare_seconds, timing.engine_seconds, timing.total_seconds) == (
        0.004, 0.002, 0.031, 0.04,
    )


def test_a_response_survives_the_wire_and_the_json_mapping():
    message = response_to_proto(RESPONSE)
    assert pb.ScoreCandidatesResponse.FromString(message.SerializeToString()) == message
    text = message_to_json(message)
    assert json.loads(text)["results"][0]["scores"][0]["itemId"] == "post-1"
    assert json_format.Parse(text, pb.ScoreCandidatesResponse()) == message


def test_the_task_list_names_every_loaded_task(shipped_tasks):
    response = list_tasks_response(shipped_tasks, model="brew-demo")
    assert response.model == "brew-demo"
    assert [t.name for t in response.tasks] == ["feed_engagement", "job_apply", "pymk_connect", "rerank"]
    job = response.tasks[1]
    assert list(job.labels) == [" applied", " viewed", " dismissed", " none"]
    assert job.positive_label == " applied" and job.version == shipped_tasks["job_apply"].version
    assert job.description == shipped_tasks["job_apply"].description


# --- requests built from domain types (the load generator's direction) -------------

def test_request_to_proto_is_the_inverse_of_request_from_proto():
    from brew.demo.world import World
    from brew.types import ScoreRequest, TaskRequest
    from brew.wire import request_to_proto

    world = World(11)
    persona = world.persona()
    request = ScoreRequest(
        request_id="r-1",
        member=persona.member,
        tasks=(TaskRequest("job_apply", (world.job(persona), world.job(persona))),
               TaskRequest("feed_engagement", (world.post(persona),))),
    )
    back = request_from_proto(request_to_proto(request))
    assert back.request_id == request.request_id and back.tasks == request.tasks
    assert back.member.member_id == request.member.member_id
    assert back.member.profile == request.member.profile
    assert len(back.member.history) == len(request.member.history)
    for got, sent in zip(back.member.history, request.member.history):
        assert (got.action, got.item) == (sent.action, sent.item)
        assert got.timestamp == pytest.approx(sent.timestamp, abs=1e-6)
