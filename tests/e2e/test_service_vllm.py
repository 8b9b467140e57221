"""The gRPC service end to end on the real vLLM engine, per candidate
(multi_item off, and auto's path on vLLM) and with multi-item scoring (on)
(each started once for this module): the answers agree
with the torch reference, concurrent callers share engine steps, and a
deadline or a cancellation aborts the request's work inside vLLM instead of
finishing it in vain. Raw query/items requests over the HTTP API (no
template, item_first included) give the naive engine's probabilities.
"""

from __future__ import annotations

import asyncio

import grpc
import httpx
import pytest
import pytest_asyncio
from grpc_health.v1 import health_pb2
from live_server import client_for, running_server, scrape
from service_wire import example_request, job_request, scores
from waiting import eventually_async

from brew import defaults
from brew.engines import EngineKind
from brew.runtime import build_ranker
from brew.wire import request_from_proto

pytestmark = [pytest.mark.integration, pytest.mark.vllm, pytest.mark.asyncio(loop_scope="module")]

PARITY_TOLERANCE = 1e-4
LARGE = 1024  # distinct candidates: over a second of vLLM CPU work (0.73 s for 600 on 2 idle cores)


@pytest_asyncio.fixture(scope="module", loop_scope="module", params=["off", "on"], ids=["per-candidate", "multi-item"])
async def server(request):
    # The callers are patient (long deadlines, 16 at once): admitted by their deadline, not refused for
    # the SLO (serving.admission), as the tests here are about what the engine does with them.
    async with running_server(
        engine="vllm", multi_item=request.param, batching={"collect_window_ms": 10, "admission_target": "deadline"},
        limits={"max_candidates_per_request": 1024}, http_port=0,
    ) as running:
        yield running


@pytest_asyncio.fixture(loop_scope="module")
async def client(server):
    async with client_for(server) as connected:
        yield connected


def requests_in_vllm(server) -> int:
    return server.service.ranker.engine.num_unfinished_requests


async def aborted_in_vllm(server) -> None:
    """vLLM drops the request's work within seconds: aborted, not finished in vain."""
    await eventually_async(lambda: requests_in_vllm(server), equals=0, timeout=5.0)


async def test_scores_agree_with_the_torch_reference(client):
    reference = await build_ranker(defaults.DEMO_MODEL_DIR, defaults.PROMPTS_DIR, EngineKind.TORCH)
    try:
        expected = await reference.score(request_from_proto(example_request()))
    finally:
        await reference.engine.close()
    served = scores(await client.score(example_request(), timeout=60))
    wanted = {(r.task, c.item_id): c.score for r in expected.results for c in r.candidates}
    assert served.keys() == wanted.keys()
    for key, score in served.items():
        assert score == pytest.approx(wanted[key], abs=PARITY_TOLERANCE), key


async def test_health_is_serving_once_warm(client):
    assert await client.health() == health_pb2.HealthCheckResponse.SERVING


async def test_repeated_members_are_served_from_the_prefix_cache(server, client):
    before = scrape(server)
    first = await client.score(example_request(), timeout=60)
    again = await client.score(example_request(), timeout=60)
    assert scores(first) == pytest.approx(scores(again), abs=PARITY_TOLERANCE)
    for result in again.results:
        assert result.tokens.cached_prompt_tokens >= result.tokens.prefix_tokens // 2
    after = scrape(server)
    assert after.value("brew_cached_prompt_tokens_total") > before.value("brew_cached_prompt_tokens_total")


async def test_concurrent_callers_share_engine_batches(server, client):
    before = scrape(server)
    responses = await asyncio.gather(*(client.score(example_request(), timeout=120) for _ in range(16)))
    after = scrape(server)
    assert all(len(scores(r)) == 7 for r in responses)
    batches = after.value("brew_batch_candidates_count") - before.value("brew_batch_candidates_count")
    assert after.value("brew_batch_candidates_sum") - before.value("brew_batch_candidates_sum") == 16 * 7
    assert batches < 16


async def test_a_deadline_aborts_the_request_inside_vllm(server, client):
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await client.score(job_request(LARGE), timeout=0.4)
    assert raised.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
    await aborted_in_vllm(server)
    assert len(scores(await client.score(example_request(), timeout=60))) == 7


async def test_a_cancelled_call_aborts_its_work_inside_vllm(server, client):
    before = scrape(server).value("brew_rejections_total", reason="cancelled")
    call = asyncio.ensure_future(client.score(job_request(LARGE, "to-cancel"), timeout=120))
    await eventually_async(lambda: requests_in_vllm(server), timeout=30)  # vLLM holds its requests
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    await aborted_in_vllm(server)
    await eventually_async(lambda: scrape(server).value("brew_rejections_total", reason="cancelled"),
                           equals=before + 1)
    assert len(scores(await client.score(example_request(), timeout=60))) == 7


async def test_raw_query_items_over_http_give_the_naive_engines_probabilities(server):
    from brew.engines.naive import NaiveTorchEngine
    from brew.scoring import label_probabilities
    from brew.tokenization import PromptTokenizer
    from brew.types import ScoringGroup

    tokenizer = PromptTokenizer.from_pretrained(defaults.DEMO_MODEL_DIR)
    query = list(tokenizer.bos_ids) + tokenizer.encode("task: people you may know, answer Yes or No\n")
    items = [tokenizer.encode(f"suggested: {who}\nconnects:") for who in ("data scientist, berlin", "chef, lisbon")]
    labels = list(tokenizer.label_ids("t", (" Yes", " No")))
    naive = await NaiveTorchEngine.start(defaults.DEMO_MODEL_DIR)
    try:
        expected = {}
        for item_first in (False, True):
            prompts = [item + query for item in items] if item_first else [query + item for item in items]
            (result,) = await naive.score([ScoringGroup((), tuple(tuple(p) for p in prompts), tuple(labels))])
            expected[item_first] = [label_probabilities(c.label_logprobs) for c in result.candidates]
    finally:
        await naive.close()
    url = f"http://{server.config.host}:{server.endpoints.http_port}"
    async with httpx.AsyncClient(base_url=url, timeout=60, headers={"x-request-timeout": "60"}) as http:
        for item_first, want in expected.items():
            reply = await http.post("/v1/score", json={"query": query, "items": items, "label_token_ids": labels,
                                                       "apply_softmax": True, "item_first": item_first})
            assert reply.status_code == 200, reply.text
            for got, wanted in zip(reply.json()["scores"], want):
                assert got == pytest.approx(list(wanted), abs=PARITY_TOLERANCE), item_first
