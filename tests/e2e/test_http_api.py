"""The HTTP/JSON API end to end: one `brew serve --http-port` process on real
ports (torch engine), called with httpx and with curl.

What the issue's "done when" asks: one request gets identical scores over
gRPC and over /v1/brew/score; /v1/score on the demo model's token ids equals
the naive engine's probabilities within 1e-4 (both readings); /generative_scoring
gives the number /v1/score gives with apply_softmax; rerank sorts through
its task; bad input is refused with a precise 4xx and the OpenAI error
object (fuzzed with hypothesis over every endpoint); a client that leaves
cancels its work; the server keeps serving through all of it.
"""

from __future__ import annotations

import asyncio
import json
import math
import shutil
import socket
import subprocess
import sys

import grpc
import httpx
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from serve_process import running_serve, scrape
from service_wire import example_json, example_request, job_request, scores
from waiting import eventually

from brew import defaults
from brew.engines.naive import NaiveTorchEngine
from brew.scoring import label_probabilities
from brew.tokenization import PromptTokenizer
from brew.types import ScoringGroup
from brew.v1 import ranking_pb2_grpc

pytestmark = [pytest.mark.integration]

NAIVE_TOLERANCE = 1e-4  # fp32, the naive engine against the served path (multi-item included)
ENDPOINTS = ("/v1/brew/score", "/v1/score", "/generative_scoring", "/v1/rerank")
MAX_MESSAGE_BYTES = 64 * 1024


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    # Its callers are patient (x-request-timeout 120), and one test leaves a large
    # request's work in the engine when its client goes: admitted by their deadlines,
    # the calls after it are not refused for the SLO (test_overload.py covers that).
    with running_serve(tmp_path_factory.mktemp("http"), "--http-port", "0", "--admission-target", "deadline",
                       "--max-message-bytes", str(MAX_MESSAGE_BYTES)) as running:
        assert running.http_url is not None, running.stdout()
        yield running


@pytest.fixture(scope="module")
def http(server):
    # A deadline as generous as the gRPC tests give: a busy 2-core machine can be slow.
    with httpx.Client(base_url=server.http_url, timeout=120, headers={"x-request-timeout": "120"}) as client:
        yield client


@pytest.fixture(scope="module")
def tokenizer() -> PromptTokenizer:
    return PromptTokenizer.from_pretrained(defaults.DEMO_MODEL_DIR)


@pytest.fixture(scope="module")
def raw(tokenizer):
    """A query and three items as the demo model's token ids, and its label ids."""
    query = list(tokenizer.bos_ids) + tokenizer.encode(
        "task: people you may know, answer Yes or No\nmember: mid data analyst at acme, berlin, tum\n")
    items = [tokenizer.encode(f"suggested: {who}\nconnects:") for who in (
        "mid data scientist at acme, berlin, tum", "junior chef at stark, lisbon, eth",
        "senior analytics engineer at hooli, munich, tum")]
    return {"query": query, "items": items, "label_token_ids": list(tokenizer.label_ids("t", (" Yes", " No")))}


def error_of(reply: httpx.Response, status: int) -> dict:
    """The error object of a reply that must have `status`."""
    assert reply.status_code == status, reply.text
    body = reply.json()
    assert body["object"] == "error" and body["code"] == status and body["message"], body
    assert set(body) == {"object", "message", "type", "param", "code"}
    return body


# --- scores ----------------------------------------------------------------------------------------------


def test_the_native_api_gives_the_scores_grpc_gives(server, http):
    with grpc.insecure_channel(server.target) as channel:
        over_grpc = scores(ranking_pb2_grpc.RankingServiceStub(channel).ScoreCandidates(example_request(),
                                                                                        timeout=120))
    reply = http.post("/v1/brew/score", content=example_json(), headers={"content-type": "application/json"})
    assert reply.status_code == 200, reply.text
    body = reply.json()
    over_http = {(r["task"], s["itemId"]): s["score"] for r in body["results"] for s in r["scores"]}
    assert body["requestId"] == "example-1" and body["model"] == "brew-demo"
    assert over_http == over_grpc  # the same service, engine and ids: the same numbers


