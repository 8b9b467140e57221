"""Shared pieces of the in-process end-to-end tests: a real server on a real localhost
port (in this process, so tests can also look at its engine), a client, and
its /metrics scraped."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from service_wire import Metrics, scrape_url

from serving.client import NO_RETRY, RankingClient
from serving.config import load_config
from serving.server import BrewServer


@asynccontextmanager
async def running_server(**settings: Any) -> AsyncIterator[BrewServer]:
    """A BrewServer on free ports (gRPC and metrics), stopped on exit."""
    server = BrewServer(load_config(None, port=0, metrics_port=0, **settings))
    await server.start()
    try:
        yield server
    finally:
        await server.stop(grace_seconds=1.0)


def client_for(server: BrewServer, **options: Any) -> RankingClient:
    assert server.endpoints is not None
    options.setdefault("retry", NO_RETRY)
    return RankingClient(f"{server.config.host}:{server.endpoints.grpc_port}", **options)


def scrape(server: BrewServer) -> Metrics:
    assert server.endpoints is not None
    return scrape_url(f"http://{server.config.metrics_host}:{server.endpoints.metrics_port}/metrics")
