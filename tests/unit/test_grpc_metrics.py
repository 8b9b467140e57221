"""The grpc_server_* interceptor: one wrapped handler per method, reused
while the server's handler is the same; every call counted by final code."""

from __future__ import annotations

from types import SimpleNamespace

import grpc
import pytest
from prometheus_client import CollectorRegistry

from serving.grpc_metrics import GrpcServerMetricsInterceptor

METHOD = "/brew.v1.RankingService/ScoreCandidates"
LABELS = {"grpc_type": "unary", "grpc_service": "brew.v1.RankingService", "grpc_method": "ScoreCandidates"}


class Context:
    def __init__(self, code: grpc.StatusCode | None = None) -> None:
        self._code = code

    def code(self) -> grpc.StatusCode | None:
        return self._code


async def echo(request: str, context: Context) -> str:
    if request == "fail":
        raise RuntimeError("failed")
    return request


async def intercepted(interceptor: GrpcServerMetricsInterceptor, handler: grpc.RpcMethodHandler,
                      method: str = METHOD) -> grpc.RpcMethodHandler:
    async def continuation(details: object) -> grpc.RpcMethodHandler:
        return handler

    return await interceptor.intercept_service(continuation, SimpleNamespace(method=method))


@pytest.mark.asyncio
async def test_a_method_is_wrapped_once_while_its_handler_stays_the_same():
    interceptor = GrpcServerMetricsInterceptor(CollectorRegistry())
    handler = grpc.unary_unary_rpc_method_handler(echo)
    first = await intercepted(interceptor, handler)
    assert await intercepted(interceptor, handler) is first
    replaced = grpc.unary_unary_rpc_method_handler(echo)
    assert await intercepted(interceptor, replaced) is not first


@pytest.mark.asyncio
async def test_every_call_is_counted_by_method_and_final_code():
    registry = CollectorRegistry()
    interceptor = GrpcServerMetricsInterceptor(registry)
    handler = await intercepted(interceptor, grpc.unary_unary_rpc_method_handler(echo))
    assert await handler.unary_unary("a", Context()) == "a"
    assert await handler.unary_unary("b", Context()) == "b"
    with pytest.raises(RuntimeError):
        await handler.unary_unary("fail", Context(grpc.StatusCode.INVALID_ARGUMENT))
    value = registry.get_sample_value
    assert value("grpc_server_started_total", LABELS) == 3
    assert value("grpc_server_msg_received_total", LABELS) == 3
    assert value("grpc_server_msg_sent_total", LABELS) == 2
    assert value("grpc_server_handled_total", {**LABELS, "grpc_code": "OK"}) == 2
    assert value("grpc_server_handled_total", {**LABELS, "grpc_code": "INVALID_ARGUMENT"}) == 1
    assert value("grpc_server_handling_seconds_count", LABELS) == 3
    unknown = await intercepted(interceptor, None)  # type: ignore[arg-type]
    assert unknown is None
