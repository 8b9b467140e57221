"""The HTTP edge with a fake engine (no model, no socket): the status table,
the error object, Retry-After, the probes following the lifecycle, the
bearer token and the shapes the peer APIs answer. Milliseconds; the real
server on a real port is tests/e2e/test_http_api.py."""

from __future__ import annotations

from http import HTTPStatus

import pytest
from fastapi.testclient import TestClient
from test_ranker import FakeEngine

from brew.errors import InvalidRequestError, TaskConfigError
from brew.ranker import Ranker
from brew.verbalize import Verbalizer
from serving.config import BatchingConfig, ServerConfig
from serving.dispatcher import Dispatcher
from serving.errors import (
    DeadlineExceededError,
    EngineFailedError,
    NotReadyError,
    OverloadedError,
    QueueFullError,
    ShedError,
    ShuttingDownError,
)
from serving.http.app import create_app
from serving.http.errors import error_type, status_for
from serving.lifecycle import Lifecycle
from serving.metrics import ServiceMetrics
from serving.service import ScoringService

RAW = {"query": [5, 6, 7], "items": [[8], [9, 10]], "label_token_ids": [392, 391]}


@pytest.fixture
def parts(shipped_tasks, demo_tokenizer):
    lifecycle = Lifecycle()
    metrics = ServiceMetrics(slo_seconds=0.5, model="fake-model")
    service = ScoringService(lifecycle, metrics, ServerConfig().limits)
    return lifecycle, metrics, service, Ranker(Verbalizer(shipped_tasks, demo_tokenizer, 1024), FakeEngine())


def client_for(parts, **settings) -> TestClient:  # type: ignore[no-untyped-def]
    _, metrics, service, _ = parts
    app = create_app(service, ServerConfig(**settings), metrics.registry, lambda: "replica-7")
    return TestClient(app, raise_server_exceptions=False)


@pytest.fixture
def serving(parts):
    lifecycle, _, service, ranker = parts
    with client_for(parts) as client:  # the client's loop runs the dispatcher
        client.portal.call(_install, service, ranker)
        lifecycle.to_serving()
        yield client


async def _install(service: ScoringService, ranker: Ranker) -> None:
    dispatcher = Dispatcher(ranker.engine, BatchingConfig())
    dispatcher.start()
    service.install(ranker, dispatcher)


@pytest.mark.parametrize(("error", "status"), [
    (InvalidRequestError("x"), 400), (QueueFullError("x"), 429), (OverloadedError("x"), 429),
    (DeadlineExceededError("x"), 504), (ShedError("x"), 504), (NotReadyError("x"), 503),
    (ShuttingDownError("x"), 503), (EngineFailedError("x"), 503), (TaskConfigError("x"), 500),
    (RuntimeError("x"), 500),
])
def test_the_status_table(error, status):
    assert status_for(error) == status


def test_error_types_are_vllms_names():
    assert [error_type(s) for s in (HTTPStatus.BAD_REQUEST, HTTPStatus.TOO_MANY_REQUESTS,
                                    HTTPStatus.SERVICE_UNAVAILABLE, HTTPStatus.INTERNAL_SERVER_ERROR)] == [
        "BadRequestError", "TooManyRequestsError", "ServiceUnavailableError", "InternalServerError"]


def test_while_loading_health_is_503_live_is_200_and_calls_are_503(parts):
    with client_for(parts) as client:
        health = client.get("/health")
        assert health.status_code == 503 and "model is loading" in health.json()["message"]
        assert client.get("/live").status_code == 200
        reply = client.post("/v1/score", json=RAW)
        assert reply.status_code == 503 and reply.json()["type"] == "ServiceUnavailableError"
        assert reply.headers["x-brew-replica"] == "replica-7"


def test_a_refusal_at_the_door_is_429_with_retry_after(serving, parts, monkeypatch):
    _, _, service, _ = parts

    def full(candidates, deadline, slo=None):  # type: ignore[no-untyped-def]
        raise QueueFullError("queue is full (4096 candidates); retry after a backoff")

    monkeypatch.setattr(service.dispatcher, "reserve", full)
    reply = serving.post("/generative_scoring", json=RAW)
    assert reply.status_code == 429 and reply.headers["retry-after"] == "1"
    assert reply.json() == {"object": "error", "message": "queue is full (4096 candidates); retry after a backoff",
                            "type": "TooManyRequestsError", "param": None, "code": 429}


def test_the_peer_shapes(serving):
    sglang = serving.post("/v1/score", json=RAW).json()
    assert set(sglang) == {"scores", "pooled_hidden_states", "model", "usage", "object"}
    assert sglang["object"] == "scoring" and len(sglang["scores"]) == 2 and len(sglang["scores"][0]) == 2
    assert sglang["usage"]["prompt_tokens"] == 4 + 5
    vllm = serving.post("/generative_scoring", json={**RAW, "request_id": "r1"}).json()
    assert set(vllm) == {"id", "object", "created", "model", "data", "usage"}
    assert vllm["id"] == "generative-scoring-r1" and vllm["model"] == "fake-model"
    assert vllm["data"][1] == {"index": 1, "object": "score", "score": vllm["data"][1]["score"]}
    assert vllm["data"][1]["score"] == pytest.approx(
        serving.post("/v1/score", json={**RAW, "apply_softmax": True}).json()["scores"][1][0], abs=1e-12)


def test_sglang_fields_brew_cannot_honour_are_refused_by_name(serving):
    reply = serving.post("/v1/score", json={**RAW, "return_pooled_hidden_states": True})
    assert reply.status_code == 400 and "return_pooled_hidden_states is not supported" in reply.json()["message"]
    reply = serving.post("/v1/score", json={"items": ["a"], "label_token_ids": [1]})
    assert reply.status_code == 400 and reply.json()["message"] == "query is required"


def test_a_bearer_token_guards_everything_but_the_probes(parts):
    with client_for(parts, auth_token="s3cret") as client:
        refused = client.post("/v1/score", json=RAW)
        assert refused.status_code == 401 and refused.headers["www-authenticate"] == "Bearer"
        assert client.get("/v1/brew/tasks", headers={"authorization": "Bearer wrong"}).status_code == 401
        assert client.get("/live").status_code == 200 and client.get("/metrics").status_code == 200
        # Past the edge: the service answers (not serving yet).
        assert client.post("/v1/score", json=RAW, headers={"authorization": "Bearer s3cret"}).status_code == 503


def test_text_utf8_cannot_carry_is_refused_before_any_work(serving):
    lone = b'{"query": "a\\ud800", "items": ["x"], "label_token_ids": [1]}'
    for path in ("/v1/score", "/generative_scoring", "/v1/brew/score"):
        reply = serving.post(path, content=lone, headers={"content-type": "application/json"})
        assert reply.status_code == 400 and "unpaired surrogate" in reply.json()["message"], (path, reply.text)
    paired = b'{"query": "a \\ud83d\\ude00", "items": ["x"], "label_token_ids": [392, 391]}'  # an emoji, escaped
    assert serving.post("/v1/score", content=paired, headers={"content-type": "application/json"}).status_code == 200
