"""The client's retries against a scripted in-process gRPC server: which codes
are retried, how long it backs off, and that it never outlives its deadline."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import grpc
import pytest
import pytest_asyncio

from brew.v1 import ranking_pb2 as pb
from brew.v1 import ranking_pb2_grpc
from serving.client import NO_RETRY, RankingClient, RetryPolicy

Code = grpc.StatusCode


class ScriptedServicer(ranking_pb2_grpc.RankingServiceServicer):
    """Answers ScoreCandidates with the next code of `script`, then OK; records each call's arrival."""

    def __init__(self) -> None:
        self.script: list[Code] = []
        self.arrivals: list[float] = []

    async def ScoreCandidates(self, request, context):  # type: ignore[no-untyped-def]
        self.arrivals.append(time.monotonic())
        if self.script:
            await context.abort(self.script.pop(0), "scripted")
        return pb.ScoreCandidatesResponse(request_id=request.request_id)


@pytest_asyncio.fixture
async def scripted() -> AsyncIterator[tuple[ScriptedServicer, str]]:
    servicer = ScriptedServicer()
    server = grpc.aio.server()
    ranking_pb2_grpc.add_RankingServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield servicer, f"127.0.0.1:{port}"
    await server.stop(None)


FAST = RetryPolicy(max_attempts=4, initial_backoff_seconds=0.01, overloaded_backoff_seconds=0.02)


@pytest.mark.asyncio
async def test_resource_exhausted_is_retried_after_a_backoff(scripted):
    servicer, target = scripted
    servicer.script = [Code.RESOURCE_EXHAUSTED, Code.RESOURCE_EXHAUSTED]
    async with RankingClient(target, retry=FAST) as client:
        response = await client.score(pb.ScoreCandidatesRequest(request_id="r1"), timeout=5.0)
    assert response.request_id == "r1" and len(servicer.arrivals) == 3


@pytest.mark.asyncio
async def test_unavailable_is_retried(scripted):
    servicer, target = scripted
    servicer.script = [Code.UNAVAILABLE]
    async with RankingClient(target, retry=FAST) as client:
        await client.score(pb.ScoreCandidatesRequest(), timeout=5.0)
    assert len(servicer.arrivals) == 2


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("policy", "code"),
    [
        (NO_RETRY, Code.RESOURCE_EXHAUSTED),
        (NO_RETRY, Code.UNAVAILABLE),
        (RetryPolicy(retry_overloaded=False), Code.RESOURCE_EXHAUSTED),
        (FAST, Code.INVALID_ARGUMENT),
        (FAST, Code.DEADLINE_EXCEEDED),
    ],
    ids=["no-retry-overloaded", "no-retry-unavailable", "overload-retries-off", "invalid", "deadline"],
)
async def test_what_is_not_retried_is_raised_after_one_attempt(scripted, policy, code):
    servicer, target = scripted
    servicer.script = [code]
    async with RankingClient(target, retry=policy) as client:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await client.score(pb.ScoreCandidatesRequest(), timeout=5.0)
    assert raised.value.code() is code and len(servicer.arrivals) == 1


@pytest.mark.asyncio
async def test_retries_never_outlive_the_deadline(scripted):
    servicer, target = scripted
    servicer.script = [Code.RESOURCE_EXHAUSTED] * 50
    patient = RetryPolicy(max_attempts=50, overloaded_backoff_seconds=0.05, max_backoff_seconds=0.1)
    async with RankingClient(target, retry=patient) as client:
        started = time.monotonic()
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await client.score(pb.ScoreCandidatesRequest(), timeout=0.5)
        elapsed = time.monotonic() - started
    # It gives up when the next backoff would pass the deadline, with the last
    # refusal; on a loaded machine the attempt in flight may instead be the
    # one the deadline cuts (DEADLINE_EXCEEDED, a scheduling delay after 0.5 s).
    assert elapsed < 0.5 + 0.2
    assert raised.value.code() in (Code.RESOURCE_EXHAUSTED, Code.DEADLINE_EXCEEDED)
    assert 1 < len(servicer.arrivals) < 50  # retried, but far from the 50 attempts allowed


def test_overload_backs_off_longer_than_unavailable_with_full_jitter(monkeypatch):
    monkeypatch.setattr("random.uniform", lambda low, high: high)  # the top of the jitter range
    policy = RetryPolicy(initial_backoff_seconds=0.05, overloaded_backoff_seconds=0.2,
                         max_backoff_seconds=1.0)
    assert policy.backoff(1, Code.UNAVAILABLE) == pytest.approx(0.1)
    assert policy.backoff(1, Code.RESOURCE_EXHAUSTED) == pytest.approx(0.4)
    assert policy.backoff(5, Code.RESOURCE_EXHAUSTED) == pytest.approx(1.0)
    monkeypatch.setattr("random.uniform", lambda low, high: low)
    assert policy.backoff(3, Code.RESOURCE_EXHAUSTED) == 0.0
