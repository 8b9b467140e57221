"""The load generator's HTTP client: one server's HTTP/JSON API as a Scorer.

`HttpScorer` is the plumbing every HTTP target shares: one httpx connection
pool without a cap (open-loop load must not queue in the client), readiness
by polling `GET /health`, and every failure recorded as a ScoringFailed whose
status is gRPC's name for the same failure (429 -> RESOURCE_EXHAUSTED, 503 ->
UNAVAILABLE, 504 or the client's deadline -> DEADLINE_EXCEEDED), so both
transports are summarized, and judged against the SLO, by the same code.
`BrewHttpScorer` sends a Brew request to `POST /v1/brew/score` in the
proto's JSON mapping, with its deadline in `x-request-timeout` and its member
in `x-brew-member`; loadtest.bench.vllm_http drives vLLM's
`/generative_scoring` through the same plumbing.
"""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path
from types import TracebackType
from typing import Self

import httpx
from google.protobuf import json_format

from brew.v1 import ranking_pb2 as pb
from loadtest.runner import ScoringFailed
from serving.client import Served
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


class HttpScorer:
    """One HTTP server; use it as an async context manager."""

    def __init__(self, base_url: str, headers: dict[str, str] | None = None,
                 tls_root_cert: Path | None = None, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self._headers = {"content-type": "application/json", **(headers or {})}
        self._verify: ssl.SSLContext | bool = (ssl.create_default_context(cafile=str(tls_root_cert))
                                                if tls_root_cert else True)
        self._transport = transport  # None: the network (tests pass httpx.MockTransport)
        self._http: httpx.AsyncClient | None = None

    async def __aenter__(self) -> Self:
        self._http = httpx.AsyncClient(base_url=self.base_url, headers=self._headers, verify=self._verify,
                                       limits=httpx.Limits(max_connections=None, max_keepalive_connections=None),
                                       transport=self._transport)
        return self

    async def __aexit__(self, kind: type[BaseException] | None, error: BaseException | None,
                        traceback: TracebackType | None) -> None:
        if self._http is not None:
            await self._http.aclose()

    async def wait_until_ready(self, timeout_s: float) -> None:
        """Poll GET /health until it answers 200 (the model is loaded)."""
        http = self._client()
        deadline = asyncio.get_running_loop().time() + timeout_s
        while True:
            try:
                if (await http.get("/health", timeout=2.0)).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"server at {self.base_url} not ready after {timeout_s:g} s")
            await asyncio.sleep(0.5)

    # RankingClient's name for the same wait, so either stands in for the other.
    wait_until_serving = wait_until_ready

    async def post(self, path: str, content: bytes, timeout: float | None,
                   headers: dict[str, str] | None = None) -> httpx.Response:
        """The 200 answer to one POST; ScoringFailed (gRPC's status name) otherwise."""
        try:
            reply = await self._client().post(path, content=content, headers=headers,
                                              timeout=None if timeout is None else timeout + DEADLINE_SLACK_SECONDS)
        except httpx.TimeoutException:
            raise ScoringFailed("DEADLINE_EXCEEDED") from None
        except httpx.TransportError as error:
            raise ScoringFailed("UNAVAILABLE", str(error)) from error
        if reply.status_code != 200:
            raise ScoringFailed(status_name(reply.status_code), reply.text[:200],
                                replica=reply.headers.get(REPLICA_HEADER))
        return reply

    def _client(self) -> httpx.AsyncClient:
        assert self._http is not None, "use the scorer as an async context manager"
        return self._http


class BrewHttpScorer(HttpScorer):
    """A Brew server's `POST /v1/brew/score` as a loadtest Scorer."""

    def __init__(self, base_url: str, *, token: str | None = None, tls_root_cert: Path | None = None,
                 member_header: bool = True, transport: httpx.AsyncBaseTransport | None = None) -> None:
        super().__init__(base_url, {"authorization": f"Bearer {token}"} if token else None, tls_root_cert,
                         transport)
        self._member_header = member_header

    async def score(self, request: pb.ScoreCandidatesRequest, timeout: float) -> Served:
        headers = {"x-request-timeout": f"{timeout:g}"}
        member = member_header_value(request.member.member_id) if self._member_header else None
        if member:
            headers[MEMBER_HEADER] = member
        body = json_format.MessageToJson(request, indent=None).encode()
        reply = await self.post("/v1/brew/score", body, timeout, headers)
        response = json_format.Parse(reply.content, pb.ScoreCandidatesResponse(), ignore_unknown_fields=True)
        return Served(response, reply.headers.get(REPLICA_HEADER))