def test_v1_score_on_token_ids_equals_the_naive_engine(http, raw):
    for item_first in (False, True):
        naive = asyncio.run(_naive_logprobs(raw, item_first))
        for softmax in (False, True):
            reply = http.post("/v1/score", json={**raw, "apply_softmax": softmax, "item_first": item_first})
            assert reply.status_code == 200, reply.text
            body = reply.json()
            assert (body["object"], body["model"]) == ("scoring", "brew-demo")
            assert body["usage"]["prompt_tokens"] == sum(len(raw["query"]) + len(item) for item in raw["items"])
            expected = [label_probabilities(lp) if softmax else [math.exp(v) for v in lp] for lp in naive]
            assert len(body["scores"]) == len(raw["items"])
            for got, want in zip(body["scores"], expected):
                assert got == pytest.approx(list(want), abs=NAIVE_TOLERANCE), (item_first, softmax)


async def _naive_logprobs(raw: dict, item_first: bool) -> list[tuple[float, ...]]:
    """The naive engine's label log-probabilities of each prompt, whole, behind no prefix."""
    query, items = raw["query"], raw["items"]
    prompts = [item + query if item_first else query + item for item in items]
    engine = await NaiveTorchEngine.start(defaults.DEMO_MODEL_DIR)
    try:
        group = ScoringGroup((), tuple(tuple(p) for p in prompts), tuple(raw["label_token_ids"]))
        (result,) = await engine.score([group])
    finally:
        await engine.close()
    return [candidate.label_logprobs for candidate in result.candidates]


def test_generative_scoring_equals_v1_score_with_softmax_and_text_equals_its_ids(http, raw, tokenizer):
    sglang = http.post("/v1/score", json={**raw, "apply_softmax": True}).json()
    vllm = http.post("/generative_scoring", json=raw)
    assert vllm.status_code == 200, vllm.text
    body = vllm.json()
    assert (body["object"], body["model"]) == ("list", "brew-demo") and body["id"].startswith("generative-scoring-")
    assert [d["index"] for d in body["data"]] == [0, 1, 2] and all(d["object"] == "score" for d in body["data"])
    assert [d["score"] for d in body["data"]] == pytest.approx([row[0] for row in sglang["scores"]], abs=1e-12)
    # Text is tokenized as the peers do: the query with the tokenizer's special tokens, the items without.
    text = {"query": "member: data analyst", "items": ["job: analyst", "job: chef"],
            "label_token_ids": raw["label_token_ids"]}
    ids = {**text, "query": tokenizer.encode_query(text["query"]), "items": [tokenizer.encode(i) for i in text["items"]]}
    assert (http.post("/generative_scoring", json=text).json()["data"]
            == http.post("/generative_scoring", json=ids).json()["data"])


def test_rerank_sorts_documents_by_the_rerank_tasks_score(http):
    documents = ["data analyst at acme, berlin", "pastry chef in lisbon", {"text": "sql and statistics"}]
    reply = http.post("/v1/rerank", json={"query": "data analyst jobs", "documents": documents})
    assert reply.status_code == 200, reply.text
    results = reply.json()["results"]
    assert sorted(r["index"] for r in results) == [0, 1, 2]
    assert [r["relevance_score"] for r in results] == sorted((r["relevance_score"] for r in results), reverse=True)
    assert results[0]["document"]["text"] in {"data analyst at acme, berlin", "pastry chef in lisbon",
                                              "sql and statistics"}
    top = http.post("/v1/rerank", json={"query": "data analyst jobs", "documents": documents, "top_n": 1,
                                         "return_documents": False, "model": "rerank"}).json()["results"]
    assert top == [{"index": results[0]["index"], "relevance_score": results[0]["relevance_score"]}]


def test_tasks_health_live_and_metrics(http, server):
    tasks = http.get("/v1/brew/tasks").json()
    assert {t["name"] for t in tasks["tasks"]} == {"job_apply", "feed_engagement", "pymk_connect", "rerank"}
    assert http.get("/health").json() == {"status": "serving"}
    assert http.get("/live").status_code == 200
    metrics = http.get("/metrics")
    assert metrics.status_code == 200 and "brew_requests_total" in metrics.text
    assert scrape(server).value("brew_candidates_total", task="query_items", status="OK") > 0
    assert http.get("/docs").status_code == 200
    assert "/generative_scoring" in http.get("/openapi.json").json()["paths"]


