"""What every HTTP request passes through before and around the service.

`Edge` is a plain ASGI middleware (no per-request objects of its own beyond
a wrapped `receive` and `send`), in front of the application:

- every response names this replica (`x-brew-replica`, serving.replica), as
  gRPC's trailing metadata does;
- with a bearer token configured, every path but the probes (`/health`,
  `/live`) and `/metrics` needs `authorization: Bearer <token>`, compared in
  constant time, or it is answered 401 before any work;
- a body over `max_message_bytes` is refused 413 before a byte of it is
  parsed: at once when its content-length says so, else as soon as the bytes
  read pass the limit (a chunked body);
- a body that says it is not JSON is refused 415.

`JsonRoute` parses every JSON body as the routes read it, refusing text
that is not valid Unicode (an escaped unpaired surrogate, `\\ud800`, which
JSON's grammar allows and UTF-8 cannot carry): such text would otherwise
fail deep in a tokenizer or an encoder as a server error.

`deadline_of` reads a request's deadline from `x-request-timeout` (seconds);
`until_disconnected` runs the service call and cancels it when the client
goes away, so the dispatcher abandons its engine work (docs/design/
decisions.md, decision 6: a caller that leaves aborts its work).
"""

from __future__ import annotations

import asyncio
import email.message
import hmac
import json
import math
import time
from collections.abc import Awaitable, Callable, Coroutine
from http import HTTPStatus
from typing import Any, TypeVar

from fastapi import HTTPException, Request, Response
from fastapi.routing import APIRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from brew.errors import InvalidRequestError
from serving.http.errors import error_response
from serving.replica import REPLICA_HEADER

OPEN_PATHS = frozenset({"/health", "/live", "/metrics"})
TIMEOUT_HEADER = "x-request-timeout"

T = TypeVar("T")


class _JsonRequest(Request):
    """A request whose JSON body is checked for text UTF-8 cannot carry."""

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            body = await self.body()
            value = json.loads(body)
            # Only an escape can make a lone surrogate (raw bytes must be UTF-8): look when there is one.
            if (b"\\ud" in body or b"\\uD" in body) and not _valid_unicode(value):
                raise HTTPException(HTTPStatus.BAD_REQUEST, "the body's text is not valid Unicode: it escapes an "
                                                            "unpaired surrogate (\\ud800-\\udfff); send UTF-8 text")
            self._json = value
        return self._json


def _valid_unicode(value: Any) -> bool:
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return False
        return True
    if isinstance(value, dict):
        return all(_valid_unicode(k) and _valid_unicode(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_valid_unicode(item) for item in value)
    return True


class JsonRoute(APIRoute):
    """FastAPI's route, reading its JSON body through _JsonRequest."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            return await handler(_JsonRequest(request.scope, request.receive))

        return route


class ClientDisconnected(Exception):
    """The client closed the connection before its answer was ready."""


class Edge:
    """Replica header, bearer token, body size and content type (see the module docstring)."""

    def __init__(self, app: ASGIApp, *, max_body_bytes: int, token: str | None,
                 replica_name: Callable[[], str]) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self._expected = f"Bearer {token}".encode() if token else None
        self._replica_name = replica_name

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        replica = (REPLICA_HEADER.encode(), self._replica_name().encode("ascii", "replace"))

        async def named_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), replica]
            await send(message)

        refusal = self._refusal(scope)
        if refusal is not None:
            status, text = refusal
            await error_response(status, text)(scope, receive, named_send)
            return
        await self.app(scope, self._limited(receive), named_send)

    def _refusal(self, scope: Scope) -> tuple[HTTPStatus, str] | None:
        headers = dict(scope["headers"])
        if self._expected is not None and scope["path"] not in OPEN_PATHS:
            if not hmac.compare_digest(headers.get(b"authorization", b""), self._expected):
                return HTTPStatus.UNAUTHORIZED, "missing or wrong bearer token (header 'authorization: Bearer <token>')"
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body_bytes:
            return HTTPStatus.REQUEST_ENTITY_TOO_LARGE, _too_large(int(length), self.max_body_bytes)
        kind = headers.get(b"content-type")
        if kind is not None and scope["method"] == "POST" and not _is_json(kind.decode("latin-1")):
            return HTTPStatus.UNSUPPORTED_MEDIA_TYPE, (f"content-type {kind.decode('latin-1')!r} is not JSON; "
                                                       "send the body as application/json")
        return None

    def _limited(self, receive: Receive) -> Receive:
        limit = self.max_body_bytes
        read = 0

        async def limited() -> Message:
            nonlocal read
            message = await receive()
            if message["type"] == "http.request":
                read += len(message.get("body", b""))
                if read > limit:
                    raise HTTPException(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, _too_large(read, limit))
            return message

        return limited


def _too_large(size: int, limit: int) -> str:
    return f"request is {size} bytes or more, over the limit max_message_bytes={limit}"


def _is_json(content_type: str) -> bool:
    message = email.message.Message()
    message["content-type"] = content_type
    subtype = message.get_content_subtype()
    return message.get_content_maintype() == "application" and (subtype == "json" or subtype.endswith("+json"))


def deadline_of(request: Request) -> float | None:
    """The request's deadline (time.monotonic()-based) from x-request-timeout
    in seconds; None without the header (the server's default applies)."""
    given = request.headers.get(TIMEOUT_HEADER)
    if given is None:
        return None
    try:
        seconds = float(given)
    except ValueError:
        seconds = math.nan
    if not (math.isfinite(seconds) and seconds > 0):
        raise InvalidRequestError(f"header {TIMEOUT_HEADER} is {given!r}; give the deadline in seconds, "
                                  f"a number above 0 (e.g. 0.5)")
    return time.monotonic() + seconds


async def until_disconnected(request: Request, call: Awaitable[T]) -> T:
    """`call`'s result, awaited in this task; if the client disconnects
    first, this task is cancelled (and with it the request's engine work)
    and ClientDisconnected raised. One watcher task per request, no more."""
    me = asyncio.current_task()
    assert me is not None
    gone = asyncio.Event()

    async def watch() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass  # the body was read already: the next message is the disconnect
        gone.set()
        me.cancel()

    watcher = asyncio.create_task(watch())
    try:
        return await call
    except asyncio.CancelledError:
        if not gone.is_set():
            raise
        me.uncancel()
        raise ClientDisconnected("the client disconnected; its work was abandoned") from None
    finally:
        watcher.cancel()
