"""Send the load: open-loop on a schedule, or closed-loop with N callers.

Open-loop is the mode that answers "how much can one replica take": every
request goes out at its intended time (loadtest.schedule) whether or not
earlier ones have been answered, as traffic from independent users does, so
a slow server meets more outstanding requests rather than a politely slower
client. A cap on outstanding requests keeps a dead or stalled server from
growing the client's memory without bound; a request that finds the cap full
is recorded as CLIENT_REJECTED at its intended time, never silently dropped.

Closed-loop runs N workers that each send their next request as soon as the
previous one is answered: the load adapts to the server, so it measures
latency at a given concurrency, not at a given arrival rate. A worker
refused with RESOURCE_EXHAUSTED waits OVERLOADED_PAUSE_SECONDS first, as a
client backing off does: an overloaded server refuses in microseconds, and
N workers resending at once would only measure how fast it says no.

Both stop at a duration and/or a request count, record every attempt
(loadtest.records), show a tqdm progress bar on request, and call exactly
one address through a client that never retries (serving.client.NO_RETRY),
so each record is one honest attempt with its own deadline. The client
sends each request's member id in x-brew-member (Envoy's affinity key
behind `brew cluster`), and each record keeps the replica that answered.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Protocol

import grpc
from tqdm import tqdm

from brew.v1 import ranking_pb2 as pb
from loadtest.records import CLIENT_REJECTED, OK, RequestRecord
from loadtest.workload import candidate_count
from serving.client import NO_RETRY, RankingClient, Served, error_replica

# Closed-loop: a refused worker's pause before its next request (the client's first overload backoff).
OVERLOADED_PAUSE_SECONDS = 0.2
REFUSED = grpc.StatusCode.RESOURCE_EXHAUSTED.name


class Scorer(Protocol):
    """What the runners call: ServedScorer, loadtest.http_client, loadtest.bench.vllm_http,
    or a fake in tests. Failures raise grpc.aio.AioRpcError or ScoringFailed; an answer
    with a `replica` (serving.client.Served, loadtest.http_client.HttpAnswer) names the
    replica that gave it."""

    async def score(self, request: pb.ScoreCandidatesRequest, timeout: float) -> object: ...


class ServedScorer:
    """A RankingClient as a Scorer whose answers name their replica."""

    def __init__(self, client: RankingClient) -> None:
        self.client = client

    async def score(self, request: pb.ScoreCandidatesRequest, timeout: float) -> Served:
        return await self.client.score_served(request, timeout=timeout)


class Transport(StrEnum):
    """How the load reaches the server: gRPC's RankingService, or the HTTP
    API's POST /v1/brew/score (loadtest.http_client) with the same requests."""

    GRPC = "grpc"
    HTTP = "http"


@dataclass(frozen=True)
class Target:
    """One server to load, and how to reach it."""

    address: str  # host:port (the gRPC port, or the HTTP port with Transport.HTTP)
    tls_root_cert: Path | None = None
    tls_server_name: str | None = None
    token: str | None = None
    member_header: bool = True  # False: no x-brew-member, so Envoy balances by least request
    transport: Transport = Transport.GRPC

    @property
    def http_url(self) -> str:
        """The base URL of the HTTP API at `address`."""
        return f"{'https' if self.tls_root_cert else 'http'}://{self.address}"

    def client(self) -> RankingClient:
        """A client that never retries: one record per attempt."""
        return RankingClient(self.address, tls_root_cert=self.tls_root_cert,
                             tls_server_name=self.tls_server_name, token=self.token, retry=NO_RETRY,
                             member_header=self.member_header)


@dataclass(frozen=True)
class RunResult:
    records: tuple[RequestRecord, ...]  # in request order
    wall_s: float  # from the start to the last answer (open-loop: at least the offered window)
    started_at: str  # UTC, ISO 8601


class ScoringFailed(Exception):
    """Raised by a non-gRPC scorer: `status` is what the record says, in
    gRPC's names where one fits (DEADLINE_EXCEEDED), else e.g. "HTTP_503";
    `replica` the replica that answered, if it named itself."""

    def __init__(self, status: str, detail: str = "", replica: str | None = None) -> None:
        super().__init__(f"{status}: {detail}" if detail else status)
        self.status = status
        self.replica = replica


@dataclass(frozen=True)
class Outcome:
    status: str  # the gRPC status code name, or a ScoringFailed status
    replica: str | None = None


async def call_outcome(scorer: Scorer, request: pb.ScoreCandidatesRequest, timeout_s: float) -> Outcome:
    """One attempt: the status it ended with, and the replica that said so."""
    try:
        answer = await scorer.score(request, timeout=timeout_s)
    except grpc.aio.AioRpcError as error:
        return Outcome(error.code().name, error_replica(error))
    except ScoringFailed as error:
        return Outcome(error.status, error.replica)
    return Outcome(OK, getattr(answer, "replica", None))


