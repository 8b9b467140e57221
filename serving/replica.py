"""The two headers of scale-out: which member asks, which replica answers.

- `x-brew-member` (request): the member id. Envoy hashes it to pick a
  replica (serving.envoy_config), so a member's requests keep landing on the
  replica whose prefix cache already holds that member's history. Clients
  set it (serving.client); the replicas never read it.
- `x-brew-replica` (response): the name of the replica that served the call
  (`--replica-name`, default hostname:port), set by ReplicaHeaderInterceptor
  on every unary call, in the trailing metadata of every answer and error.

An error must stay a trailers-only response (status in the HTTP headers, no
initial metadata first): Envoy reads grpc-status from the response headers
only, both to retry UNAVAILABLE (`retry_on: unavailable`) and to count a
replica's failures for outlier ejection. Trailing metadata keeps it so, and
an answer sends its initial metadata with its one message, as gRPC does by
default (sending the header as initial metadata of its own cost every call
a batch of operations of its own).
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import grpc

from serving.method_wrapping import PerMethodInterceptor

MEMBER_HEADER = "x-brew-member"
REPLICA_HEADER = "x-brew-replica"

# Printable ASCII except '%', the escape character itself.
_HEADER_SAFE = "".join(chr(c) for c in range(0x20, 0x7F) if chr(c) != "%")


def member_header_value(member_id: str) -> str | None:
    """The x-brew-member value for a member id; None for no id (no header).

    gRPC header values are printable ASCII: other characters are
    percent-encoded (UTF-8), so every id maps to one stable value.
    """
    return quote(member_id, safe=_HEADER_SAFE) if member_id else None


def default_replica_name(port: int) -> str:
    """hostname:port: unique per replica on a host, and across hosts."""
    return f"{socket.gethostname()}:{port}"


def replica_from_metadata(metadata: Any) -> str | None:
    """The x-brew-replica value in gRPC metadata (a sequence of key-value pairs), if any."""
    for key, value in metadata or ():
        if key == REPLICA_HEADER:
            return value if isinstance(value, str) else value.decode("ascii", "replace")
    return None


class ReplicaHeaderInterceptor(PerMethodInterceptor):
    """Names this replica on every unary call's response (x-brew-replica).

    `name` is called per call: the default name holds the port, known only
    once the server has bound it.
    """

    def __init__(self, name: Callable[[], str]) -> None:
        super().__init__()
        self._name = name

    def wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        behavior = handler.unary_unary
        if behavior is None:
            return handler

        async def named(request: Any, context: grpc.aio.ServicerContext) -> Any:
            # Trailing metadata only (kept by context.abort: errors name the
            # replica too); sending initial metadata of its own costs the
            # call a batch of its own.
            context.set_trailing_metadata(((REPLICA_HEADER, self._name()),))
            return await behavior(request, context)

        return grpc.unary_unary_rpc_method_handler(named, handler.request_deserializer, handler.response_serializer)
