"""uvicorn on the server's own event loop: the HTTP port beside gRPC's.

The socket is bound here, with a plain socket (no SO_REUSEPORT: a taken port
is an error that names it and its flag, as for gRPC), and handed to uvicorn,
which runs on the running loop (uvloop under `brew serve`) with the
httptools parser. uvicorn's own `serve()` would take over SIGTERM and
SIGINT; the server owns those (drain first), so uvicorn is started and
stopped through its startup/shutdown steps instead, and its date-header
ticker runs as a task of ours.
"""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import uvicorn
from fastapi import FastAPI

from serving.errors import ListenError

# How long an idle keep-alive connection stays open (Envoy's upstream idle
# timeout, serving.envoy_config, is shorter).
KEEP_ALIVE_SECONDS = 30


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket on host:port (OSError if it cannot be had)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT only; never a shared port
        sock.bind((host, port))
        sock.listen(2048)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


class HttpServer:
    """One uvicorn server over `app` on a socket bound by `bind_socket`."""

    def __init__(self, app: FastAPI, sock: socket.socket, *, tls_cert: Path | None = None,
                 tls_key: Path | None = None) -> None:
        config = uvicorn.Config(
            app, lifespan="off", http="httptools", loop="none", log_level="warning", access_log=False,
            ssl_certfile=str(tls_cert) if tls_cert else None, ssl_keyfile=str(tls_key) if tls_key else None,
            server_header=False, timeout_keep_alive=KEEP_ALIVE_SECONDS,
        )
        config.load()
        self._server = uvicorn.Server(config)
        self._server.lifespan = config.lifespan_class(config)
        self._socket = sock
        self._ticker: asyncio.Task[None] | None = None

    @property
    def port(self) -> int:
        return int(self._socket.getsockname()[1])

    async def start(self) -> None:
        try:
            await self._server.startup(sockets=[self._socket])
        except OSError as error:
            raise ListenError(f"cannot serve HTTP on port {self.port}: {error}") from None
        self._ticker = asyncio.create_task(self._server.main_loop(), name="brew-http-ticker")

    async def stop(self, grace_seconds: float) -> None:
        """Stop taking connections, let answers in flight finish for up to
        `grace_seconds`, then close."""
        self._server.config.timeout_graceful_shutdown = max(grace_seconds, 0.0)
        self._server.should_exit = True
        if self._ticker is not None:
            await self._ticker
        await self._server.shutdown(sockets=[self._socket])