def test_every_answer_names_the_replica(http, server):
    for reply in (http.get("/live"), http.post("/v1/score", json={})):
        assert reply.headers["x-brew-replica"].endswith(f":{server.port}")


# --- errors ----------------------------------------------------------------------------------------------


def test_bad_input_is_refused_naming_the_field(http, raw):
    body = error_of(http.post("/v1/score", json={**raw, "label_token_ids": [392, 10**6]}), 400)
    assert "label_token_ids[1] is 1000000" in body["message"]
    body = error_of(http.post("/generative_scoring", json={**raw, "apply_softmax": "maybe"}), 400)
    assert body["param"] == "apply_softmax" and body["type"] == "BadRequestError"
    body = error_of(http.post("/v1/score", content=b"{not json", headers={"content-type": "application/json"}), 400)
    assert "JSON" in body["message"]
    body = error_of(http.post("/v1/brew/score", json={"member": {"memberId": "m"}, "tasks": [
        {"task": "job_aply", "candidates": [{"itemId": "j"}]}]}), 400)
    assert "unknown task 'job_aply'" in body["message"]
    form = {"content-type": "application/x-www-form-urlencoded"}  # curl -d's default
    error_of(http.post("/v1/score", content=b"query=x", headers=form), 415)
    error_of(http.post("/generative_scoring", json={**raw, "model": "gpt-4"}), 404)


def test_a_body_over_the_limit_is_refused_before_it_is_parsed(http):
    big = b'{"query": "' + b"a" * MAX_MESSAGE_BYTES + b'"}'
    body = error_of(http.post("/v1/score", content=big, headers={"content-type": "application/json"}), 413)
    assert f"max_message_bytes={MAX_MESSAGE_BYTES}" in body["message"]

    def chunks():  # no content-length: the limit is counted as the body is read
        for _ in range(4):
            yield b" " * (MAX_MESSAGE_BYTES // 2)

    error_of(http.post("/v1/score", content=chunks(), headers={"content-type": "application/json"}), 413)


def test_deadlines_come_from_x_request_timeout(http):
    headers = {"content-type": "application/json"}
    error_of(http.post("/v1/brew/score", content=example_json(), headers={**headers, "x-request-timeout": "0.0001"}),
             504)
    error_of(http.post("/v1/brew/score", content=example_json(), headers={**headers, "x-request-timeout": "soon"}),
             400)
    reply = http.post("/v1/brew/score", content=example_json(), headers={**headers, "x-request-timeout": "60"})
    assert reply.status_code == 200, reply.text


def test_a_client_that_disconnects_cancels_its_work(server, http):
    cancelled = scrape(server).value("brew_requests_total", status="CANCELLED")
    # 300 candidates under MAX_MESSAGE_BYTES: rendering alone takes tens of ms and the torch engine
    # more (a quiet machine scored them all in under 0.3 s), so the caller leaves 20 ms after sending.
    body = _json_of(job_request(300, "leaves"))
    with pytest.raises(httpx.TimeoutException):
        # Sent in full (a busy machine may take a while), then given up on while it is scored.
        httpx.post(f"{server.http_url}/v1/brew/score", json=body, headers={"x-request-timeout": "120"},
                   timeout=httpx.Timeout(30.0, read=0.02))
    eventually(lambda: scrape(server).value("brew_requests_total", status="CANCELLED"), equals=cancelled + 1,
               timeout=60)
    assert http.get("/health").status_code == 200


def _json_of(message) -> dict:  # type: ignore[no-untyped-def]
    from google.protobuf import json_format

    return json_format.MessageToDict(message)


# --- with curl, as the README shows ----------------------------------------------------------------------


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_curl_reaches_every_endpoint(server, raw):
    def curl(path: str, data: str | None = None) -> tuple[int, dict]:
        command = ["curl", "-sS", "-w", "\n%{http_code}", "-H", "x-request-timeout: 120", f"{server.http_url}{path}"]
        if data is not None:
            command += ["-H", "content-type: application/json", "-d", data]
        done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=True)
        text, _, status = done.stdout.rpartition("\n")
        return int(status), json.loads(text)

    assert curl("/v1/brew/score", f"@{defaults.EXAMPLE_REQUEST}")[1]["requestId"] == "example-1"
    assert curl("/v1/brew/tasks")[0] == 200
    assert len(curl("/v1/score", json.dumps(raw))[1]["scores"]) == 3
    assert len(curl("/generative_scoring", json.dumps(raw))[1]["data"]) == 3
    assert curl("/v1/rerank", json.dumps({"query": "q", "documents": ["a", "b"]}))[1]["results"]
    assert curl("/health") == (200, {"status": "serving"})
    status, body = curl("/v1/score", json.dumps({**raw, "label_token_ids": []}))
    assert status == 400 and body["message"] == "label_token_ids is empty; give at least one token id"


