"""`brew cluster` planned, not run: ports, names, command lines, GPU and CPU
shares, the Envoy configuration it prints, and how it reads Envoy's view of
replica health."""

from __future__ import annotations

import itertools
import subprocess
import sys

import pytest

from brew.engines.options import VllmOptions
from serving.cluster import (
    ClusterError,
    connect_host,
    envoy_addresses,
    find_envoy,
    gpu_sets,
    plan_cluster,
    printable_envoy_config,
)
from serving.cluster_run import healthy_hosts
from serving.config import load_config
from serving.envoy_config import AFFINITY_CLUSTER
from serving.replica import default_replica_name

SERVE_ARGS = ("--engine", "torch", "--grace-seconds", "5")


def config(**cluster: object):  # type: ignore[no-untyped-def]
    return load_config(engine="torch", cluster=cluster)


def test_replica_i_serves_on_the_first_ports_plus_i_with_brew_serves_flags():
    plan = plan_cluster(config(replicas=3), SERVE_ARGS, environ={}, cpus=range(6))
    assert [(r.port, r.metrics_port) for r in plan.replicas] == [(50061, 9401), (50062, 9402), (50063, 9403)]
    first = plan.replicas[0]
    assert first.name == default_replica_name(50061) and first.target == "127.0.0.1:50061"
    assert first.metrics_url == "http://127.0.0.1:9401/metrics"
    assert first.command == (sys.executable, "-m", "brew.cli", "serve", *SERVE_ARGS, "--host", "127.0.0.1",
                             "--port", "50061", "--metrics-port", "9401")
    assert plan.target == "127.0.0.1:50051" and plan.grace_seconds == 10.0
    assert plan.stats_url == "http://127.0.0.1:9902/stats/prometheus" and plan.admin_url == "http://127.0.0.1:9901"


def test_ports_given_as_zero_are_picked_free_and_never_twice():
    ports = itertools.chain([41000, 41000, 41001], range(42000, 42100, 10))
    plan = plan_cluster(config(replicas=2, envoy_port=0, envoy_stats_port=0, envoy_admin_port=0,
                               first_replica_port=0, first_replica_metrics_port=0),
                        SERVE_ARGS, pick_port=lambda: next(ports), environ={}, cpus=range(2))
    cluster = plan.cluster
    taken = [cluster.envoy_port, cluster.envoy_stats_port, cluster.envoy_admin_port,
             *(p for r in plan.replicas for p in (r.port, r.metrics_port))]
    assert len(set(taken)) == len(taken) and 0 not in taken
    assert plan.replicas[1].port == plan.replicas[0].port + 1


def test_cpu_replicas_share_the_cores():
    plan = plan_cluster(config(replicas=2), SERVE_ARGS, environ={}, cpus=range(8))
    assert [r.env for r in plan.replicas] == [{"OMP_NUM_THREADS": "4"}] * 2
    assert [r.env for r in plan_cluster(config(replicas=3), SERVE_ARGS, environ={}, cpus=range(2)).replicas] == [
        {"OMP_NUM_THREADS": "1"}] * 3  # fewer cores than replicas: one each, shared
    vllm = load_config(engine="vllm", cluster={"replicas": 3})
    assert [r.env for r in plan_cluster(vllm, SERVE_ARGS, environ={}, gpus=list, cpus=[0, 2, 3, 5, 6, 7, 9]).replicas] == [
        {"VLLM_CPU_OMP_THREADS_BIND": "0,2,3"}, {"VLLM_CPU_OMP_THREADS_BIND": "5,6"},
        {"VLLM_CPU_OMP_THREADS_BIND": "7,9"}]
    # An operator's own setting wins.
    assert plan_cluster(config(), SERVE_ARGS, environ={"OMP_NUM_THREADS": "3"}, cpus=range(8)).replicas[0].env == {}
    assert plan_cluster(load_config(engine="vllm"), SERVE_ARGS, environ={"VLLM_CPU_OMP_THREADS_BIND": "nobind"},
                        gpus=list, cpus=range(8)).replicas[0].env == {}


def test_gpu_replicas_get_gpus_of_their_own():
    def gpus() -> list[str]:
        return ["0", "1", "2", "3"]

    cuda = load_config(engine="torch", device="cuda", cluster={"replicas": 4})
    assert [r.env for r in plan_cluster(cuda, SERVE_ARGS, gpus=gpus).replicas] == [
        {"CUDA_VISIBLE_DEVICES": str(i)} for i in range(4)]
    tensor_parallel = load_config(engine="vllm", cluster={"replicas": 2}, vllm={"tensor_parallel_size": 2})
    assert [r.env for r in plan_cluster(tensor_parallel, SERVE_ARGS, gpus=gpus).replicas] == [
        {"CUDA_VISIBLE_DEVICES": "0,1"}, {"CUDA_VISIBLE_DEVICES": "2,3"}]
    with pytest.raises(ClusterError, match="pass --device cuda"):
        plan_cluster(load_config(engine="torch", device="cuda:1"), SERVE_ARGS, gpus=gpus)


def test_too_few_gpus_say_how_many_replicas_fit():
    with pytest.raises(ClusterError, match=r"3 replicas x 2 GPU\(s\) each need 6 GPUs, 4 visible .*--replicas 2"):
        gpu_sets(3, 2, ["0", "1", "2", "3"])
    assert gpu_sets(2, 1, ["3", "5", "7"]) == ["3", "5"]  # CUDA_VISIBLE_DEVICES order is kept


