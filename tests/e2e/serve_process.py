"""`brew serve` as a real subprocess, for the end-to-end tests of the command.

Starts `python -m brew.cli serve --engine torch --port 0 --metrics-port 0 ...`,
waits for the one line the command prints on stdout once health is SERVING,
and reads the ports from it (and the HTTP port from the line before it, when
the server was given --http-port). stdout and stderr go to files
(loadtest.bench.logged_process), so a failure can quote the server's log.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from service_wire import Metrics, scrape_url

from loadtest.bench.logged_process import LoggedProcess, server_env

START_TIMEOUT_SECONDS = 120.0

SERVING_LINE = re.compile(
    r"serving brew\.v1\.RankingService on (?P<host>[^\s:]+):(?P<port>\d+); "
    r"metrics on http://(?P<metrics_host>[^\s:/]+):(?P<metrics_port>\d+)/metrics; pid (?P<pid>\d+)"
)

HTTP_LINE = re.compile(r"serving the HTTP/JSON API on (?P<scheme>https?)://(?P<host>[^\s:]+):(?P<port>\d+) ")


def serve_command(*args: str) -> list[str]:
    """The `brew serve` command line on the torch engine, free ports, plus `args`."""
    return [sys.executable, "-m", "brew.cli", "serve", "--engine", "torch", "--port", "0", "--metrics-port", "0",
            *args]


def find_grpcurl() -> str | None:
    """grpcurl on PATH, or the one the test extra installs next to this Python."""
    return shutil.which("grpcurl") or shutil.which("grpcurl", path=str(Path(sys.executable).parent))


serve_env = server_env


@dataclass
class ServeProcess(LoggedProcess):
    """A running `brew serve` (stopped with SIGTERM, then SIGKILL after 30 s) and the endpoints it printed."""

    host: str = ""
    port: int = 0
    metrics_host: str = ""
    metrics_port: int = 0
    announced_pid: int = 0
    http_url: str | None = None  # scheme://host:port with --http-port

    @property
    def target(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.metrics_host}:{self.metrics_port}/metrics"


def _wait_for_serving_line(server: ServeProcess, timeout: float) -> None:
    server.wait_until(lambda: SERVING_LINE.search(server.stdout()), "serving line", timeout)
    found = SERVING_LINE.search(server.stdout())
    assert found is not None
    server.host, server.port = found["host"], int(found["port"])
    server.metrics_host, server.metrics_port = found["metrics_host"], int(found["metrics_port"])
    server.announced_pid = int(found["pid"])
    http = HTTP_LINE.search(server.stdout())
    if http is not None:
        server.http_url = f"{http['scheme']}://{http['host']}:{http['port']}"


@contextmanager
def running_serve(log_dir: Path, *args: str, env: dict[str, str] | None = None,
                  timeout: float = START_TIMEOUT_SECONDS) -> Iterator[ServeProcess]:
    """`brew serve ... args` until it prints its serving line; stopped on exit
    (SIGTERM, then SIGKILL) unless the test already ended it."""
    server = ServeProcess.start(serve_command(*args), log_dir, env)
    try:
        _wait_for_serving_line(server, timeout)
        yield server
    finally:
        server.stop()


def run_serve(args: Sequence[str], timeout: float = START_TIMEOUT_SECONDS,
              env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`brew serve ... args` to completion (for commands that must refuse to start)."""
    return subprocess.run(serve_command(*args), capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL, env=env if env is not None else serve_env())


# --- metrics -----------------------------------------------------------------


def scrape(server: ServeProcess, timeout: float = 10.0) -> Metrics:
    return scrape_url(server.metrics_url, timeout)
