"""`brew cluster`: run a ClusterPlan (serving.cluster) as one process group.

Starts Envoy and every replica at once: Envoy health-checks the replicas
while they load and routes to each as soon as it reports SERVING. Prints
every endpoint, then one line each time the number of replicas Envoy finds
healthy changes. Replica and Envoy logs go to stderr, each line prefixed
with its process's name.

A replica that exits without being asked to (a crash, SIGKILL, or SIGTERM
from an operator: a rolling restart is `kill -TERM <pid>`, one replica at a
time) is started again on the same ports, after a backoff that doubles
while it keeps failing fast. If Envoy exits, the cluster stops.

SIGTERM or SIGINT stops the cluster in order: every replica gets SIGTERM and
drains (health NOT_SERVING, so Envoy stops routing to it; in-flight calls
get the replicas' grace period), then Envoy stops last. Children run in
their own process groups (a terminal's Ctrl-C reaches only this process,
which orders the stop) and, on Linux, get SIGTERM if this process dies.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import os
import signal
import sys
import tempfile
import time
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from serving.cluster import ClusterPlan, ReplicaPlan
from serving.envoy_config import AFFINITY_CLUSTER, to_yaml

FIRST_BACKOFF_SECONDS = 1.0
MAX_BACKOFF_SECONDS = 30.0
STABLE_SECONDS = 60.0  # a replica up this long starts its backoff afresh
STOP_MARGIN_SECONDS = 10.0  # beyond the grace period, before SIGKILL
ENVOY_STOP_SECONDS = 10.0
HEALTH_POLL_SECONDS = 0.5
PR_SET_PDEATHSIG = 1


def say(line: str) -> None:
    print(f"brew cluster: {line}", flush=True)


def healthy_hosts(clusters: Mapping[str, Any], cluster_name: str) -> set[tuple[str, int]]:
    """The hosts of `cluster_name` Envoy routes to, from its admin /clusters?format=json:
    eds_health_status HEALTHY and no failed_* flag (active health check, outlier ejection)."""
    healthy = set()
    for cluster in clusters.get("cluster_statuses", ()):
        if cluster.get("name") != cluster_name:
            continue
        for host in cluster.get("host_statuses", ()):
            status = host.get("health_status", {})
            failed = any(key.startswith("failed") and value for key, value in status.items())
            if status.get("eds_health_status") == "HEALTHY" and not failed:
                address = host["address"]["socket_address"]
                healthy.add((address["address"], int(address["port_value"])))
    return healthy


def _die_with_parent() -> None:
    """In the child, before exec: SIGTERM when the process that started it dies (Linux)."""
    if sys.platform == "linux":
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


async def _spawn(command: Sequence[str], env: Mapping[str, str], label: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        *command, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT, env={**os.environ, "TOKENIZERS_PARALLELISM": "false", **env},
        process_group=0, preexec_fn=_die_with_parent,
    )


async def _pump(process: asyncio.subprocess.Process, label: str) -> None:
    """Copy the child's output to stderr, line by line, prefixed with its label."""
    assert process.stdout is not None
    async for line in process.stdout:
        sys.stderr.write(f"[{label}] {line.decode('utf-8', 'replace').rstrip()}\n")
    sys.stderr.flush()


