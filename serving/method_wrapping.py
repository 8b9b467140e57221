"""Interceptors that wrap a method's handler, once per method instead of once per call.

grpc.aio asks every interceptor for a method's handler on every call, so
an interceptor that wraps the handler it is given would build a new
handler, and its closures, per call. `PerMethodInterceptor` builds the
wrapped handler the first time a method is called and hands it out again
while the server gives it the same handler for that method.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import grpc


class PerMethodInterceptor(grpc.aio.ServerInterceptor):
    """Subclasses say how to wrap one method's handler (`wrap`); unknown
    methods (no handler) pass through."""

    def __init__(self) -> None:
        # method -> (the server's handler, its wrapped handler)
        self._wrapped: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    def wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        raise NotImplementedError

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:  # unknown method: gRPC answers UNIMPLEMENTED itself
            return handler
        method = handler_call_details.method
        cached = self._wrapped.get(method)
        if cached is None or cached[0] is not handler:
            cached = self._wrapped[method] = (handler, self.wrap(method, handler))
        return cached[1]
