"""The standard `grpc_server_*` metrics for a grpc.aio server.

Same names and labels as go-grpc-prometheus and py-grpc-prometheus, so the
usual gRPC dashboards and alerts work unchanged:

    grpc_server_started_total{grpc_type, grpc_service, grpc_method}
    grpc_server_handled_total{grpc_type, grpc_service, grpc_method, grpc_code}
    grpc_server_handling_seconds{grpc_type, grpc_service, grpc_method}  (histogram)
    grpc_server_msg_received_total / grpc_server_msg_sent_total

Written here because the published interceptors wrap synchronous handlers
only: on grpc.aio they would time the creation of a coroutine, not the call.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from prometheus_client import CollectorRegistry, Counter, Histogram

from serving.metrics import latency_buckets

_Behavior = Callable[..., Any]


def _split(method: str) -> tuple[str, str]:
    """'/brew.v1.RankingService/ScoreCandidates' -> ('brew.v1.RankingService', 'ScoreCandidates')."""
    _, service, name = method.split("/", 2)
    return service, name


def _rpc_type(handler: grpc.RpcMethodHandler) -> str:
    if handler.request_streaming and handler.response_streaming:
        return "bidi_stream"
    if handler.request_streaming:
        return "client_stream"
    if handler.response_streaming:
        return "server_stream"
    return "unary"


class GrpcServerMetricsInterceptor(grpc.aio.ServerInterceptor):
    """Counts and times every RPC the server handles, by method and final code."""

    def __init__(self, registry: CollectorRegistry, slo_seconds: float = 0.5) -> None:
        labels = ["grpc_type", "grpc_service", "grpc_method"]
        self.started = Counter("grpc_server_started", "RPCs started on the server.", labels, registry=registry)
        self.handled = Counter("grpc_server_handled", "RPCs completed on the server, regardless of success.",
                               [*labels, "grpc_code"], registry=registry)
        self.handling = Histogram("grpc_server_handling_seconds", "Response latency of RPCs handled by the server.",
                                  labels, buckets=latency_buckets(slo_seconds), registry=registry)
        self.received = Counter("grpc_server_msg_received", "Stream messages received by the server.", labels,
                                registry=registry)
        self.sent = Counter("grpc_server_msg_sent", "Stream messages sent by the server.", labels, registry=registry)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:  # unknown method: gRPC answers UNIMPLEMENTED itself
            return handler
        service, method = _split(handler_call_details.method)
        labels = {"grpc_type": _rpc_type(handler), "grpc_service": service, "grpc_method": method}
        make = {
            "unary": (grpc.unary_unary_rpc_method_handler, handler.unary_unary, self._unary),
            "server_stream": (grpc.unary_stream_rpc_method_handler, handler.unary_stream, self._streaming),
            "client_stream": (grpc.stream_unary_rpc_method_handler, handler.stream_unary, self._unary),
            "bidi_stream": (grpc.stream_stream_rpc_method_handler, handler.stream_stream, self._streaming),
        }
        factory, behavior, wrap = make[labels["grpc_type"]]
        return factory(wrap(behavior, labels, handler.request_streaming), handler.request_deserializer,
                       handler.response_serializer)

    def _count_requests(self, request: Any, labels: dict[str, str], streaming: bool) -> Any:
        if not streaming:
            self.received.labels(**labels).inc()
            return request

        async def counted() -> AsyncIterator[Any]:
            async for message in request:
                self.received.labels(**labels).inc()
                yield message

        return counted()

    def _done(self, labels: dict[str, str], started: float, code: grpc.StatusCode) -> None:
        self.handled.labels(**labels, grpc_code=code.name).inc()
        self.handling.labels(**labels).observe(time.perf_counter() - started)

    def _unary(self, behavior: _Behavior, labels: dict[str, str], streaming: bool) -> _Behavior:
        async def wrapped(request: Any, context: grpc.aio.ServicerContext) -> Any:
            self.started.labels(**labels).inc()
            started = time.perf_counter()
            code = grpc.StatusCode.UNKNOWN
            try:
                response = await behavior(self._count_requests(request, labels, streaming), context)
                self.sent.labels(**labels).inc()
                code = context.code() or grpc.StatusCode.OK
                return response
            except asyncio.CancelledError:
                code = grpc.StatusCode.CANCELLED
                raise
            except BaseException:
                code = context.code() or grpc.StatusCode.UNKNOWN
                raise
            finally:
                self._done(labels, started, code)

        return wrapped

    def _streaming(self, behavior: _Behavior, labels: dict[str, str], streaming: bool) -> _Behavior:
        async def wrapped(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            self.started.labels(**labels).inc()
            started = time.perf_counter()
            code = grpc.StatusCode.UNKNOWN
            try:
                async for response in behavior(self._count_requests(request, labels, streaming), context):
                    self.sent.labels(**labels).inc()
                    yield response
                code = context.code() or grpc.StatusCode.OK
            except (asyncio.CancelledError, GeneratorExit):
                code = grpc.StatusCode.CANCELLED
                raise
            except BaseException:
                code = context.code() or grpc.StatusCode.UNKNOWN
                raise
            finally:
                self._done(labels, started, code)

        return wrapped
