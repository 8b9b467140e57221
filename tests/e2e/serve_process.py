"""`brew serve` as a real subprocess, for the end-to-end tests of the command.

Starts `python -m brew.cli serve --engine torch --port 0 --metrics-port 0 ...`,
waits for the one line the command prints on stdout once health is SERVING,
and reads the ports from it. stdout and stderr go to files (a pipe nobody
reads would fill up with log lines and block the server), so a failure can
quote the server's log.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from service_wire import Metrics, scrape_url

START_TIMEOUT_SECONDS = 120.0
STOP_TIMEOUT_SECONDS = 30.0

SERVING_LINE = re.compile(
    r"serving brew\.v1\.RankingService on (?P<host>[^\s:]+):(?P<port>\d+); "
    r"metrics on http://(?P<metrics_host>[^\s:/]+):(?P<metrics_port>\d+)/metrics"
)


def serve_command(*args: str) -> list[str]:
    """The `brew serve` command line on the torch engine, free ports, plus `args`."""
    return [sys.executable, "-m", "brew.cli", "serve", "--engine", "torch", "--port", "0", "--metrics-port", "0",
            *args]


def find_grpcurl() -> str | None:
    """grpcurl on PATH, or the one the test extra installs next to this Python."""
    return shutil.which("grpcurl") or shutil.which("grpcurl", path=str(Path(sys.executable).parent))


def serve_env(**extra: str) -> dict[str, str]:
    return {**os.environ, "TOKENIZERS_PARALLELISM": "false", **extra}


@dataclass
class ServeProcess:
    """A running `brew serve` and the endpoints it printed."""

    process: subprocess.Popen[bytes]
    log_dir: Path
    host: str = ""
    port: int = 0
    metrics_host: str = ""
    metrics_port: int = 0

    @property
    def target(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.metrics_host}:{self.metrics_port}/metrics"

    def stdout(self) -> str:
        return (self.log_dir / "stdout.txt").read_text(encoding="utf-8", errors="replace")

    def stderr(self) -> str:
        return (self.log_dir / "stderr.txt").read_text(encoding="utf-8", errors="replace")

    def terminate(self) -> None:
        """SIGTERM: the server drains and exits."""
        self.process.send_signal(signal.SIGTERM)

    def stop(self) -> int:
        """SIGTERM, then SIGKILL if it has not exited after STOP_TIMEOUT_SECONDS; the exit code."""
        if self.process.poll() is None:
            self.terminate()
            try:
                return self.process.wait(timeout=STOP_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                self.process.kill()
        return self.process.wait()


def _wait_for_serving_line(server: ServeProcess, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        found = SERVING_LINE.search(server.stdout())
        if found:
            server.host, server.port = found["host"], int(found["port"])
            server.metrics_host, server.metrics_port = found["metrics_host"], int(found["metrics_port"])
            return
        if server.process.poll() is not None:
            raise AssertionError(f"brew serve exited with code {server.process.returncode} before serving; "
                                 f"stderr:\n{server.stderr()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"brew serve printed no serving line within {timeout:.0f}s; "
                                 f"stdout:\n{server.stdout()}\nstderr:\n{server.stderr()}")
        time.sleep(0.1)


@contextmanager
def running_serve(log_dir: Path, *args: str, env: dict[str, str] | None = None,
                  timeout: float = START_TIMEOUT_SECONDS) -> Iterator[ServeProcess]:
    """`brew serve ... args` until it prints its serving line; stopped on exit
    (SIGTERM, then SIGKILL) unless the test already ended it."""
    log_dir.mkdir(parents=True, exist_ok=True)
    with open(log_dir / "stdout.txt", "wb") as stdout, open(log_dir / "stderr.txt", "wb") as stderr:
        process = subprocess.Popen(serve_command(*args), stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr,
                                   env=env if env is not None else serve_env())
    server = ServeProcess(process=process, log_dir=log_dir)
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