def test_one_vllm_replica_on_cpu_keeps_vllms_own_binding():
    plan = plan_cluster(load_config(engine="vllm", cluster={"replicas": 1}), SERVE_ARGS, environ={}, gpus=list,
                        cpus=range(8))
    assert [r.env for r in plan.replicas] == [{}]


def test_vllm_data_parallel_size_is_a_vllm_option():
    assert VllmOptions(data_parallel_size=2).data_parallel_size == 2
    with pytest.raises(ValueError, match="data_parallel_size must be >= 1, got 0"):
        VllmOptions(data_parallel_size=0)


def test_the_printed_envoy_config_needs_fixed_ports():
    with pytest.raises(ClusterError, match="envoy_port = 0"):
        printable_envoy_config(config(envoy_port=0))
    with pytest.raises(ClusterError, match="first_replica_port is 0"):
        printable_envoy_config(config(first_replica_port=0))


def test_replicas_elsewhere_are_found_by_dns_on_the_servers_port():
    elsewhere = load_config(engine="torch", port=7000, cluster={"replicas_dns": "brew-replicas"})
    assert envoy_addresses(elsewhere) == [("brew-replicas", 7000)]
    with pytest.raises(ClusterError, match="replicas_dns is for an Envoy in front of replicas elsewhere"):
        plan_cluster(elsewhere, SERVE_ARGS)


def test_replicas_with_tls_are_refused(tmp_path):
    (tmp_path / "c.pem").write_text("cert")
    (tmp_path / "k.pem").write_text("key")
    with pytest.raises(ClusterError, match="Envoy reaches the replicas in plaintext"):
        plan_cluster(load_config(engine="torch", tls_cert=tmp_path / "c.pem", tls_key=tmp_path / "k.pem"),
                     SERVE_ARGS)


def test_listen_everywhere_is_reached_on_loopback():
    assert [connect_host(h) for h in ("0.0.0.0", "::", "10.0.0.5")] == ["127.0.0.1", "::1", "10.0.0.5"]
    plan = plan_cluster(load_config(engine="torch", host="0.0.0.0"), SERVE_ARGS, environ={}, cpus=range(2))
    assert plan.replicas[0].target == "127.0.0.1:50061" and "0.0.0.0" in plan.replicas[0].command


def test_healthy_hosts_are_those_without_a_failure_flag():
    clusters = {"cluster_statuses": [
        {"name": AFFINITY_CLUSTER, "host_statuses": [
            {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 1}},
             "health_status": {"eds_health_status": "HEALTHY"}},
            {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 2}},
             "health_status": {"eds_health_status": "HEALTHY", "failed_active_health_check": True}},
            {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 3}},
             "health_status": {"eds_health_status": "HEALTHY", "failed_outlier_check": True}},
        ]},
        {"name": "other", "host_statuses": [
            {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 4}},
             "health_status": {"eds_health_status": "HEALTHY"}}]},
    ]}
    assert healthy_hosts(clusters, AFFINITY_CLUSTER) == {("127.0.0.1", 1)}
    assert healthy_hosts({}, AFFINITY_CLUSTER) == set()


def test_an_envoy_binary_that_is_not_there_is_named(tmp_path):
    with pytest.raises(ClusterError, match="no such file"):
        find_envoy(tmp_path / "envoy")


def brew(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "brew.cli", *args], capture_output=True, text=True, timeout=120,
                          check=False)


def test_brew_cluster_refuses_per_replica_flags_and_bad_settings():
    refused = brew("cluster", "--engine", "torch", "--port", "6000")
    assert refused.returncode == 2 and "--port: set per replica by the cluster" in refused.stderr
    overlapping = brew("cluster", "--engine", "torch", "--first-replica-port", "50050", "--replicas", "3")
    assert overlapping.returncode == 2
    assert "cluster.first_replica_port (50050) and cluster.envoy_port (50051) share ports" in overlapping.stderr


def test_brew_cluster_prints_the_envoy_config_of_its_settings():
    printed = brew("cluster", "--engine", "torch", "--replicas", "3", "--hash-policy", "maglev",
                   "--print-envoy-config", "json")
    assert printed.returncode == 0, printed.stderr
    assert '"lb_policy": "MAGLEV"' in printed.stdout and '"port_value": 50063' in printed.stdout


def test_with_an_envoy_http_port_replica_i_serves_http_on_the_first_http_port_plus_i():
    plan = plan_cluster(config(replicas=2, envoy_http_port=8080), SERVE_ARGS, environ={}, cpus=range(2))
    assert [r.http_port for r in plan.replicas] == [8081, 8082]
    assert plan.replicas[1].command[-2:] == ("--http-port", "8082")
    assert plan.http_url == "http://127.0.0.1:8080"
    assert plan_cluster(config(replicas=2), SERVE_ARGS, environ={}, cpus=range(2)).http_url is None
    printed = printable_envoy_config(config(replicas=2, envoy_http_port=8080))
    assert "brew_http" in [item["name"] for item in printed["static_resources"]["listeners"]]
    with pytest.raises(ValueError, match="first_replica_http_port .* share ports"):
        config(replicas=2, envoy_http_port=8080, first_replica_http_port=9401)
    with pytest.raises(ClusterError, match="needs the replicas' http_port"):
        printable_envoy_config(config(replicas_dns="brew.svc", envoy_http_port=8080))


def test_brew_cluster_sets_the_http_port_per_replica():
    refused = subprocess.run([sys.executable, "-m", "brew.cli", "cluster", "--http-port", "8080"],
                             capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2 and "--http-port: set per replica by the cluster" in refused.stderr