# --- fuzzing: whatever a caller sends, 2xx or 4xx, and the server keeps serving -----------------------------

small_ints = st.integers(-5, 800) | st.integers(-2**70, 2**70)
id_lists = st.lists(small_ints, max_size=6)
texts = st.text(max_size=20)
values = st.recursive(st.none() | st.booleans() | small_ints | st.floats() | texts,
                      lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=4),
                      max_leaves=12)
raw_fields = st.fixed_dictionaries({}, optional={
    "query": texts | id_lists | values, "items": st.lists(texts, max_size=4) | st.lists(id_lists, max_size=4) | values,
    "label_token_ids": id_lists | values, "apply_softmax": st.booleans() | values, "item_first": st.booleans(),
    "add_special_tokens": st.booleans(), "model": st.sampled_from(["brew-demo", "default"]) | texts,
    "documents": st.lists(texts | st.fixed_dictionaries({"text": texts}), max_size=4) | values,
    "top_n": small_ints, "return_documents": st.booleans(),
    "member": values, "tasks": values, "requestId": values,
})
bodies = (raw_fields.map(lambda d: json.dumps(d).encode()) | values.map(lambda v: json.dumps(v).encode())
          | st.binary(max_size=200))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(path=st.sampled_from(ENDPOINTS), body=bodies)
@example(path="/v1/score", body=json.dumps({"query": "x", "items": ["a"] * 5000, "label_token_ids": [1]}).encode())
@example(path="/generative_scoring", body=json.dumps({"query": [1] * 4000, "items": [[2]], "label_token_ids": [1]}).encode())
@example(path="/v1/rerank", body=b'{"query": "q", "documents": []}')
@example(path="/v1/brew/score", body=b"\xff\xfe")
@example(path="/generative_scoring", body=b'{"query": "\\ud800", "items": ["a"], "label_token_ids": [1], "request_id": "\\udfff"}')
def test_any_body_gets_2xx_or_4xx(http, path, body):
    reply = http.post(path, content=body, headers={"content-type": "application/json"})
    assert 200 <= reply.status_code < 500, (reply.status_code, reply.text)
    if reply.status_code >= 400:
        error_of(reply, reply.status_code)


def test_the_server_still_serves_after_the_fuzzing(http, raw):
    assert http.get("/health").status_code == 200
    assert http.post("/v1/score", json=raw).status_code == 200


# --- the load generator over HTTP ------------------------------------------------------------------------


def test_the_load_generator_drives_the_http_api(server, tmp_path):
    out = tmp_path / "run"
    completed = subprocess.run(
        [sys.executable, "-m", "loadtest", "run", "--protocol", "http", "--target", server.http_url.split("//")[1],
         "--metrics-url", server.metrics_url, "--rate", "4", "--arrivals", "fixed", "--duration", "2",
         "--candidates", "4", "--history", "2-4", "--timeout", "60", "--seed", "0", "--no-progress", "--no-plots",
         "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr
    assert "over HTTP" in completed.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["run"]["protocol"] == "http"
    assert summary["requests"] == {"total": 8, "sent": 8, "ok": 8, "client_rejected": 0}
    assert summary["server"]["requests"] == {"OK": 8}  # the server saw the same run, counted as gRPC's are
    records = [json.loads(line) for line in (out / "requests.jsonl").read_text().splitlines()]
    assert {r["replica"] for r in records} == {f"{socket.gethostname()}:{server.port}"}
