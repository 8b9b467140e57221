"""Property-based fuzzing of ScoreCandidates: whatever bytes a caller sends,
the answer is OK or INVALID_ARGUMENT, never UNKNOWN or INTERNAL, and the
server keeps serving.

Requests are generated both as arbitrary bytes and as well-formed messages
with arbitrary content (unknown tasks, empty ids, odd unicode, timestamps out
of any calendar, missing fields), then sent as raw bytes to a real server on a
real port. Hypothesis shrinks a failing message to its smallest form.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from brew.v1 import ranking_pb2 as pb
from serving.config import load_config
from serving.server import BrewServer
from service_wire import example_request

pytestmark = pytest.mark.integration

METHOD = "/brew.v1.RankingService/ScoreCandidates"
ANSWERS = {grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT}

texts = st.text(max_size=24)
field_names = st.sampled_from(["title", "company", "location", "seniority", "text", "author", "name",
                               "headline", "industry", "skills"]) | texts
fields = st.dictionaries(field_names, texts, max_size=5)
items = st.builds(lambda item_id, kind, values: pb.Item(item_id=item_id, entity_type=kind, fields=values),
                  texts, st.sampled_from(["job", "post", "member", ""]) | texts, fields)
timestamps = st.builds(lambda seconds, nanos: Timestamp(seconds=seconds, nanos=nanos),
                       st.integers(-2**62, 2**62), st.integers(-2**31, 2**31 - 1))
interactions = st.builds(lambda action, item, time: pb.Interaction(action=action, item=item, time=time),
                         st.sampled_from(["applied", "viewed", "liked", "connected", ""]) | texts, items, timestamps)
members = st.builds(lambda member_id, profile, history: pb.Member(member_id=member_id, profile=profile,
                                                                  history=history),
                    texts, fields, st.lists(interactions, max_size=4))
tasks = st.builds(lambda name, candidates: pb.TaskCandidates(task=name, candidates=candidates),
                  st.sampled_from(["job_apply", "feed_engagement", "pymk_connect"]) | texts,
                  st.lists(items, max_size=4))
requests = st.builds(lambda request_id, member, wanted: pb.ScoreCandidatesRequest(
    request_id=request_id, member=member, tasks=wanted), texts, members, st.lists(tasks, max_size=3))
payloads = requests.map(pb.ScoreCandidatesRequest.SerializeToString) | st.binary(max_size=400)


@pytest.fixture(scope="module")
def address() -> Iterator[str]:
    """A torch-engine server on its own event loop in a thread, so that
    hypothesis drives plain synchronous calls."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="fuzzed-server", daemon=True)
    thread.start()
    server = BrewServer(load_config(None, engine="torch", port=0, metrics_port=0))
    asyncio.run_coroutine_threadsafe(server.start(), loop).result(timeout=300)
    assert server.endpoints is not None
    try:
        yield f"{server.config.host}:{server.endpoints.grpc_port}"
    finally:
        asyncio.run_coroutine_threadsafe(server.stop(grace_seconds=1.0), loop).result(timeout=60)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()


@pytest.fixture(scope="module")
def channel(address: str) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(address) as opened:
        yield opened


def call_raw(channel: grpc.Channel, payload: bytes) -> tuple[grpc.StatusCode, str]:
    """The status and details of ScoreCandidates on exactly these bytes."""
    call = channel.unary_unary(METHOD)  # no serializers: bytes in, bytes out
    try:
        call(payload, timeout=60)
    except grpc.RpcError as error:
        return error.code(), error.details() or ""
    return grpc.StatusCode.OK, ""


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(payload=payloads)
@example(payload=b"\xff\xff\xff")  # not a protobuf message at all
@example(payload=b"")  # the empty message: no member, no tasks
@example(payload=example_request().SerializeToString()[:-7])  # cut short
def test_any_bytes_get_ok_or_invalid_argument(channel, payload):
    code, details = call_raw(channel, payload)
    assert code in ANSWERS, (code, details)
    if code is grpc.StatusCode.INVALID_ARGUMENT:
        assert details, "an INVALID_ARGUMENT names the problem"


def test_the_server_still_serves_after_the_fuzzing(channel):
    health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
    assert health.status == health_pb2.HealthCheckResponse.SERVING
    code, details = call_raw(channel, example_request().SerializeToString())
    assert code is grpc.StatusCode.OK, details
