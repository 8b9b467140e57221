"""`brew serve` as users run it: a real process on real ports.

What a caller without this repository relies on: the service can be found and
called through server reflection alone (as grpcurl does), /metrics answers
in Prometheus' text format, and SIGTERM drains (health NOT_SERVING, new calls
UNAVAILABLE, the call in flight finishes) before the process exits 0.
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import time
from concurrent import futures

import grpc
import pytest
from google.protobuf import descriptor_pool, json_format, message_factory
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase
from serve_process import find_grpcurl, run_serve, running_serve, scrape
from service_wire import example_json, example_request, job_request
from waiting import eventually_async

from brew.v1 import ranking_pb2_grpc
from serving.client import NO_RETRY, RankingClient

pytestmark = [pytest.mark.integration]

SERVICE = "brew.v1.RankingService"
HEALTH_SERVICE = "grpc.health.v1.Health"
EXAMPLE_SCORES_PER_TASK = {"job_apply": 3, "feed_engagement": 2, "pymk_connect": 2}
GRACE_SECONDS = 20.0
# Scoring this many takes over a second on the torch engine on CPU (measured
# 1.1-6.6 s on 2 busy cores), so SIGTERM lands while the call is in the engine,
# and well under GRACE_SECONDS. Admitted: Limits allows 1024 a request.
SLOW_CANDIDATES = 300


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with running_serve(tmp_path_factory.mktemp("serve")) as running:
        yield running


@pytest.fixture
def channel(server):
    with grpc.insecure_channel(server.target) as opened:
        yield opened


def assert_example_scores(results: list[tuple[str, list[float]]]) -> None:
    """`results`: (task, scores) per task result, in response order."""
    assert {task: len(scores) for task, scores in results} == EXAMPLE_SCORES_PER_TASK
    assert [task for task, _ in results] == list(EXAMPLE_SCORES_PER_TASK)
    for task, scores in results:
        assert all(0.0 < score < 1.0 for score in scores), (task, scores)


def test_serving_line_names_the_process_to_signal(server):
    """The pid it prints is the one to send SIGHUP (reload) or SIGTERM (drain)."""
    assert server.announced_pid == server.process.pid


def test_reflection_lists_the_ranking_and_health_services(channel):
    services = set(ProtoReflectionDescriptorDatabase(channel).get_services())
    assert {SERVICE, HEALTH_SERVICE} <= services


def test_score_candidates_through_reflection_without_the_generated_stubs(channel):
    pool = descriptor_pool.DescriptorPool(ProtoReflectionDescriptorDatabase(channel))
    method = pool.FindServiceByName(SERVICE).methods_by_name["ScoreCandidates"]
    request_class = message_factory.GetMessageClass(method.input_type)
    response_class = message_factory.GetMessageClass(method.output_type)
    request = json_format.Parse(example_json(), request_class())
    call = channel.unary_unary(
        f"/{SERVICE}/{method.name}",
        request_serializer=request_class.SerializeToString,
        response_deserializer=response_class.FromString,
    )
    response = call(request, timeout=60)
    assert response.DESCRIPTOR.full_name == "brew.v1.ScoreCandidatesResponse"
    assert response.request_id == "example-1"
    assert_example_scores([(r.task, [s.score for s in r.scores]) for r in response.results])


def test_grpcurl_scores_the_example(server):
    grpcurl = find_grpcurl()
    if grpcurl is None:
        pytest.skip("grpcurl is neither on PATH nor in this Python's bin directory (pip install -e '.[test]')")
    completed = subprocess.run(
        [grpcurl, "-plaintext", "-d", "@", server.target, f"{SERVICE}/ScoreCandidates"],
        input=example_json(), capture_output=True, text=True, timeout=60,
    )
    assert completed.returncode == 0, completed.stderr
    response = json.loads(completed.stdout)
    assert_example_scores([(r["task"], [float(s["score"]) for s in r["scores"]]) for r in response["results"]])


def test_metrics_count_the_call(server, channel):
    before = scrape(server)
    ranking_pb2_grpc.RankingServiceStub(channel).ScoreCandidates(example_request(), timeout=60)
    after = scrape(server)
    assert after.value("brew_requests_total", status="OK") == before.value("brew_requests_total", status="OK") + 1
    handled = {"grpc_service": SERVICE, "grpc_method": "ScoreCandidates", "grpc_code": "OK"}
    assert after.value("grpc_server_handled_total", **handled) == before.value("grpc_server_handled_total",
                                                                               **handled) + 1
    assert after.has("brew_inflight_requests")
    assert after.value("brew_model_info", model="brew-demo") == 1


@pytest.mark.asyncio
async def test_sigterm_drains_the_call_in_flight_then_exits_0(tmp_path):
    with running_serve(tmp_path, "--grace-seconds", str(GRACE_SECONDS)) as server:
        async with RankingClient(server.target, retry=NO_RETRY) as client:
            slow = asyncio.create_task(client.score(job_request(SLOW_CANDIDATES), timeout=120))
            await wait_until_in_engine(server, slow, SLOW_CANDIDATES)

            server.terminate()
            terminated = time.monotonic()
            assert not slow.done(), "the slow call finished before SIGTERM; raise SLOW_CANDIDATES"

            # While the call drains, the port stays open: probes see NOT_SERVING
            # and new calls are refused UNAVAILABLE (safe to retry elsewhere).
            assert await health_after_sigterm(client) == "NOT_SERVING"
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await client.score(example_request(), timeout=10)
            assert refused.value.code() is grpc.StatusCode.UNAVAILABLE, refused.value.details()
            assert "shutting down" in refused.value.details()

            response = await slow
        assert [len(r.scores) for r in response.results] == [SLOW_CANDIDATES]
        assert all(0.0 < s.score < 1.0 for s in response.results[0].scores)

        remaining = GRACE_SECONDS - (time.monotonic() - terminated)
        try:
            code = await asyncio.to_thread(server.process.wait, timeout=max(0.0, remaining))
        except subprocess.TimeoutExpired:
            pytest.fail(f"brew serve still running {GRACE_SECONDS}s after SIGTERM; stderr:\n{server.stderr()}")
        assert code == 0, server.stderr()
        assert "signal received: draining" in server.stderr()


@pytest.mark.vllm
def test_vllm_serve_stops_quietly(tmp_path):
    """On vLLM, SIGTERM ends in 'server stopped' and exit 0, with nothing after
    it: Triton's bindings, loaded with vLLM, print hundreds of 'nanobind:
    leaked' lines at exit when start-up objects are left frozen."""
    with running_serve(tmp_path, "--engine", "vllm", timeout=240) as server:
        with grpc.insecure_channel(server.target) as channel:
            stub = ranking_pb2_grpc.RankingServiceStub(channel)
            assert len(stub.ScoreCandidates(example_request(), timeout=60).results) == 3
        assert server.stop() == 0, server.stderr()
    stderr = server.stderr()
    assert "server stopped" in stderr
    assert "leaked" not in stderr, stderr[stderr.index("leaked") - 200:][:1000]
    assert "Traceback" not in stderr


