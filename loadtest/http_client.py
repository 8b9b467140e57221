"""The load generator's HTTP client: one server's HTTP/JSON API as a Scorer.

`HttpScorer` is the plumbing every HTTP target shares: one aiohttp session
whose connection pool has no cap (open-loop load must not queue in the
client), readiness by polling `GET /health`, and every failure recorded as a
ScoringFailed whose status is gRPC's name for the same failure (429 ->
RESOURCE_EXHAUSTED, 503 -> UNAVAILABLE, 504 or the client's deadline ->
DEADLINE_EXCEEDED), so both transports are summarized, and judged against
the SLO, by the same code. `BrewHttpScorer` sends a Brew request to
`POST /v1/brew/score` in the proto's JSON mapping, with its deadline in
`x-request-timeout` and its member in `x-brew-member`;
loadtest.bench.vllm_http drives vLLM's `/generative_scoring` through the
same plumbing.

aiohttp, not httpx: the client shares the machine with the server it
measures, and httpx's client spent about 20 times aiohttp's CPU per request
(2.6 ms against 0.12 ms, 64 requests in flight, measured on the machine of
BENCHMARKS.md); with a few hundred connections open it fell behind its own
schedule and reported the stall as the server's latency.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import aiohttp
from google.protobuf import json_format

from brew.v1 import ranking_pb2 as pb
from loadtest.runner import ScoringFailed
from serving.replica import MEMBER_HEADER, REPLICA_HEADER, member_header_value

# gRPC's names for the HTTP API's answers (serving/http/errors.py's table, read backwards).
STATUS_NAMES = {
    400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 404: "NOT_FOUND", 413: "INVALID_ARGUMENT",
    415: "INVALID_ARGUMENT", 429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 502: "UNAVAILABLE",
    503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED",
}
# The client waits this much past a request's deadline for the server's own 504.
DEADLINE_SLACK_SECONDS = 0.5


def status_name(code: int) -> str:
    return STATUS_NAMES.get(code, f"HTTP_{code}")


@dataclass(frozen=True)
class HttpAnswer:
    """A 200 answer: its JSON body, and the replica that gave it (x-brew-replica)."""

    body: Any
    replica: str | None


class HttpScorer:
    """One HTTP server; use it as an async context manager."""

    def __init__(self, base_url: str, headers: dict[str, str] | None = None,
                 tls_root_cert: Path | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self._headers = {"content-type": "application/json", **(headers or {})}
        self._ssl: ssl.SSLContext | bool = (ssl.create_default_context(cafile=str(tls_root_cert))
                                            if tls_root_cert else True)
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Self:
        self._session = aiohttp.ClientSession(self.base_url, headers=self._headers,
                                              connector=aiohttp.TCPConnector(limit=0, ssl=self._ssl),
                                              timeout=aiohttp.ClientTimeout(total=None))
        return self

    async def __aexit__(self, kind: type[BaseException] | None, error: BaseException | None,
                        traceback: TracebackType | None) -> None:
        if self._session is not None:
            await self._session.close()

    async def wait_until_ready(self, timeout_s: float) -> None:
        """Poll GET /health until it answers 200 (the model is loaded)."""
        session = self._client()
        deadline = asyncio.get_running_loop().time() + timeout_s
        while True:
            try:
                async with session.get("/health", timeout=aiohttp.ClientTimeout(total=2.0)) as reply:
                    if reply.status == 200:
                        return
            except (aiohttp.ClientError, TimeoutError):
                pass
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"server at {self.base_url} not ready after {timeout_s:g} s")
            await asyncio.sleep(0.5)

    # RankingClient's name for the same wait, so either stands in for the other.
    wait_until_serving = wait_until_ready

    async def post(self, path: str, content: bytes, timeout: float | None,
                   headers: dict[str, str] | None = None) -> HttpAnswer:
        """The 200 answer to one POST; ScoringFailed (gRPC's status name) otherwise."""
        limit = aiohttp.ClientTimeout(total=None if timeout is None else timeout + DEADLINE_SLACK_SECONDS)
        try:
            async with self._client().post(path, data=content, headers=headers, timeout=limit) as reply:
                body = await reply.read()
                replica = reply.headers.get(REPLICA_HEADER)
                if reply.status != 200:
                    raise ScoringFailed(status_name(reply.status), body[:200].decode("utf-8", "replace"),
                                        replica=replica)
        except TimeoutError:
            raise ScoringFailed("DEADLINE_EXCEEDED") from None
        except aiohttp.ClientError as error:
            raise ScoringFailed("UNAVAILABLE", str(error)) from error
        try:
            return HttpAnswer(json.loads(body), replica)
        except ValueError:
            raise ScoringFailed("INTERNAL", f"the answer is not JSON: {body[:200]!r}", replica=replica) from None

    def _client(self) -> aiohttp.ClientSession:
        assert self._session is not None, "use the scorer as an async context manager"
        return self._session


class BrewHttpScorer(HttpScorer):
    """A Brew server's `POST /v1/brew/score` as a loadtest Scorer."""

    def __init__(self, base_url: str, *, token: str | None = None, tls_root_cert: Path | None = None,
                 member_header: bool = True) -> None:
        super().__init__(base_url, {"authorization": f"Bearer {token}"} if token else None, tls_root_cert)
        self._member_header = member_header

    async def score(self, request: pb.ScoreCandidatesRequest, timeout: float) -> HttpAnswer:
        """The answer (its body in the proto's JSON mapping); ScoringFailed otherwise."""
        headers = {"x-request-timeout": f"{timeout:g}"}
        member = member_header_value(request.member.member_id) if self._member_header else None
        if member:
            headers[MEMBER_HEADER] = member
        body = json_format.MessageToJson(request, indent=None).encode()
        return await self.post("/v1/brew/score", body, timeout, headers)