def _progress(total: int | None, mode: str, enabled: bool) -> tqdm:  # type: ignore[type-arg]
    return tqdm(total=total, desc=mode, unit="req", disable=not enabled, dynamic_ncols=True, leave=False)


def _now_utc() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


async def run_open_loop(
    scorer: Scorer,
    requests: Sequence[pb.ScoreCandidatesRequest],
    offsets: Sequence[float],
    *,
    timeout_s: float,
    max_outstanding: int = 1000,
    duration_s: float | None = None,
    progress: bool = False,
) -> RunResult:
    """Send requests[i] at offsets[i] seconds after the start, never waiting
    for earlier answers; then wait for every outstanding answer.

    The run lasts at least `duration_s` (the window the load was offered
    over, when the schedule has one), or until the last answer if later.
    """
    if len(requests) < len(offsets):
        raise ValueError(f"{len(offsets)} arrivals but only {len(requests)} requests")
    if max_outstanding < 1:
        raise ValueError(f"max_outstanding must be >= 1, got {max_outstanding}")
    records: list[RequestRecord | None] = [None] * len(offsets)
    pending: set[asyncio.Task[None]] = set()
    outstanding = 0  # sent and not yet answered
    bar = _progress(len(offsets), "open-loop", progress)
    started_at, start = _now_utc(), time.perf_counter()

    def clock() -> float:
        return time.perf_counter() - start

    def finished(record: RequestRecord) -> None:
        records[record.index] = record
        bar.update()
        bar.set_postfix(outstanding=outstanding, refresh=False)

    async def send(index: int, request: pb.ScoreCandidatesRequest, intended: float) -> None:
        nonlocal outstanding
        sent = clock()
        try:
            outcome = await call_outcome(scorer, request, timeout_s)
        finally:
            outstanding -= 1
        finished(RequestRecord(index, request.request_id, candidate_count(request), intended, sent, clock(),
                               outcome.status, outcome.replica))

    with bar:
        for index, (intended, request) in enumerate(zip(offsets, requests)):
            delay = intended - clock()
            if delay > 0:
                await asyncio.sleep(delay)
            if outstanding >= max_outstanding:
                finished(RequestRecord(index, request.request_id, candidate_count(request), intended, None,
                                       clock(), CLIENT_REJECTED))
                continue
            outstanding += 1
            task = asyncio.create_task(send(index, request, intended))
            pending.add(task)
            task.add_done_callback(pending.discard)
        while pending:
            await asyncio.gather(*pending)
    wall = max(clock(), duration_s or 0.0)
    assert all(record is not None for record in records)
    return RunResult(tuple(r for r in records if r is not None), wall, started_at)


async def run_closed_loop(
    scorer: Scorer,
    requests: Iterator[pb.ScoreCandidatesRequest],
    *,
    concurrency: int,
    timeout_s: float,
    duration_s: float | None = None,
    max_requests: int | None = None,
    progress: bool = False,
) -> RunResult:
    """`concurrency` workers, each sending its next request when the previous
    one is answered, until `duration_s` has passed or `max_requests` were sent
    (or `requests` runs out). Requests are drawn from the iterator on demand."""
    if concurrency < 1:
        raise ValueError(f"concurrency must be >= 1, got {concurrency}")
    if duration_s is None and max_requests is None:
        raise ValueError("a closed-loop run needs a bound: a duration, a request count, or both")
    records: list[RequestRecord] = []
    numbers = itertools.count()
    bar = _progress(max_requests, "closed-loop", progress)
    started_at, start = _now_utc(), time.perf_counter()

    def clock() -> float:
        return time.perf_counter() - start

    async def worker() -> None:
        while duration_s is None or clock() < duration_s:
            index = next(numbers)
            request = next(requests, None) if max_requests is None or index < max_requests else None
            if request is None:
                return
            sent = clock()  # no schedule: intended is the send time
            # The same reading decides: drawing the request may have taken the
            # run past its duration, and nothing is sent after it.
            if duration_s is not None and sent >= duration_s:
                return
            outcome = await call_outcome(scorer, request, timeout_s)
            records.append(RequestRecord(index, request.request_id, candidate_count(request), sent, sent,
                                         clock(), outcome.status, outcome.replica))
            bar.update()
            if outcome.status == REFUSED:
                await asyncio.sleep(OVERLOADED_PAUSE_SECONDS)

    with bar:
        await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall = clock()
    return RunResult(tuple(sorted(records, key=lambda r: r.index)), wall, started_at)
