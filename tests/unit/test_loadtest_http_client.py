"""The load generator's HTTP client against a small aiohttp server on
localhost that answers as told: what it sends (the request's JSON mapping,
its deadline and member as headers, the token) and how each answer is
recorded, in gRPC's status names so both transports are summarized by the
same code. Milliseconds; no Brew server."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable

import pytest
import pytest_asyncio
from aiohttp import web

from brew.v1 import ranking_pb2 as pb
from loadtest.http_client import BrewHttpScorer, status_name
from loadtest.runner import OK, ScoringFailed, call_outcome

REQUEST = pb.ScoreCandidatesRequest(request_id="r1", member=pb.Member(member_id="m ü"), tasks=[
    pb.TaskCandidates(task="job_apply", candidates=[pb.Item(item_id="j1")])])
ANSWER = {"requestId": "r1", "model": "brew-demo", "results": [{"task": "job_apply", "scores": [
    {"itemId": "j1", "score": 0.25}]}]}


class Peer:
    """What the server saw, and how it answers (`answer(request) -> web.Response`)."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, dict[str, str], bytes]] = []
        self.answer: Callable[[web.Request], web.Response] = lambda r: web.json_response(ANSWER)
        self.url = ""


@pytest_asyncio.fixture
async def peer() -> AsyncIterator[Peer]:
    peer = Peer()

    async def handle(request: web.Request) -> web.StreamResponse:
        peer.seen.append((request.path, dict(request.headers), await request.read()))
        answer = peer.answer(request)
        return await answer if asyncio.iscoroutine(answer) else answer

    app = web.Application()
    app.router.add_route("*", "/{path:.*}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    peer.url = f"http://127.0.0.1:{port}"
    yield peer
    await runner.cleanup()


@pytest.mark.asyncio
async def test_a_request_goes_as_its_json_mapping_with_deadline_member_and_token(peer):
    peer.answer = lambda r: web.json_response(ANSWER, headers={"x-brew-replica": "a:1"})
    async with BrewHttpScorer(peer.url, token="t0k") as scorer:
        await scorer.wait_until_ready(5)
        answer = await scorer.score(REQUEST, timeout=1.5)
        assert (await call_outcome(scorer, REQUEST, 1.0)).status == OK
    scored = [(headers, body) for path, headers, body in peer.seen if path == "/v1/brew/score"]
    assert [headers["x-request-timeout"] for headers, _ in scored] == ["1.5", "1"]
    headers, body = scored[0]
    assert json.loads(body)["requestId"] == "r1"
    assert headers["x-brew-member"] == "m %C3%BC"  # serving.replica.member_header_value
    assert headers["Authorization"] == "Bearer t0k" and headers["Content-Type"] == "application/json"
    assert answer.replica == "a:1" and answer.body == ANSWER


@pytest.mark.asyncio
async def test_failures_are_recorded_in_grpcs_names_with_their_replica(peer):
    peer.answer = lambda r: web.json_response({"message": "full"}, status=429, headers={"x-brew-replica": "b:2"})
    async with BrewHttpScorer(peer.url, member_header=False) as scorer:
        with pytest.raises(ScoringFailed) as raised:
            await scorer.score(REQUEST, timeout=1.0)
        outcome = await call_outcome(scorer, REQUEST, 1.0)
    assert raised.value.status == "RESOURCE_EXHAUSTED" and raised.value.replica == "b:2"
    assert "x-brew-member" not in peer.seen[0][1]
    assert (outcome.status, outcome.replica) == ("RESOURCE_EXHAUSTED", "b:2")


@pytest.mark.parametrize(("code", "name"), [
    (400, "INVALID_ARGUMENT"), (401, "UNAUTHENTICATED"), (413, "INVALID_ARGUMENT"), (503, "UNAVAILABLE"),
    (504, "DEADLINE_EXCEEDED"), (500, "INTERNAL"), (418, "HTTP_418")])
def test_status_names(code, name):
    assert status_name(code) == name


@pytest.mark.asyncio
async def test_a_slow_server_is_past_the_deadline_and_a_dead_one_unavailable(peer):
    async def stall(request: web.Request) -> web.Response:
        await asyncio.sleep(1.5)  # past the 0.05 s deadline and the client's slack
        return web.json_response(ANSWER)

    peer.answer = stall
    async with BrewHttpScorer(peer.url) as scorer:
        assert (await call_outcome(scorer, REQUEST, 0.05)).status == "DEADLINE_EXCEEDED"
    async with BrewHttpScorer("http://127.0.0.1:9") as scorer:  # the discard port: nothing listens
        assert (await call_outcome(scorer, REQUEST, 1.0)).status == "UNAVAILABLE"
