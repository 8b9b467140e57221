"""Chaos through `brew cluster`: two `brew serve --engine torch` replicas
behind the real Envoy, an open-loop load from the project's own client with
no retries of its own (loadtest.bench.cluster.chaos), and

- one replica killed with SIGKILL: no call fails (Envoy retries what the
  dead replica never answered on the other one), `brew cluster` starts it
  again, and Envoy routes to it again once it is SERVING;
- a rolling restart (SIGHUP to `brew cluster`) onto a new prompts directory:
  no call fails, the answers switch to the new template version, and while
  the rollout is half done each replica's /metrics says which version it
  serves.

The tests run in file order on one cluster. They check behaviour, never
speed: the timeline is printed, BENCHMARKS.md section 12 has the figures.
"""

from __future__ import annotations

import pytest

from loadtest.bench.cluster.chaos import (
    MEMBERS, ROLLOUT_TASK, ROLLOUT_VERSION, kill_under_load, member_request, rollout_prompts, rollout_under_load,
    routed_to,
)
from loadtest.bench.cluster.systems import ClusterProcess, running_cluster
from serving.client import NO_RETRY, RankingClient

pytestmark = [pytest.mark.integration, pytest.mark.asyncio, pytest.mark.timeout(300)]

RATE = 8.0  # calls/s: a modest load for two torch replicas on a shared 2-core machine


@pytest.fixture(scope="module")
def rollout_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("rollout")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, rollout_dir):
    with running_cluster(tmp_path_factory.mktemp("cluster"), "--engine", "torch", "--replicas", "2",
                         "--rollout-file", str(rollout_dir / "rollout.toml")) as running:
        yield running


async def test_a_replica_killed_under_load_fails_no_call_and_comes_back(cluster: ClusterProcess):
    report = await kill_under_load(cluster, RATE)
    print(report.format())
    assert report.failures == {}, report.format()
    assert report.during_calls > 0  # calls were sent while the replica was down
    timeline = report.timeline_s
    readmitted = timeline["readmitted by Envoy (SERVING)"]
    assert timeline["ejected from brew_affinity"] <= readmitted and timeline["restarted by brew cluster"] <= readmitted
    assert all(routed_to(cluster, replica) for replica in cluster.replicas().values())


async def test_a_rolling_restart_under_load_fails_no_call_and_switches_the_template_version(
        cluster: ClusterProcess, rollout_dir):
    cluster.wait_until_all_healthy()
    assert ROLLOUT_VERSION not in await current_versions(cluster)
    report = await rollout_under_load(cluster, RATE, rollout_dir / "rollout.toml", rollout_prompts(rollout_dir))
    print(report.format())
    assert "rollout done" in cluster.stdout(), cluster.stdout()
    assert report.failures == {}, report.format()
    # Midway, the first replica's new process serves the new version and the other's old one the old
    # version, as their /metrics say.
    new, old = report.metrics_share.values()
    assert set(new) == {ROLLOUT_VERSION}, report.metrics_share
    assert old and ROLLOUT_VERSION not in old, report.metrics_share
    # The answers switch: both versions were served, and the new one only once the rollout is done.
    assert ROLLOUT_VERSION in report.versions and set(report.versions) - {ROLLOUT_VERSION}, report.versions
    assert await current_versions(cluster) == {ROLLOUT_VERSION}
    assert all(routed_to(cluster, replica) for replica in cluster.replicas().values())


async def current_versions(cluster: ClusterProcess) -> set[str]:
    """The template versions of ROLLOUT_TASK that a round of members is answered with now."""
    versions = set()
    async with RankingClient(cluster.target, retry=NO_RETRY) as client:
        for index in range(MEMBERS):
            served = await client.score_served(member_request(f"member-{index}"), timeout=30)
            versions |= {result.template_version for result in served.response.results
                         if result.task == ROLLOUT_TASK}
    return versions

