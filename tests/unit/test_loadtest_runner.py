"""The runners against fake scorers: every attempt is recorded, the open-loop
cap turns excess requests into CLIENT_REJECTED records, closed-loop keeps
exactly N requests in flight. No assertion on speed."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import grpc
import pytest
from waiting import eventually_async

from brew.v1 import ranking_pb2 as pb
from loadtest.records import CLIENT_REJECTED
from loadtest.runner import Outcome, ScoringFailed, call_outcome, run_closed_loop, run_open_loop
from serving.client import Served
from serving.replica import REPLICA_HEADER

pytestmark = pytest.mark.asyncio


def request(index: int, candidates: int = 3) -> pb.ScoreCandidatesRequest:
    items = [pb.Item(item_id=f"i{j}") for j in range(candidates)]
    task = pb.TaskCandidates(task="job_apply", candidates=items)
    return pb.ScoreCandidatesRequest(request_id=f"r{index}", tasks=[task])


def rpc_error(code: grpc.StatusCode) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details="fake")


class FakeScorer:
    """Answers after `gate` opens (at once when there is none); fails the
    request ids in `fail` with their code; tracks concurrency."""

    def __init__(self, gate: asyncio.Event | None = None, fail: dict[str, grpc.StatusCode] | None = None):
        self.gate, self.fail = gate, fail or {}
        self.calls: list[tuple[str, float]] = []
        self.inflight = self.peak = 0

    async def score(self, request: pb.ScoreCandidatesRequest, timeout: float) -> pb.ScoreCandidatesResponse:
        self.calls.append((request.request_id, timeout))
        self.inflight += 1
        self.peak = max(self.peak, self.inflight)
        try:
            if self.gate is not None:
                await self.gate.wait()
            await asyncio.sleep(0.001)  # the fake's answer time: a send the runner must not wait for
            if request.request_id in self.fail:
                raise rpc_error(self.fail[request.request_id])
            return pb.ScoreCandidatesResponse(request_id=request.request_id)
        finally:
            self.inflight -= 1


async def test_open_loop_records_every_request_in_order():
    scorer = FakeScorer(fail={"r2": grpc.StatusCode.DEADLINE_EXCEEDED,
                              "r4": grpc.StatusCode.RESOURCE_EXHAUSTED})
    offsets = [0.0, 0.01, 0.02, 0.03, 0.04, 0.05]
    result = await run_open_loop(scorer, [request(i) for i in range(6)], offsets, timeout_s=1.5)
    assert [r.request_id for r in result.records] == [f"r{i}" for i in range(6)]
    assert [r.status for r in result.records] == ["OK", "OK", "DEADLINE_EXCEEDED", "OK", "RESOURCE_EXHAUSTED",
                                                  "OK"]
    assert {timeout for _, timeout in scorer.calls} == {1.5}
    for record, intended in zip(result.records, offsets):
        assert record.intended == intended
        assert record.sent is not None and record.sent >= intended - 0.002  # never (much) early
        assert record.end >= record.sent
        assert record.candidates == 3
    assert result.wall_s >= max(r.end for r in result.records)


async def test_an_open_loop_run_lasts_at_least_its_offered_window():
    result = await run_open_loop(FakeScorer(), [request(0)], [0.0], timeout_s=1, duration_s=30.0)
    assert result.wall_s == 30.0  # one request offered over 30 s is 1/30 requests/s, not 1/0.001


class WatchedOffsets(list):
    """A schedule that notes when the runner has gone through all of it: the
    runner sends or refuses each arrival before it reads the next offset."""

    gone_through = False

    def __iter__(self) -> Iterator[float]:
        yield from super().__iter__()
        self.gone_through = True


async def test_open_loop_never_waits_for_answers_and_caps_outstanding_requests():
    gate = asyncio.Event()
    scorer = FakeScorer(gate=gate)
    offsets = WatchedOffsets(i * 0.01 for i in range(10))

    async def open_the_gate_after_the_schedule() -> None:
        # every later send falls due while three are stuck
        await eventually_async(lambda: offsets.gone_through)
        assert len(scorer.calls) == 3
        gate.set()

    async with asyncio.TaskGroup() as group:  # a failed wait stops the run too
        run = group.create_task(run_open_loop(scorer, [request(i) for i in range(10)], offsets, timeout_s=5,
                                              max_outstanding=3))
        group.create_task(open_the_gate_after_the_schedule())
    result = run.result()
    statuses = [r.status for r in result.records]
    assert statuses == ["OK"] * 3 + [CLIENT_REJECTED] * 7
    assert all(r.sent is None for r in result.records[3:])
    assert [r.intended for r in result.records] == offsets  # rejected at their intended time, not dropped
    assert scorer.peak == 3


async def test_open_loop_needs_a_request_per_arrival():
    with pytest.raises(ValueError, match="only 1 requests"):
        await run_open_loop(FakeScorer(), [request(0)], [0.0, 0.1], timeout_s=1)


async def test_closed_loop_keeps_n_in_flight_and_stops_at_the_count():
    scorer = FakeScorer()
    stream = iter([request(i) for i in range(100)])
    result = await run_closed_loop(scorer, stream, concurrency=3, timeout_s=1, max_requests=10)
    assert [r.index for r in result.records] == list(range(10))
    assert len(scorer.calls) == 10
    assert scorer.peak == 3
    assert all(r.intended == r.sent for r in result.records)  # no schedule: nothing to correct
    assert all(r.status == "OK" for r in result.records)


async def test_closed_loop_stops_at_the_duration_or_when_requests_run_out():
    result = await run_closed_loop(FakeScorer(), iter([request(i) for i in range(10_000)]), concurrency=2,
                                   timeout_s=1, duration_s=0.05)
    assert result.records and all(r.sent < 0.05 for r in result.records)
    result = await run_closed_loop(FakeScorer(), iter([request(i) for i in range(4)]), concurrency=3,
                                   timeout_s=1, duration_s=60)
    assert len(result.records) == 4


async def test_closed_loop_needs_a_bound():
    with pytest.raises(ValueError, match="needs a bound"):
        await run_closed_loop(FakeScorer(), iter([]), concurrency=1, timeout_s=1)


class FailingScorer:
    async def score(self, request: pb.ScoreCandidatesRequest, timeout: float) -> None:
        raise ScoringFailed("HTTP_503", "overloaded")


async def test_a_non_grpc_failure_is_recorded_by_its_status():
    assert await call_outcome(FailingScorer(), pb.ScoreCandidatesRequest(), timeout_s=1.0) == Outcome("HTTP_503")


class ReplicaScorer:
    """Answers as serving.client.RankingClient.score_served does: named by replica;
    fails odd request ids UNAVAILABLE, named in the trailing metadata."""

    async def score(self, request: pb.ScoreCandidatesRequest, timeout: float) -> Served:
        index = int(request.request_id[1:])
        if index % 2:
            raise grpc.aio.AioRpcError(grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(),
                                       grpc.aio.Metadata((REPLICA_HEADER, "b:2")), details="draining")
        return Served(pb.ScoreCandidatesResponse(request_id=request.request_id), replica="a:1")


async def test_records_name_the_replica_that_answered_or_failed():
    result = await run_closed_loop(ReplicaScorer(), iter([request(i) for i in range(4)]), concurrency=2,
                                   timeout_s=1.0, max_requests=4)
    assert [(r.status, r.replica) for r in result.records] == [("OK", "a:1"), ("UNAVAILABLE", "b:2")] * 2
    plain = await call_outcome(FakeScorer(), request(0), timeout_s=1.0)
    assert plain == Outcome("OK", None)  # an answer that names no replica


async def test_a_closed_loop_worker_refused_as_overloaded_pauses_before_its_next_request(monkeypatch):
    monkeypatch.setattr("loadtest.runner.OVERLOADED_PAUSE_SECONDS", 0.05)
    scorer = FakeScorer(fail={"r0": grpc.StatusCode.RESOURCE_EXHAUSTED, "r2": grpc.StatusCode.UNAVAILABLE})
    result = await run_closed_loop(scorer, iter([request(i) for i in range(4)]), concurrency=1, timeout_s=1,
                                   max_requests=4)
    first, second, third, fourth = result.records
    assert first.status == "RESOURCE_EXHAUSTED" and second.sent - first.end >= 0.05
    assert third.status == "UNAVAILABLE" and fourth.sent - third.end < 0.05  # only overload pauses