class ClusterRun:
    """The running process group of one ClusterPlan."""

    def __init__(self, plan: ClusterPlan, envoy_binary: Path, envoy_log_level: str = "warning") -> None:
        self.plan = plan
        self.envoy_binary = envoy_binary
        self.envoy_log_level = envoy_log_level
        self.stopping = asyncio.Event()
        self.processes: dict[str, asyncio.subprocess.Process] = {}
        self._pumps: set[asyncio.Task[None]] = set()

    async def _start(self, label: str, command: Sequence[str], env: Mapping[str, str]) -> asyncio.subprocess.Process:
        process = await _spawn(command, env, label)
        self.processes[label] = process
        pump = asyncio.create_task(_pump(process, label))
        self._pumps.add(pump)
        pump.add_done_callback(self._pumps.discard)
        return process

    async def run(self) -> int:
        """Until SIGTERM/SIGINT (exit 0) or Envoy's death (exit 1)."""
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self.stopping.set)
        with tempfile.TemporaryDirectory(prefix="brew-cluster-") as scratch:
            config_path = Path(scratch) / "envoy.yaml"
            config_path.write_text(to_yaml(self.plan.envoy_config()), encoding="utf-8")
            envoy = await self._start("envoy", self._envoy_command(config_path), {})
            self._announce(envoy.pid)
            keepers = [asyncio.create_task(self._keep_running(replica)) for replica in self.plan.replicas]
            watcher = asyncio.create_task(self._watch_health())
            envoy_exit = asyncio.create_task(envoy.wait())
            stop = asyncio.create_task(self.stopping.wait())
            await asyncio.wait({envoy_exit, stop}, return_when=asyncio.FIRST_COMPLETED)
            envoy_died = envoy_exit.done() and not self.stopping.is_set()
            if envoy_died:
                say(f"Envoy exited with code {envoy.returncode}; stopping the replicas")
            self.stopping.set()
            watcher.cancel()
            say(f"draining the replicas (up to {self.plan.grace_seconds:g} s), then stopping Envoy")
            await asyncio.gather(*keepers, watcher, return_exceptions=True)
            await self._stop(envoy, ENVOY_STOP_SECONDS)
            stop.cancel()
            await asyncio.gather(*self._pumps, return_exceptions=True)
        say("stopped")
        return 1 if envoy_died else 0

    def _envoy_command(self, config_path: Path) -> list[str]:
        # No hot restart: it would need a shared-memory base id unique on the host.
        return [str(self.envoy_binary), "-c", str(config_path), "--disable-hot-restart",
                "--log-level", self.envoy_log_level]

    def _announce(self, envoy_pid: int) -> None:
        plan, cluster = self.plan, self.plan.cluster
        say(f"{len(plan.replicas)} replica(s) behind Envoy (pid {envoy_pid}) on {plan.target}: "
            f"{cluster.hash_policy.value} on x-brew-member, least request without it")
        if plan.http_url is not None:
            say(f"the HTTP/JSON API behind Envoy on {plan.http_url}, with the same affinity")
        say(f"Envoy stats on {plan.stats_url}; Envoy admin on {plan.admin_url}")

    async def _keep_running(self, replica: ReplicaPlan) -> None:
        """Run the replica until the cluster stops, then drain it; start it again
        whenever it exits before."""
        backoff = FIRST_BACKOFF_SECONDS
        while not self.stopping.is_set():
            started = time.monotonic()
            process = await self._start(replica.name, replica.command, replica.env)
            http = f", HTTP {replica.host}:{replica.http_port}" if replica.http_port is not None else ""
            say(f"replica {replica.name} (pid {process.pid}): gRPC {replica.target}, metrics {replica.metrics_url}{http}"
                + "".join(f", {key}={value}" for key, value in replica.env.items()))
            if await self._stopped_first(process):
                await self._stop(process, self.plan.grace_seconds + STOP_MARGIN_SECONDS)
                return
            if time.monotonic() - started > STABLE_SECONDS:
                backoff = FIRST_BACKOFF_SECONDS
            say(f"replica {replica.name} exited with code {process.returncode}; starting it again in {backoff:g} s")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(backoff):
                    await self.stopping.wait()
            backoff = min(MAX_BACKOFF_SECONDS, backoff * 2)

    async def _stopped_first(self, process: asyncio.subprocess.Process) -> bool:
        """Until the process exits (False) or the cluster stops (True)."""
        waits = {asyncio.create_task(process.wait()), asyncio.create_task(self.stopping.wait())}
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        for wait in waits:
            wait.cancel()
        return process.returncode is None

    async def _watch_health(self) -> None:
        """One line each time the number of replicas Envoy routes to changes."""
        url = f"{self.plan.admin_url}/clusters?format=json"
        total, last = len(self.plan.replicas), None
        while True:
            try:
                healthy = len(healthy_hosts(await asyncio.to_thread(_get_json, url), AFFINITY_CLUSTER))
            except (OSError, ValueError):  # Envoy still starting
                healthy = 0
            if healthy != last:
                say(f"{healthy} of {total} replicas healthy behind {self.plan.target}")
                last = healthy
            await asyncio.sleep(HEALTH_POLL_SECONDS)

    @staticmethod
    async def _stop(process: asyncio.subprocess.Process, timeout: float) -> None:
        """SIGTERM; SIGKILL if it has not exited after `timeout` seconds."""
        if process.returncode is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(timeout):
                await process.wait()
        except TimeoutError:
            process.kill()
            await process.wait()


def _get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=2.0) as answer:
        return json.loads(answer.read())
