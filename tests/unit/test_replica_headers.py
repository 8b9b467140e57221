"""The scale-out headers: x-brew-member as the client sends it, and
x-brew-replica as the server's interceptor sets it, with a fake call context:
initial metadata only on success (an error must stay trailers-only for
Envoy to retry and count it), trailing metadata always."""

from __future__ import annotations

from types import SimpleNamespace

import grpc
import pytest

from serving.replica import (
    REPLICA_HEADER,
    ReplicaHeaderInterceptor,
    member_header_value,
    replica_from_metadata,
)


class FakeContext:
    def __init__(self) -> None:
        self.events: list[tuple[str, object]] = []

    def set_trailing_metadata(self, metadata: object) -> None:
        self.events.append(("trailing", metadata))

    async def send_initial_metadata(self, metadata: object) -> None:
        self.events.append(("initial", metadata))


class Aborted(Exception):
    pass


async def behavior(request: str, context: FakeContext) -> str:
    context.events.append(("behavior", request))
    if request == "bad":
        raise Aborted
    return request.upper()


async def wrapped_handler(handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    async def continuation(details: object) -> grpc.RpcMethodHandler:
        return handler

    return await ReplicaHeaderInterceptor(lambda: "host:1").intercept_service(
        continuation, SimpleNamespace(method="/test.Service/Method"))


@pytest.mark.asyncio
async def test_an_answer_names_the_replica_in_its_trailing_metadata_only():
    handler = await wrapped_handler(grpc.unary_unary_rpc_method_handler(behavior))
    context = FakeContext()
    assert await handler.unary_unary("ok", context) == "OK"
    assert context.events == [("trailing", ((REPLICA_HEADER, "host:1"),)), ("behavior", "ok")]


@pytest.mark.asyncio
async def test_an_error_names_the_replica_in_its_trailers_only():
    handler = await wrapped_handler(grpc.unary_unary_rpc_method_handler(behavior))
    context = FakeContext()
    with pytest.raises(Aborted):
        await handler.unary_unary("bad", context)
    assert [kind for kind, _ in context.events] == ["trailing", "behavior"]


@pytest.mark.asyncio
async def test_streaming_methods_pass_through_untouched():
    async def stream(request: object, context: object):  # type: ignore[no-untyped-def]
        yield request

    handler = grpc.unary_stream_rpc_method_handler(stream)
    assert await wrapped_handler(handler) is handler


@pytest.mark.parametrize("member_id, value", [
    ("m-42", "m-42"),
    ("member 7:x/y", "member 7:x/y"),  # printable ASCII stays as it is
    ("zoë", "zo%C3%AB"),  # anything else is percent-encoded UTF-8
    ("100%", "100%25"),
    ("line\nbreak", "line%0Abreak"),
    ("", None),  # no member id: no header, Envoy balances by least request
])
def test_member_ids_become_valid_stable_header_values(member_id, value):
    assert member_header_value(member_id) == value


def test_the_replica_is_read_from_metadata():
    assert replica_from_metadata((("a", "1"), (REPLICA_HEADER, "host:2"))) == "host:2"
    assert replica_from_metadata(((REPLICA_HEADER, b"host:3"),)) == "host:3"
    assert replica_from_metadata(None) is None and replica_from_metadata(()) is None


@pytest.mark.asyncio
async def test_a_method_is_wrapped_once_while_its_handler_stays_the_same():
    interceptor = ReplicaHeaderInterceptor(lambda: "host:1")
    handler = grpc.unary_unary_rpc_method_handler(behavior)

    async def continuation(details: object) -> grpc.RpcMethodHandler:
        return handler

    details = SimpleNamespace(method="/test.Service/Method")
    first = await interceptor.intercept_service(continuation, details)
    assert await interceptor.intercept_service(continuation, details) is first
    handler = grpc.unary_unary_rpc_method_handler(behavior)
    assert await interceptor.intercept_service(continuation, details) is not first
