"""An asyncio client for brew.v1.RankingService, with deadlines and safe retries.

Every call has a deadline (the `timeout`, in seconds, covers all attempts).
Only calls that did no work are retried, so another attempt cannot score
twice: UNAVAILABLE (server starting, draining, or its engine down) and
RESOURCE_EXHAUSTED (the server refused the call at admission: overloaded;
retried after a longer backoff, so retries do not add to the overload).
Every other code is the answer and is raised at once as
grpc.aio.AioRpcError. Retries back off exponentially with full jitter and
never outlive the deadline; `NO_RETRY` turns them off (the load generator
uses it: one record per attempt).

Every ScoreCandidates call carries the member id in the `x-brew-member`
header (serving.replica), so an Envoy in front (`brew cluster`) keeps a
member on one replica and its prefix cache; `score_served` also says which
replica answered (`x-brew-replica`).

    async with RankingClient("127.0.0.1:50051") as client:
        response = await client.score(request, timeout=1.0)
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from brew.v1 import ranking_pb2 as pb
from brew.v1 import ranking_pb2_grpc
from serving.replica import MEMBER_HEADER, member_header_value, replica_from_metadata

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """Retries of UNAVAILABLE, and of RESOURCE_EXHAUSTED unless
    `retry_overloaded` is off: at most `max_attempts` in all."""

    max_attempts: int = 3
    initial_backoff_seconds: float = 0.05
    max_backoff_seconds: float = 1.0
    overloaded_backoff_seconds: float = 0.2  # the first backoff after RESOURCE_EXHAUSTED
    retry_overloaded: bool = True

    def retries(self, code: grpc.StatusCode) -> bool:
        return code is grpc.StatusCode.UNAVAILABLE or (
            code is grpc.StatusCode.RESOURCE_EXHAUSTED and self.retry_overloaded)

    def backoff(self, attempt: int, code: grpc.StatusCode = grpc.StatusCode.UNAVAILABLE) -> float:
        """Full jitter: uniform in [0, min(max, initial * 2**attempt)], the
        initial backoff of RESOURCE_EXHAUSTED being the longer one."""
        initial = (self.overloaded_backoff_seconds if code is grpc.StatusCode.RESOURCE_EXHAUSTED
                   else self.initial_backoff_seconds)
        return random.uniform(0, min(self.max_backoff_seconds, initial * 2**attempt))


NO_RETRY = RetryPolicy(max_attempts=1)


@dataclass(frozen=True)
class Served:
    """An answer and the replica that gave it (None: the server names none)."""

    response: pb.ScoreCandidatesResponse
    replica: str | None


def error_replica(error: grpc.aio.AioRpcError) -> str | None:
    """The replica that answered with this error, if it named itself."""
    return replica_from_metadata(error.trailing_metadata())


class RankingClient:
    """One channel to one server; cheap to share between many concurrent calls."""

    def __init__(
        self,
        target: str,
        *,
        tls_root_cert: Path | bytes | None = None,
        tls_server_name: str | None = None,
        token: str | None = None,
        retry: RetryPolicy = RetryPolicy(),
        max_message_bytes: int = 8 * 1024 * 1024,
        member_header: bool = True,
    ) -> None:
        """`member_header=False` leaves x-brew-member out: Envoy then balances
        by least request instead of keeping members on replicas."""
        options: list[tuple[str, object]] = [
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
        ]
        if tls_server_name:
            options.append(("grpc.ssl_target_name_override", tls_server_name))
        if tls_root_cert is not None:
            root = tls_root_cert.read_bytes() if isinstance(tls_root_cert, Path) else tls_root_cert
            self._channel = grpc.aio.secure_channel(target, grpc.ssl_channel_credentials(root), options=options)
        else:
            self._channel = grpc.aio.insecure_channel(target, options=options)
        self._metadata = (("authorization", f"Bearer {token}"),) if token else ()
        self._retry = retry
        self._member_header = member_header
        self._ranking = ranking_pb2_grpc.RankingServiceStub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)
        self._admin = ranking_pb2_grpc.AdminServiceStub(self._channel)

    async def __aenter__(self) -> RankingClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._channel.close()

    async def score(self, request: pb.ScoreCandidatesRequest, timeout: float = 5.0) -> pb.ScoreCandidatesResponse:
        """ScoreCandidates within `timeout` seconds, retrying calls that did no work."""
        return (await self.score_served(request, timeout)).response

    async def score_served(self, request: pb.ScoreCandidatesRequest, timeout: float = 5.0) -> Served:
        """As `score`, with the replica that answered (the x-brew-replica header)."""
        metadata = self._metadata
        member = member_header_value(request.member.member_id) if self._member_header else None
        if member is not None:
            metadata = (*metadata, (MEMBER_HEADER, member))

        async def attempt(remaining: float) -> Served:
            call = self._ranking.ScoreCandidates(request, timeout=remaining, metadata=metadata)
            response = await call
            return Served(response, replica_from_metadata(await call.trailing_metadata()))

        return await self._with_retries(attempt, timeout)

    async def list_tasks(self, timeout: float = 5.0) -> pb.ListTasksResponse:
        return await self._with_retries(
            lambda remaining: self._ranking.ListTasks(pb.ListTasksRequest(), timeout=remaining,
                                                      metadata=self._metadata),
            timeout,
        )

    async def reload_prompts(self, timeout: float = 30.0) -> pb.ReloadPromptsResponse:
        """AdminService/ReloadPrompts; no retries (FAILED_PRECONDITION lists
        the lint errors, and the old prompts keep serving)."""
        return await self._admin.ReloadPrompts(pb.ReloadPromptsRequest(), timeout=timeout, metadata=self._metadata)

    async def health(self, service: str = "", timeout: float = 5.0) -> int:
        """The health status (health_pb2.HealthCheckResponse.SERVING, ...); no retries."""
        response = await self._health.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
        return response.status

    async def wait_until_serving(self, timeout: float) -> None:
        """Poll health until SERVING; TimeoutError after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                if await self.health(timeout=1.0) == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.aio.AioRpcError as error:
                if error.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                    raise
            if time.monotonic() > deadline:
                raise TimeoutError(f"server not SERVING after {timeout}s")
            await asyncio.sleep(0.2)

    async def _with_retries(self, call: Callable[[float], Awaitable[T]], timeout: float) -> T:
        deadline = time.monotonic() + timeout
        attempt = 0
        while True:
            try:
                return await call(max(0.0, deadline - time.monotonic()))
            except grpc.aio.AioRpcError as error:
                attempt += 1
                if not self._retry.retries(error.code()) or attempt >= self._retry.max_attempts:
                    raise
                pause = self._retry.backoff(attempt, error.code())
                if time.monotonic() + pause >= deadline:
                    raise
                await asyncio.sleep(pause)
