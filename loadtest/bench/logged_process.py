"""A server run as a subprocess with its output in files, for benchmarks and end-to-end tests.

stdout and stderr go to `log_dir/stdout.txt` and `stderr.txt`, not to pipes:
a pipe nobody reads fills up with log lines and blocks the server, and a
failure can quote the files. `wait_until` polls a condition (usually on
what the server printed) and fails with the server's output when the
process exits first or time runs out; `stop` sends SIGTERM (servers drain),
then SIGKILL.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Self

QUOTED_STDERR_CHARS = 4000


def server_env(**extra: str) -> dict[str, str]:
    """This process's environment, with tokenizers' thread pool off (servers fork)."""
    return {**os.environ, "TOKENIZERS_PARALLELISM": "false", **extra}


@dataclass
class LoggedProcess:
    process: subprocess.Popen[bytes]
    log_dir: Path
    stop_timeout_seconds: ClassVar[float] = 30.0

    @classmethod
    def start(cls, command: Sequence[str], log_dir: Path, env: Mapping[str, str] | None = None) -> Self:
        log_dir.mkdir(parents=True, exist_ok=True)
        with open(log_dir / "stdout.txt", "wb") as stdout, open(log_dir / "stderr.txt", "wb") as stderr:
            process = subprocess.Popen(list(command), stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr,
                                       env=dict(env) if env is not None else server_env())
        return cls(process=process, log_dir=log_dir)

    def stdout(self) -> str:
        return (self.log_dir / "stdout.txt").read_text(encoding="utf-8", errors="replace")

    def stderr(self) -> str:
        return (self.log_dir / "stderr.txt").read_text(encoding="utf-8", errors="replace")

    def wait_until(self, condition: Callable[[], object], what: str, timeout: float) -> None:
        """Until `condition()` is true. ChildProcessError if the process exits
        first, TimeoutError after `timeout` seconds; both quote its output."""
        deadline = time.monotonic() + timeout
        while not condition():
            if self.process.poll() is not None:
                command = " ".join(map(str, self.process.args))  # type: ignore[arg-type]
                raise ChildProcessError(f"{command} exited with code {self.process.returncode} waiting for "
                                        f"{what}:\n{self._output()}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"no {what} after {timeout:.0f}s:\n{self._output()}")
            time.sleep(0.1)

    def _output(self) -> str:
        return f"stdout:\n{self.stdout()}\nstderr:\n{self.stderr()[-QUOTED_STDERR_CHARS:]}"

    def terminate(self) -> None:
        """SIGTERM: a server drains and exits."""
        self.process.send_signal(signal.SIGTERM)

    def stop(self) -> int:
        """SIGTERM, then SIGKILL if it has not exited after stop_timeout_seconds; the exit code."""
        if self.process.poll() is None:
            self.terminate()
            try:
                return self.process.wait(timeout=self.stop_timeout_seconds)
            except subprocess.TimeoutExpired:
                self.process.kill()
        return self.process.wait()