async def wait_until_in_engine(server, call: asyncio.Task, candidates: int, timeout: float = 60.0) -> None:
    """Until the batcher has dispatched `candidates` candidates to the engine."""
    deadline = time.monotonic() + timeout
    while True:
        metrics = await asyncio.to_thread(scrape, server)
        if metrics.value("brew_batch_candidates_sum") >= candidates:
            assert metrics.value("brew_inflight_requests") >= 1, "the slow call finished before SIGTERM"
            return
        if call.done():
            call.result()  # raises the call's error, if any
            pytest.fail("the slow call finished before it was seen in the engine")
        assert time.monotonic() < deadline, f"call not dispatched after {timeout}s:\n{metrics.text}"
        await asyncio.sleep(0.02)


async def health_after_sigterm(client: RankingClient, timeout: float = 10.0) -> str:
    """The first answer of the health check other than SERVING: a status
    name, or the code of the error if the check itself failed."""
    async def not_serving() -> str | None:
        try:
            status = await client.health(timeout=2.0)
        except grpc.aio.AioRpcError as error:
            return error.code().name
        if status == health_pb2.HealthCheckResponse.SERVING:
            return None
        return health_pb2.HealthCheckResponse.ServingStatus.Name(status)

    return await eventually_async(not_serving, timeout=timeout, interval=0.02)


# --- ports another process holds ----------------------------------------------


def _error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("brew serve: error:")]


def test_grpc_port_held_by_another_grpc_server_is_refused_in_one_line():
    """A gRPC server with grpcio's default SO_REUSEPORT holds the port; Brew,
    with SO_REUSEPORT off, must not quietly share it (half the calls would go
    to the other server) but refuse to start, naming the port and the flag."""
    other = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
    port = other.add_insecure_port("127.0.0.1:0")
    other.start()
    try:
        completed = run_serve(["--host", "127.0.0.1", "--port", str(port)], timeout=120)
    finally:
        other.stop(None)
    assert completed.returncode == 2, completed.stderr
    assert _error_lines(completed.stderr) == [
        f"brew serve: error: cannot listen on 127.0.0.1:{port} for gRPC: the port is taken by another process; "
        "stop it or pick another port with --port (0 picks a free one)"]
    assert "Traceback" not in completed.stderr


def test_metrics_port_held_by_another_process_is_refused_in_one_line():
    with socket.create_server(("127.0.0.1", 0)) as held:
        port = held.getsockname()[1]
        completed = run_serve(["--metrics-host", "127.0.0.1", "--metrics-port", str(port)], timeout=120)
    assert completed.returncode == 2, completed.stderr
    assert _error_lines(completed.stderr) == [
        f"brew serve: error: cannot listen on 127.0.0.1:{port} for /metrics: the port is taken by another "
        "process; stop it or pick another port with --metrics-port (0 picks a free one)"]
    assert "Traceback" not in completed.stderr
