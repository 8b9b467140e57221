"""Replica loss and rollouts under load, through `brew cluster`'s Envoy.

    python -m loadtest.bench.cluster.chaos --event kill --rate 8 --out runs/chaos
    python -m loadtest.bench.cluster.chaos --event rollout --rate 8 --out runs/chaos

Starts `brew cluster --replicas 2` (the torch engine unless --engine says
otherwise), sends an open-loop load at --rate through Envoy from the
project's own client with no retries of its own (every failure Envoy lets
through is counted), and in the middle of it:

- kill: SIGKILL to one replica. Timeline, from the kill: when Envoy
  stopped routing to it in the cluster the load uses (`brew_affinity`:
  calls with x-brew-member; outlier detection and health checks) and in
  the one it does not (`brew_balanced`: health checks alone), when `brew
  cluster` started it again (restarted), when Envoy routed to it again
  (readmitted: it answers SERVING), and its first answer after that.
- rollout: SIGHUP to `brew cluster` with a rollout file naming a new
  prompts directory (the same templates, job_apply's version pinned to
  ROLLOUT_VERSION): every replica restarts in turn. Timeline: each
  replica's drain and readmission, the end of the rollout; the template
  version of every answer, and the share per version in the replicas'
  /metrics once the first replica is back.

Either way: calls, failures by status, p99 of the calls sent during the
event, and the timeline. The end-to-end test tests/e2e/test_cluster_chaos.py
runs the same events and asserts no failed call; this command prints the
figures of BENCHMARKS.md, section 12.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import json_format

from brew import defaults
from brew.v1 import ranking_pb2 as pb
from loadtest.bench.cluster.systems import ClusterProcess, Replica, running_cluster
from serving.client import NO_RETRY, RankingClient
from serving.envoy_config import AFFINITY_CLUSTER, BALANCED_CLUSTER

MEMBERS = 24
CALL_TIMEOUT_SECONDS = 5.0
POLL_SECONDS = 0.05
EVENT_TIMEOUT_SECONDS = 180.0
ROLLOUT_TASK = "job_apply"
ROLLOUT_VERSION = "rollout-2"
OK = "OK"


@dataclass(frozen=True)
class Call:
    sent: float  # monotonic
    done: float
    code: str  # OK or the gRPC status name
    replica: str
    versions: tuple[str, ...] = ()  # template version of each task of an OK answer
    details: str = ""  # a failed call's status details (what Envoy or the replica said)

    @property
    def latency_ms(self) -> float:
        return (self.done - self.sent) * 1000.0


def member_request(member: str, all_tasks: bool = False) -> pb.ScoreCandidatesRequest:
    """The example request as `member`: job_apply only (a short call), or with `all_tasks` as written."""
    request = json_format.Parse(defaults.EXAMPLE_REQUEST.read_text(encoding="utf-8"), pb.ScoreCandidatesRequest())
    request.member.member_id = member
    request.request_id = f"{member}-{time.monotonic_ns()}"
    if not all_tasks:
        kept = [task for task in request.tasks if task.task == ROLLOUT_TASK]
        del request.tasks[:]
        request.tasks.extend(kept)
    return request


class OpenLoopLoad:
    """One call every 1/rate seconds, over MEMBERS members, each call on its
    own (no waiting for the previous one), through a client that never retries."""

    def __init__(self, target: str, rate: float, all_tasks: bool = False, timeout: float = CALL_TIMEOUT_SECONDS) -> None:
        self.target, self.rate, self.all_tasks, self.timeout = target, rate, all_tasks, timeout
        self.calls: list[Call] = []
        self._stop = asyncio.Event()

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        async with RankingClient(self.target, retry=NO_RETRY) as client:
            pending: set[asyncio.Task[None]] = set()
            start, sent = time.monotonic(), 0
            while not self._stop.is_set():
                task = asyncio.create_task(self._call(client, f"member-{sent % MEMBERS}"))
                pending.add(task)
                task.add_done_callback(pending.discard)
                sent += 1
                wait = start + sent / self.rate - time.monotonic()
                if wait > 0:
                    try:
                        await asyncio.wait_for(self._stop.wait(), wait)
                    except TimeoutError:
                        pass
            await asyncio.gather(*pending)

    async def _call(self, client: RankingClient, member: str) -> None:
        sent = time.monotonic()
        try:
            served = await client.score_served(member_request(member, self.all_tasks), timeout=self.timeout)
        except grpc.aio.AioRpcError as error:
            self.calls.append(Call(sent, time.monotonic(), error.code().name, "", details=error.details() or ""))
            return
        versions = tuple(result.template_version for result in served.response.results)
        self.calls.append(Call(sent, time.monotonic(), OK, served.replica or "", versions))

    def answered_by(self, replica: str, since: float) -> bool:
        return any(call.code == OK and call.replica == replica and call.sent >= since for call in self.calls)


@dataclass
class EventReport:
    """What the callers saw around one event, and when the cluster did what."""

    event: str
    rate: float
    calls: int = 0
    failures: dict[str, int] = field(default_factory=dict)  # by status
    during_calls: int = 0  # sent between the event's start and its end
    during_p99_ms: float | None = None
    before_p99_ms: float | None = None
    timeline_s: dict[str, float] = field(default_factory=dict)  # seconds from the event's start
    versions: dict[str, int] = field(default_factory=dict)  # answers per template version (rollout)
    metrics_share: dict[str, dict[str, float]] = field(default_factory=dict)  # replica -> version -> tasks
    # each failed call: seconds from the event's start to its sending, its status and details
    failed: list[tuple[float, str, str]] = field(default_factory=list)

    def summarize(self, calls: list[Call], started: float, ended: float) -> None:
        self.calls = len(calls)
        self.failures = dict(sorted(Counter(call.code for call in calls if call.code != OK).items()))
        self.failed = [(call.sent - started, call.code, call.details) for call in calls if call.code != OK]
        during = [call for call in calls if started <= call.sent <= ended]
        before = [call for call in calls if call.sent < started]
        self.during_calls = len(during)
        self.during_p99_ms = p99([call.latency_ms for call in during if call.code == OK])
        self.before_p99_ms = p99([call.latency_ms for call in before if call.code == OK])

    def format(self) -> str:
        lines = [f"{self.event} at {self.rate:g} calls/s: {self.calls} calls, failures "
                 f"{self.failures or 'none'}; during the event {self.during_calls} calls, p99 "
                 f"{_ms(self.during_p99_ms)} (before it {_ms(self.before_p99_ms)})"]
        lines += [f"  {name:<32} {seconds:6.2f} s" for name, seconds in self.timeline_s.items()]
        if self.versions:
            lines.append(f"  answers by template version: {self.versions}")
        for replica, share in self.metrics_share.items():
            lines.append(f"  {replica} /metrics, {ROLLOUT_TASK} tasks by version, midway: {share}")
        lines += [f"  failed: sent at {at:+.2f} s, {code}: {details}" for at, code, details in self.failed]
        return "\n".join(lines)


def p99(values: list[float]) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f} ms"


def routed_to(cluster: ClusterProcess, replica: Replica) -> bool:
    """Envoy routes to the replica in both of its gRPC clusters."""
    try:
        return all(replica.address in cluster.healthy(name) for name in (AFFINITY_CLUSTER, BALANCED_CLUSTER))
    except OSError:
        return False


async def until(condition: Callable[[], object], what: str, timeout: float = EVENT_TIMEOUT_SECONDS) -> float:
    """Poll until `condition()` holds; the monotonic time it did."""
    deadline = time.monotonic() + timeout
    while not await asyncio.to_thread(condition):
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {what} after {timeout:g} s")
        await asyncio.sleep(POLL_SECONDS)
    return time.monotonic()


async def settle(load: OpenLoopLoad, cluster: ClusterProcess, seconds: float) -> None:
    """Load for `seconds` with every replica answering, before the event."""
    await asyncio.sleep(seconds)
    start = time.monotonic()
    for name in cluster.replicas():
        await until(lambda name=name: load.answered_by(name, start), f"an answer from {name}")


async def kill_under_load(cluster: ClusterProcess, rate: float, settle_seconds: float = 2.0,
                          **load_options: Any) -> EventReport:
    """SIGKILL one replica under load; until it is restarted, routed to and has answered again.
    `load_options` go to OpenLoopLoad."""
    load = OpenLoopLoad(cluster.target, rate, **load_options)
    running = asyncio.create_task(load.run())
    report = EventReport("kill -9 of one replica", rate)
    try:
        await settle(load, cluster, settle_seconds)
        victim = sorted(cluster.replicas().values(), key=lambda r: r.name)[-1]
        killed = time.monotonic()
        os.kill(victim.pid, signal.SIGKILL)
        ejected = await until(lambda: victim.address not in cluster.healthy(AFFINITY_CLUSTER),
                              "Envoy ejecting the killed replica from the cluster the load uses")
        out = await until(lambda: victim.address not in cluster.healthy(BALANCED_CLUSTER),
                          "Envoy's health checks taking the killed replica out")
        restarted = await until(lambda: cluster.replicas()[victim.name].pid != victim.pid,
                                "brew cluster starting the killed replica again")
        readmitted = await until(lambda: routed_to(cluster, victim), "Envoy routing to the restarted replica")
        answered = await until(lambda: load.answered_by(victim.name, readmitted),
                               "an answer from the restarted replica")
    finally:
        load.stop()
        await running
    report.timeline_s = {f"ejected from {AFFINITY_CLUSTER}": ejected - killed,
                         f"out of {BALANCED_CLUSTER} (no load)": out - killed,
                         "restarted by brew cluster": restarted - killed,
                         "readmitted by Envoy (SERVING)": readmitted - killed,
                         "first answer after readmission": answered - killed}
    report.summarize(load.calls, killed, readmitted)
    return report


def rollout_prompts(into: Path) -> Path:
    """A copy of the bundled prompts with ROLLOUT_TASK's version pinned to ROLLOUT_VERSION."""
    prompts = into / "prompts-rollout"
    shutil.copytree(defaults.PROMPTS_DIR, prompts)
    config = prompts / f"{ROLLOUT_TASK}.toml"
    config.write_text(f'version = "{ROLLOUT_VERSION}"\n' + config.read_text(encoding="utf-8"), encoding="utf-8")
    return prompts


