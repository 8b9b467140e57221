"""TLS and bearer-token authentication, for callers outside a trusted network.

Both are off by default (a localhost server needs neither). With a token set,
every RPC except the health check must carry `authorization: Bearer <token>`
metadata, or it is refused UNAUTHENTICATED before any work. Health stays open
so that load balancers and orchestrators can probe without the secret. Tokens
are compared in constant time. Send a token only over TLS.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from pathlib import Path

import grpc

HEALTH_METHOD_PREFIX = "/grpc.health.v1.Health/"


def server_credentials(cert_file: Path, key_file: Path) -> grpc.ServerCredentials:
    """Server-side TLS from PEM files (certificate chain and private key)."""
    return grpc.ssl_server_credentials([(key_file.read_bytes(), cert_file.read_bytes())])


def _refuse(message: str) -> grpc.RpcMethodHandler:
    async def refuse(request: object, context: grpc.aio.ServicerContext) -> None:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    return grpc.unary_unary_rpc_method_handler(refuse)


class BearerTokenInterceptor(grpc.aio.ServerInterceptor):
    """Refuses RPCs without the configured bearer token."""

    def __init__(self, token: str) -> None:
        self._expected = f"Bearer {token}".encode()

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        if handler_call_details.method.startswith(HEALTH_METHOD_PREFIX):
            return await continuation(handler_call_details)
        given = dict(handler_call_details.invocation_metadata or ()).get("authorization", "")
        given_bytes = given.encode() if isinstance(given, str) else bytes(given)
        if not hmac.compare_digest(given_bytes, self._expected):
            handler = await continuation(handler_call_details)
            if handler is not None and (handler.request_streaming or handler.response_streaming):
                return _refuse_streaming(handler, "missing or wrong bearer token (metadata 'authorization')")
            return _refuse("missing or wrong bearer token (metadata 'authorization: Bearer <token>')")
        return await continuation(handler_call_details)


def _refuse_streaming(handler: grpc.RpcMethodHandler, message: str) -> grpc.RpcMethodHandler:
    """The same refusal for streaming methods (e.g. server reflection)."""

    async def refuse(request: object, context: grpc.aio.ServicerContext):  # type: ignore[no-untyped-def]
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)
        yield  # pragma: no cover - makes this an async generator

    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(refuse)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(_refuse(message).unary_unary)
    return grpc.unary_stream_rpc_method_handler(refuse)
