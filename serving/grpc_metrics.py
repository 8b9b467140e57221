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
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
from prometheus_client import CollectorRegistry, Counter, Histogram

from serving.method_wrapping import PerMethodInterceptor
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


class _MethodMetrics:
    """One method's metric children, bound once (a `labels()` lookup per
    event cost the server more than the RPC's own accounting)."""

    def __init__(self, interceptor: GrpcServerMetricsInterceptor, labels: dict[str, str]) -> None:
        self.started = interceptor.started.labels(**labels)
        self.received = interceptor.received.labels(**labels)
        self.sent = interceptor.sent.labels(**labels)
        self.handling = interceptor.handling.labels(**labels)
        self._handled = interceptor.handled
        self._labels = labels
        self._handled_by_code: dict[grpc.StatusCode, Any] = {}

    def done(self, started: float, code: grpc.StatusCode) -> None:
        handled = self._handled_by_code.get(code)
        if handled is None:
            handled = self._handled_by_code[code] = self._handled.labels(**self._labels, grpc_code=code.name)
        handled.inc()
        self.handling.observe(time.perf_counter() - started)


class GrpcServerMetricsInterceptor(PerMethodInterceptor):
    """Counts and times every RPC the server handles, by method and final code
    (each method's counting handler built once: serving.method_wrapping)."""

    def __init__(self, registry: CollectorRegistry, slo_seconds: float = 0.5) -> None:
        super().__init__()
        labels = ["grpc_type", "grpc_service", "grpc_method"]
        self.started = Counter("grpc_server_started", "RPCs started on the server.", labels, registry=registry)
        self.handled = Counter("grpc_server_handled", "RPCs completed on the server, regardless of success.",
                               [*labels, "grpc_code"], registry=registry)
        self.handling = Histogram("grpc_server_handling_seconds", "Response latency of RPCs handled by the server.",
                                  labels, buckets=latency_buckets(slo_seconds), registry=registry)
        self.received = Counter("grpc_server_msg_received", "Stream messages received by the server.", labels,
                                registry=registry)
        self.sent = Counter("grpc_server_msg_sent", "Stream messages sent by the server.", labels, registry=registry)

    def wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        service, name = _split(method)
        rpc_type = _rpc_type(handler)
        metrics = _MethodMetrics(self, {"grpc_type": rpc_type, "grpc_service": service, "grpc_method": name})
        make = {
            "unary": (grpc.unary_unary_rpc_method_handler, handler.unary_unary, self._unary),
            "server_stream": (grpc.unary_stream_rpc_method_handler, handler.unary_stream, self._streaming),
            "client_stream": (grpc.stream_unary_rpc_method_handler, handler.stream_unary, self._unary),
            "bidi_stream": (grpc.stream_stream_rpc_method_handler, handler.stream_stream, self._streaming),
        }
        factory, behavior, wrap = make[rpc_type]
        return factory(wrap(behavior, metrics, handler.request_streaming), handler.request_deserializer,
                       handler.response_serializer)

    @staticmethod
    def _count_requests(request: Any, metrics: _MethodMetrics, streaming: bool) -> Any:
        if not streaming:
            metrics.received.inc()
            return request

        async def counted() -> AsyncIterator[Any]:
            async for message in request:
                metrics.received.inc()
                yield message

        return counted()

    def _unary(self, behavior: _Behavior, metrics: _MethodMetrics, streaming: bool) -> _Behavior:
        async def wrapped(request: Any, context: grpc.aio.ServicerContext) -> Any:
            metrics.started.inc()
            started = time.perf_counter()
            code = grpc.StatusCode.UNKNOWN
            try:
                response = await behavior(self._count_requests(request, metrics, streaming), context)
                metrics.sent.inc()
                code = context.code() or grpc.StatusCode.OK
                return response
            except asyncio.CancelledError:
                code = grpc.StatusCode.CANCELLED
                raise
            except BaseException:
                code = context.code() or grpc.StatusCode.UNKNOWN
                raise
            finally:
                metrics.done(started, code)

        return wrapped

    def _streaming(self, behavior: _Behavior, metrics: _MethodMetrics, streaming: bool) -> _Behavior:
        async def wrapped(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            metrics.started.inc()
            started = time.perf_counter()
            code = grpc.StatusCode.UNKNOWN
            try:
                async for response in behavior(self._count_requests(request, metrics, streaming), context):
                    metrics.sent.inc()
                    yield response
                code = context.code() or grpc.StatusCode.OK
            except (asyncio.CancelledError, GeneratorExit):
                code = grpc.StatusCode.CANCELLED
                raise
            except BaseException:
                code = context.code() or grpc.StatusCode.UNKNOWN
                raise
            finally:
                metrics.done(started, code)

        return wrapped