class VersionSampler:
    """Each replica's ROLLOUT_TASK tasks by template version, scraped over
    and over: the last answer of each replica (a draining one stops answering)."""

    def __init__(self, cluster: ClusterProcess) -> None:
        self.cluster = cluster
        self.latest: dict[tuple[str, int], dict[str, float]] = {}  # (replica, pid) -> version -> tasks

    def sample(self) -> None:
        for name, replica in self.cluster.replicas().items():
            try:
                self.latest[(name, replica.pid)] = version_share(replica.metrics_url)
            except OSError:
                pass  # draining, or not up yet: keep its last answer

    async def run(self) -> None:
        while True:
            await asyncio.to_thread(self.sample)
            await asyncio.sleep(POLL_SECONDS)


def version_share(metrics_url: str) -> dict[str, float]:
    """ROLLOUT_TASK's tasks scored by template version, from a replica's /metrics."""
    from loadtest.summary import parse_samples, scrape_metrics

    share: dict[str, float] = {}
    for (name, labels), value in parse_samples(scrape_metrics(metrics_url)).items():
        label = dict(labels)
        if name == "brew_version_tasks_total" and label.get("task") == ROLLOUT_TASK:
            share[label["version"]] = share.get(label["version"], 0.0) + value
    return share


async def rollout_under_load(cluster: ClusterProcess, rate: float, rollout_file: Path, prompts: Path,
                             settle_seconds: float = 2.0, **load_options: Any) -> EventReport:
    """SIGHUP to brew cluster with `rollout_file` naming `prompts`; load until the rollout is done.
    `load_options` go to OpenLoopLoad."""
    load, sampler = OpenLoopLoad(cluster.target, rate, **load_options), VersionSampler(cluster)
    running = asyncio.create_task(load.run())
    report = EventReport("rollout of every replica", rate)
    replicas = sorted(cluster.replicas())
    old_pids = {name: replica.pid for name, replica in cluster.replicas().items()}
    sampling: asyncio.Task[None] | None = None
    try:
        await settle(load, cluster, settle_seconds)
        sampling = asyncio.create_task(sampler.run())
        rollout_file.write_text(f'prompts = "{prompts}"\n', encoding="utf-8")
        seen = len(cluster.stdout())
        started = time.monotonic()
        cluster.process.send_signal(signal.SIGHUP)

        def said(text: str) -> bool:
            return text in cluster.stdout()[seen:]

        first = await until(lambda: said(f"rollout: replica {replicas[0]} ("), "the first replica back")
        # Midway: the first replica's new process once it has answered, the other's old one as last seen.
        await until(lambda: load.answered_by(replicas[0], first), f"an answer from the new {replicas[0]}")
        await asyncio.to_thread(sampler.sample)
        new_pid = cluster.replicas()[replicas[0]].pid
        report.metrics_share = {f"{replicas[0]} (new pid {new_pid})": sampler.latest.get((replicas[0], new_pid), {}),
                                f"{replicas[1]} (old pid {old_pids[replicas[1]]})":
                                    sampler.latest.get((replicas[1], old_pids[replicas[1]]), {})}
        done = await until(lambda: said("rollout done") or said("rollout stopped"), "the rollout's end")
        await until(lambda: any(call.sent >= done and call.code == OK for call in load.calls), "an answer after it")
    finally:
        if sampling is not None:
            sampling.cancel()
        load.stop()
        await running
    report.timeline_s = {f"replica {replicas[0]} back": first - started, "rollout done": done - started}
    report.summarize(load.calls, started, done)
    report.versions = dict(Counter(version for call in load.calls for version in call.versions))
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtest.bench.cluster.chaos", description=__doc__.split("\n\n")[0])
    parser.add_argument("--event", choices=["kill", "rollout"], required=True)
    parser.add_argument("--rate", type=float, default=8.0, help="calls per second through Envoy (open loop)")
    parser.add_argument("--engine", default="torch")
    parser.add_argument("--all-tasks", action="store_true",
                        help="the example request as written (3 tasks, 7 candidates); default: job_apply only")
    parser.add_argument("--timeout", type=float, default=CALL_TIMEOUT_SECONDS, help="each call's deadline, s")
    parser.add_argument("--out", type=Path, required=True, help="the cluster's logs and report.json go here")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="brew-chaos-") as scratch:
        rollout_file = Path(scratch) / "rollout.toml"
        with running_cluster(args.out / "cluster", "--engine", args.engine, "--replicas", "2",
                             "--rollout-file", str(rollout_file)) as cluster:
            load = {"all_tasks": args.all_tasks, "timeout": args.timeout}
            if args.event == "kill":
                report = asyncio.run(kill_under_load(cluster, args.rate, **load))
            else:
                report = asyncio.run(rollout_under_load(cluster, args.rate, rollout_file,
                                                        rollout_prompts(Path(scratch)), **load))
    (args.out / "report.json").write_text(json.dumps(asdict(report), indent=2) + "\n", encoding="utf-8")
    print(report.format())
    return 0 if not report.failures else 1


if __name__ == "__main__":
    raise SystemExit(main())
