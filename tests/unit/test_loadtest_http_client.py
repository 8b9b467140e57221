"""The load generator's HTTP client against a fake transport (httpx.MockTransport):
what it sends (the request's JSON mapping, its deadline and member as
headers, the token) and how each answer is recorded, in gRPC's status names
so both transports are summarized by the same code. No server."""

from __future__ import annotations

import json

import httpx
import pytest

from brew.v1 import ranking_pb2 as pb
from loadtest.http_client import BrewHttpScorer, status_name
from loadtest.runner import OK, ScoringFailed, call_outcome

REQUEST = pb.ScoreCandidatesRequest(request_id="r1", member=pb.Member(member_id="m ü"), tasks=[
    pb.TaskCandidates(task="job_apply", candidates=[pb.Item(item_id="j1")])])


def scorer_answering(answer, seen: list[httpx.Request], **options) -> BrewHttpScorer:  # type: ignore[no-untyped-def]
    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return answer(request)

    return BrewHttpScorer("http://replica:8080", transport=httpx.MockTransport(handle), **options)


@pytest.mark.asyncio
async def test_a_request_goes_as_its_json_mapping_with_deadline_member_and_token():
    seen: list[httpx.Request] = []
    answer = {"requestId": "r1", "model": "brew-demo", "results": [{"task": "job_apply", "scores": [
        {"itemId": "j1", "score": 0.25}]}]}
    scorer = scorer_answering(lambda r: httpx.Response(200, json=answer, headers={"x-brew-replica": "a:1"}),
                              seen, token="t0k")
    async with scorer:
        served = await scorer.score(REQUEST, timeout=1.5)
        assert (await call_outcome(scorer, REQUEST, 1.0)).status == OK
    sent = seen[0]
    assert sent.url.path == "/v1/brew/score"
    assert json.loads(sent.content)["requestId"] == "r1"
    assert sent.headers["x-request-timeout"] == "1.5"
    assert sent.headers["x-brew-member"] == "m %C3%BC"  # serving.replica.member_header_value
    assert sent.headers["authorization"] == "Bearer t0k"
    assert sent.headers["content-type"] == "application/json"
    assert served.replica == "a:1" and served.response.results[0].scores[0].score == 0.25


@pytest.mark.asyncio
async def test_failures_are_recorded_in_grpcs_names_with_their_replica():
    seen: list[httpx.Request] = []
    scorer = scorer_answering(lambda r: httpx.Response(429, json={"message": "full"},
                                                       headers={"x-brew-replica": "b:2"}), seen,
                              member_header=False)
    async with scorer:
        with pytest.raises(ScoringFailed) as raised:
            await scorer.score(REQUEST, timeout=1.0)
        outcome = await call_outcome(scorer, REQUEST, 1.0)
    assert raised.value.status == "RESOURCE_EXHAUSTED" and raised.value.replica == "b:2"
    assert "x-brew-member" not in seen[0].headers
    assert (outcome.status, outcome.replica) == ("RESOURCE_EXHAUSTED", "b:2")


@pytest.mark.parametrize(("code", "name"), [
    (400, "INVALID_ARGUMENT"), (401, "UNAUTHENTICATED"), (413, "INVALID_ARGUMENT"), (503, "UNAVAILABLE"),
    (504, "DEADLINE_EXCEEDED"), (500, "INTERNAL"), (418, "HTTP_418")])
def test_status_names(code, name):
    assert status_name(code) == name


@pytest.mark.asyncio
async def test_a_dead_server_is_unavailable_and_a_slow_one_past_its_deadline():
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    def stall(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=request)

    for answer, status in ((refuse, "UNAVAILABLE"), (stall, "DEADLINE_EXCEEDED")):
        async with scorer_answering(answer, []) as scorer:
            assert (await call_outcome(scorer, REQUEST, 1.0)).status == status
