"""`brew cluster` as a subprocess, for the cluster benchmark and the end-to-end tests.

Starts `python -m brew.cli cluster ...` on free ports, reads the endpoints
it prints (Envoy's port, stats and admin URLs, and a line per replica start
with its pid and ports), and asks Envoy's admin interface which replicas it
routes to. Its output goes to files (loadtest.bench.logged_process).
"""

from __future__ import annotations

import json
import re
import sys
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from loadtest.bench.logged_process import LoggedProcess
from serving.cluster_run import healthy_hosts
from serving.envoy_config import AFFINITY_CLUSTER, BALANCED_CLUSTER, HTTP_AFFINITY_CLUSTER, HTTP_BALANCED_CLUSTER

START_TIMEOUT_SECONDS = 180.0
STOP_TIMEOUT_SECONDS = 90.0
FREE_PORTS = ("--envoy-port", "0", "--envoy-stats-port", "0", "--envoy-admin-port", "0",
              "--first-replica-port", "0", "--first-replica-metrics-port", "0")

ENVOY_LINE = re.compile(r"behind Envoy \(pid (?P<pid>\d+)\) on (?P<target>\S+):")
URLS_LINE = re.compile(r"Envoy stats on (?P<stats>\S+); Envoy admin on (?P<admin>\S+)")
HTTP_LINE = re.compile(r"the HTTP/JSON API behind Envoy on (?P<url>\S+),")
REPLICA_LINE = re.compile(r"replica (?P<name>\S+) \(pid (?P<pid>\d+)\): gRPC (?P<target>\S+), "
                          r"metrics (?P<metrics>[^\s,]+)(?:, HTTP (?P<http>[^\s,]+))?")


@dataclass(frozen=True)
class Replica:
    name: str
    pid: int
    target: str
    metrics_url: str
    http_target: str | None = None  # host:port of its HTTP API, when the cluster has one

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.target.rsplit(":", 1)
        return host, int(port)

    @property
    def http_address(self) -> tuple[str, int] | None:
        if self.http_target is None:
            return None
        host, port = self.http_target.rsplit(":", 1)
        return host, int(port)


@dataclass
class ClusterProcess(LoggedProcess):
    """A running `brew cluster` and the endpoints it printed."""

    target: str = ""
    envoy_pid: int = 0
    stats_url: str = ""
    admin_url: str = ""
    http_url: str | None = None  # with --envoy-http-port: Envoy's HTTP/JSON port
    stop_timeout_seconds: ClassVar[float] = STOP_TIMEOUT_SECONDS

    def replicas(self) -> dict[str, Replica]:
        """Every replica by name, as last started (a restart prints a new pid)."""
        found = {}
        for match in REPLICA_LINE.finditer(self.stdout()):
            found[match["name"]] = Replica(match["name"], int(match["pid"]), match["target"], match["metrics"],
                                           match["http"])
        return found

    def healthy(self, cluster: str = AFFINITY_CLUSTER) -> set[tuple[str, int]]:
        """The replica addresses Envoy routes to in one of its clusters."""
        with urllib.request.urlopen(f"{self.admin_url}/clusters?format=json", timeout=5) as answer:
            return healthy_hosts(json.loads(answer.read()), cluster)

    def wait_until_all_healthy(self, timeout: float = START_TIMEOUT_SECONDS) -> None:
        """Until Envoy routes to every replica, in both of its replica clusters
        (and in both HTTP ones, with the HTTP API behind Envoy)."""
        def all_healthy() -> bool:
            replicas = self.replicas().values()
            addresses = {replica.address for replica in replicas}
            try:
                if not addresses or not all(self.healthy(name) == addresses
                                            for name in (AFFINITY_CLUSTER, BALANCED_CLUSTER)):
                    return False
                http = {replica.http_address for replica in replicas if replica.http_address is not None}
                return self.http_url is None or all(self.healthy(name) == http
                                                    for name in (HTTP_AFFINITY_CLUSTER, HTTP_BALANCED_CLUSTER))
            except OSError:  # Envoy's admin not up yet
                return False

        self.wait_until(all_healthy, "healthy replicas behind Envoy", timeout)


@contextmanager
def running_cluster(log_dir: Path, *args: str, timeout: float = START_TIMEOUT_SECONDS) -> Iterator[ClusterProcess]:
    """`brew cluster <free ports> args` until Envoy routes to every replica;
    stopped on exit (SIGTERM, then SIGKILL) unless the caller did."""
    cluster = ClusterProcess.start([sys.executable, "-m", "brew.cli", "cluster", *FREE_PORTS, *args], log_dir)
    try:
        cluster.wait_until(lambda: ENVOY_LINE.search(cluster.stdout()) and URLS_LINE.search(cluster.stdout()),
                           "Envoy endpoints", timeout)
        envoy, urls = ENVOY_LINE.search(cluster.stdout()), URLS_LINE.search(cluster.stdout())
        assert envoy is not None and urls is not None
        cluster.target, cluster.envoy_pid = envoy["target"], int(envoy["pid"])
        cluster.stats_url, cluster.admin_url = urls["stats"], urls["admin"]
        http = HTTP_LINE.search(cluster.stdout())
        cluster.http_url = http["url"] if http is not None else None
        cluster.wait_until_all_healthy(timeout)
        yield cluster
    finally:
        cluster.stop()
