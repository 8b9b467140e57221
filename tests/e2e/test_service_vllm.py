"""The gRPC service end to end on the real vLLM engine, per candidate and with
multi-item scoring (each started once for this module): the answers agree
with the torch reference, concurrent callers share engine steps, and a
deadline or a cancellation aborts the request's work inside vLLM instead of
finishing it in vain.
"""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest
import pytest_asyncio
from grpc_health.v1 import health_pb2
from live_server import client_for, running_server, scrape
from service_wire import example_request, job_request, scores

from brew import defaults
from brew.engines import EngineKind
from brew.runtime import build_ranker
from brew.wire import request_from_proto

pytestmark = [pytest.mark.integration, pytest.mark.vllm, pytest.mark.asyncio(loop_scope="module")]

PARITY_TOLERANCE = 1e-4
LARGE = 1024  # distinct candidates: over a second of vLLM CPU work (0.73 s for 600 on 2 idle cores)


@pytest_asyncio.fixture(scope="module", loop_scope="module", params=[False, True], ids=["per-candidate", "multi-item"])
async def server(request):
    async with running_server(
        engine="vllm", multi_item=request.param, batching={"collect_window_seconds": 0.01},
        limits={"max_candidates_per_request": 1024},
    ) as running:
        yield running


@pytest_asyncio.fixture(loop_scope="module")
async def client(server):
    async with client_for(server) as connected:
        yield connected


async def engine_idle(server, timeout: float = 20.0) -> float:
    """Seconds until vLLM holds no request (raises if it never empties)."""
    started = time.monotonic()
    engine = server.service.ranker.engine
    while engine.num_unfinished_requests:
        assert time.monotonic() - started < timeout, f"{engine.num_unfinished_requests} requests still in vLLM"
        await asyncio.sleep(0.05)
    return time.monotonic() - started


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
    # Aborted, not finished in vain: vLLM drops the work right away.
    assert await engine_idle(server) < 5.0
    assert len(scores(await client.score(example_request(), timeout=60))) == 7


async def test_a_cancelled_call_aborts_its_work_inside_vllm(server, client):
    before = scrape(server).value("brew_rejections_total", reason="cancelled")
    call = asyncio.ensure_future(client.score(job_request(LARGE, "to-cancel"), timeout=120))
    deadline = time.monotonic() + 30
    while not server.service.ranker.engine.num_unfinished_requests:  # wait until vLLM holds its requests
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    assert await engine_idle(server) < 5.0
    await asyncio.sleep(0.2)
    assert scrape(server).value("brew_rejections_total", reason="cancelled") == before + 1
    assert len(scores(await client.score(example_request(), timeout=60))) == 7
