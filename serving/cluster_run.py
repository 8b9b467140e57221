"""`brew cluster`: run a ClusterPlan (serving.cluster) as one process group.

Starts Envoy and every replica at once: Envoy health-checks the replicas
while they load and routes to each as soon as it reports SERVING. Prints
every endpoint, then one line each time the number of replicas Envoy finds
healthy changes. Replica and Envoy logs go to stderr, each line prefixed
with its process's name.

A replica that exits without being asked to (a crash, SIGKILL, or SIGTERM
from an operator) is started again on the same ports, after a backoff that
doubles while it keeps failing fast. If Envoy exits, the cluster stops.

SIGHUP rolls the replicas out, one at a time (`rollout`): a replica drains
(SIGTERM: NOT_SERVING, so Envoy stops routing to it, and what it refuses
meanwhile Envoy retries on another replica), exits and is started again at
once; the next one drains only when the new one answers SERVING (warm: a
replica warms up before it serves) and Envoy routes to it again. With
`cluster.rollout_file` set, the file's `model` and `prompts` (each
optional) are given to the new replicas, so a rollout switches the model
or the prompts directory; without it, or without the file, the replicas
restart with their flags (reading their directories afresh). A new replica
that is not SERVING within ROLLOUT_READY_SECONDS is started again as it was
and the rollout stops there, so a bad model never takes down more than one
replica.

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
import tomllib
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from serving.client import RankingClient
from serving.cluster import ClusterPlan, ReplicaPlan
from serving.envoy_config import (
    AFFINITY_CLUSTER, BALANCED_CLUSTER, HTTP_AFFINITY_CLUSTER, HTTP_BALANCED_CLUSTER, to_yaml,
)

FIRST_BACKOFF_SECONDS = 1.0
MAX_BACKOFF_SECONDS = 30.0
STABLE_SECONDS = 60.0  # a replica up this long starts its backoff afresh
STOP_MARGIN_SECONDS = 10.0  # beyond the grace period, before SIGKILL
ENVOY_STOP_SECONDS = 10.0
HEALTH_POLL_SECONDS = 0.5
ROLLOUT_POLL_SECONDS = 0.2
ROLLOUT_READY_SECONDS = 300.0  # a new replica not SERVING by then is started again as it was
ROLLOUT_KEYS = ("model", "prompts")
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


class RolloutError(ValueError):
    """The rollout file cannot be used; the message says why."""


def read_rollout_file(path: Path) -> tuple[str, ...]:
    """The `brew serve` flags a rollout file asks for: `--model DIR` and/or
    `--prompts DIR`, each a directory that exists (checked before any
    replica is touched). No file: no flags (the replicas keep theirs)."""
    if not path.exists():
        return ()
    try:
        table = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise RolloutError(f"cannot read rollout file {path}: {error}") from None
    unknown = sorted(set(table) - set(ROLLOUT_KEYS))
    if unknown:
        raise RolloutError(f"rollout file {path}: unknown key(s) {unknown}; known: {list(ROLLOUT_KEYS)}")
    flags: list[str] = []
    for key in ROLLOUT_KEYS:
        if key in table:
            directory = table[key]
            if not isinstance(directory, str) or not Path(directory).is_dir():
                raise RolloutError(f"rollout file {path}: {key} = {directory!r} is not a directory")
            flags += [f"--{key}", directory]
    return tuple(flags)


class ClusterRun:
    """The running process group of one ClusterPlan."""

    def __init__(self, plan: ClusterPlan, envoy_binary: Path, envoy_log_level: str = "warning",
                 rollout_file: Path | None = None) -> None:
        self.plan = plan
        self.envoy_binary = envoy_binary
        self.envoy_log_level = envoy_log_level
        self.rollout_file = rollout_file
        self.stopping = asyncio.Event()
        self.processes: dict[str, asyncio.subprocess.Process] = {}
        self._pumps: set[asyncio.Task[None]] = set()
        self._rollout_flags: tuple[str, ...] = ()  # given to every replica started from now on
        self._restart_now: set[str] = set()  # replicas the rollout stopped: started again without backoff
        self._rollout: asyncio.Task[None] | None = None

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
        loop.add_signal_handler(signal.SIGHUP, self.start_rollout)
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
            if self._rollout is not None:
                self._rollout.cancel()
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
        rollout = f", with the model and prompts of {self.rollout_file}" if self.rollout_file else ""
        say(f"rolling restart: kill -HUP {os.getpid()}{rollout}")

    async def _keep_running(self, replica: ReplicaPlan) -> None:
        """Run the replica until the cluster stops, then drain it; start it again
        whenever it exits before."""
        backoff = FIRST_BACKOFF_SECONDS
        while not self.stopping.is_set():
            started = time.monotonic()
            flags = self._rollout_flags
            process = await self._start(replica.name, (*replica.command, *flags), replica.env)
            http = f", HTTP {replica.host}:{replica.http_port}" if replica.http_port is not None else ""
            say(f"replica {replica.name} (pid {process.pid}): gRPC {replica.target}, metrics {replica.metrics_url}{http}"
                + "".join(f", {key}={value}" for key, value in replica.env.items())
                + (f", {' '.join(flags)}" if flags else ""))
            if await self._stopped_first(process):
                await self._stop(process, self.plan.grace_seconds + STOP_MARGIN_SECONDS)
                return
            if replica.name in self._restart_now:
                self._restart_now.discard(replica.name)
                say(f"replica {replica.name} drained for the rollout (exit code {process.returncode}); starting it again")
                continue
            if time.monotonic() - started > STABLE_SECONDS:
                backoff = FIRST_BACKOFF_SECONDS
            say(f"replica {replica.name} exited with code {process.returncode}; starting it again in {backoff:g} s")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(backoff):
                    await self.stopping.wait()
            backoff = min(MAX_BACKOFF_SECONDS, backoff * 2)

    def start_rollout(self) -> None:
        """SIGHUP: roll the replicas out, unless a rollout is under way."""
        if self._rollout is not None and not self._rollout.done():
            say("rollout already under way; SIGHUP ignored")
            return
        try:
            flags = read_rollout_file(self.rollout_file) if self.rollout_file is not None else ()
        except RolloutError as error:
            say(f"rollout not started: {error}")
            return
        self._rollout = asyncio.create_task(self.rollout(flags))

    async def rollout(self, flags: Sequence[str]) -> bool:
        """Restart the replicas one at a time with `flags` added to their
        command; True when every replica is back, SERVING and routed to."""
        previous, self._rollout_flags = self._rollout_flags, tuple(flags)
        say(f"rollout of {len(self.plan.replicas)} replica(s) started" + (f" with {' '.join(flags)}" if flags else ""))
        for replica in self.plan.replicas:
            if not await self._roll(replica):
                say(f"rollout stopped: replica {replica.name} was not SERVING within {ROLLOUT_READY_SECONDS:g} s; "
                    "starting it again as it was, the other replicas keep what they run")
                self._rollout_flags = previous
                await self._replace(replica)
                return False
        say("rollout done: every replica restarted, SERVING and routed to")
        return True

    async def _roll(self, replica: ReplicaPlan) -> bool:
        """Drain the replica, and wait until its new process serves behind Envoy."""
        old = await self._replace(replica)
        try:
            async with asyncio.timeout(ROLLOUT_READY_SECONDS):
                new = await self._new_process(replica.name, old)
                async with RankingClient(replica.target) as client:
                    await client.wait_until_serving(ROLLOUT_READY_SECONDS)
                while not await self._routed_to(replica):
                    await asyncio.sleep(ROLLOUT_POLL_SECONDS)
        except TimeoutError:
            return False
        say(f"rollout: replica {replica.name} (pid {new.pid}) is SERVING and routed to")
        return True

    async def _replace(self, replica: ReplicaPlan) -> asyncio.subprocess.Process:
        """Drain the replica's process and have its keeper start it again at once; the old process."""
        old = self.processes[replica.name]
        self._restart_now.add(replica.name)
        say(f"rollout: draining replica {replica.name} (pid {old.pid})")
        await self._stop(old, self.plan.grace_seconds + STOP_MARGIN_SECONDS)
        return old

    async def _new_process(self, name: str, old: asyncio.subprocess.Process) -> asyncio.subprocess.Process:
        while (process := self.processes.get(name)) is None or process is old:
            await asyncio.sleep(ROLLOUT_POLL_SECONDS)
        return process

    async def _routed_to(self, replica: ReplicaPlan) -> bool:
        """Envoy routes to the replica in each of its clusters (the HTTP ones too, if any)."""
        routes = [(name, (replica.host, replica.port)) for name in (AFFINITY_CLUSTER, BALANCED_CLUSTER)]
        if replica.http_port is not None:
            routes += [(name, (replica.host, replica.http_port))
                       for name in (HTTP_AFFINITY_CLUSTER, HTTP_BALANCED_CLUSTER)]
        try:
            clusters = await asyncio.to_thread(_get_json, f"{self.plan.admin_url}/clusters?format=json")
        except (OSError, ValueError):
            return False
        return all(address in healthy_hosts(clusters, name) for name, address in routes)

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
