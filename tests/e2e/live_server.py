"""Shared pieces of the in-process end-to-end tests: a real server on a real localhost
port (in this process, so tests can also look at its engine), a client, and
a /metrics scraper that parses with Prometheus' own text parser."""

from __future__ import annotations

import copy
import urllib.request
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from brew import defaults
from brew.v1 import ranking_pb2 as pb
from brew.wire import parse_request_json
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


def example_request() -> pb.ScoreCandidatesRequest:
    return parse_request_json(defaults.EXAMPLE_REQUEST.read_text(encoding="utf-8"))


def job_request(candidates: int, request_id: str = "jobs") -> pb.ScoreCandidatesRequest:
    """The example member with `candidates` job candidates (copies of the
    example's jobs with distinct ids)."""
    request = example_request()
    jobs = list(request.tasks[0].candidates)
    task = pb.TaskCandidates(task="job_apply")
    for index in range(candidates):
        item = copy.deepcopy(jobs[index % len(jobs)])
        item.item_id = f"job-{index}"
        task.candidates.append(item)
    del request.tasks[:]
    request.tasks.append(task)
    request.request_id = request_id
    return request


def scores(response: pb.ScoreCandidatesResponse) -> dict[tuple[str, str], float]:
    return {(r.task, s.item_id): s.score for r in response.results for s in r.scores}


class Metrics:
    """One scrape of /metrics: sample values by name and labels."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.samples = [s for family in text_string_to_metric_families(text) for s in family.samples]

    def value(self, name: str, **labels: str) -> float:
        """Sum of the samples called `name` whose labels include `labels`."""
        return sum(
            s.value for s in self.samples
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
        )


def scrape(server: BrewServer) -> Metrics:
    assert server.endpoints is not None
    url = f"http://{server.config.metrics_host}:{server.endpoints.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as answer:
        return Metrics(answer.read().decode())
