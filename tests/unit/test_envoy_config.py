"""The generated Envoy configuration: routes, hash policy, health checks,
outlier detection and retries as serving.envoy_config documents them, and
the real Envoy binary accepting it (`envoy --mode validate`)."""

from __future__ import annotations

import json
import subprocess

import pytest
import yaml

from serving.cluster import ClusterError, find_envoy
from serving.config import ClusterConfig, HashPolicy
from serving.envoy_config import (
    ADMIN_CLUSTER,
    AFFINITY_CLUSTER,
    BALANCED_CLUSTER,
    HTTP_AFFINITY_CLUSTER,
    HTTP_BALANCED_CLUSTER,
    duration,
    envoy_config,
    to_json,
    to_yaml,
)
from serving.http.server import KEEP_ALIVE_SECONDS

LOCAL = [("127.0.0.1", 50061), ("127.0.0.1", 50062)]
LOCAL_HTTP = [("127.0.0.1", 8081), ("127.0.0.1", 8082)]
DNS = [("brew-replicas.brew.svc.cluster.local", 50051)]


def listener(config: dict, name: str) -> dict:
    [found] = [item for item in config["static_resources"]["listeners"] if item["name"] == name]
    return found


def routes(config: dict, name: str = "brew_grpc") -> list[dict]:
    manager = listener(config, name)["filter_chains"][0]["filters"][0]["typed_config"]
    [host] = manager["route_config"]["virtual_hosts"]
    assert host["domains"] == ["*"]
    return host["routes"]


def cluster(config: dict, name: str) -> dict:
    [found] = [item for item in config["static_resources"]["clusters"] if item["name"] == name]
    return found


def endpoints(upstream: dict) -> list[tuple[str, int]]:
    return [(e["endpoint"]["address"]["socket_address"]["address"],
             e["endpoint"]["address"]["socket_address"]["port_value"])
            for group in upstream["load_assignment"]["endpoints"] for e in group["lb_endpoints"]]


def test_a_member_header_routes_by_hash_every_other_call_by_least_request():
    with_member, without = routes(envoy_config(ClusterConfig(), LOCAL))
    assert with_member["match"] == {"prefix": "/", "headers": [{"name": "x-brew-member", "present_match": True}]}
    assert with_member["route"]["cluster"] == AFFINITY_CLUSTER
    assert with_member["route"]["hash_policy"] == [{"header": {"header_name": "x-brew-member"}}]
    assert without["match"] == {"prefix": "/"}  # every path: ranking, admin, health, reflection
    assert without["route"]["cluster"] == BALANCED_CLUSTER and "hash_policy" not in without["route"]


@pytest.mark.parametrize("policy, lb", [(HashPolicy.RING_HASH, "RING_HASH"), (HashPolicy.MAGLEV, "MAGLEV")])
def test_both_replica_clusters_hold_every_replica_and_differ_only_in_balancing(policy, lb):
    config = envoy_config(ClusterConfig(hash_policy=policy), LOCAL)
    affinity, balanced = cluster(config, AFFINITY_CLUSTER), cluster(config, BALANCED_CLUSTER)
    assert (affinity["lb_policy"], balanced["lb_policy"]) == (lb, "LEAST_REQUEST")
    assert endpoints(affinity) == endpoints(balanced) == LOCAL
    assert affinity["type"] == "STATIC"
    assert {k: v for k, v in affinity.items() if k not in ("name", "lb_policy", "load_assignment")} == {
        k: v for k, v in balanced.items() if k not in ("name", "lb_policy", "load_assignment")}
    assert "consistent_hashing_lb_config" not in affinity["common_lb_config"]  # bounded load: off by default
    options = affinity["typed_extension_protocol_options"]["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
    assert options["explicit_http_config"] == {"http2_protocol_options": {}}  # gRPC needs HTTP/2 upstream


def test_health_is_checked_over_grpc_health_for_the_ranking_service():
    upstream = cluster(envoy_config(ClusterConfig(health_check_interval_seconds=0.5), LOCAL), AFFINITY_CLUSTER)
    [check] = upstream["health_checks"]
    assert check["grpc_health_check"] == {"service_name": "brew.v1.RankingService"}
    assert check["interval"] == check["no_traffic_interval"] == check["timeout"] == "0.5s"
    assert check["healthy_threshold"] == 1 and check["unhealthy_threshold"] == 2
    # With no healthy replica Envoy answers UNAVAILABLE instead of routing to replicas that said no.
    # The ring follows health at once (Envoy merges changes for 1 s by default).
    assert upstream["common_lb_config"] == {"healthy_panic_threshold": {"value": 0.0}, "update_merge_window": "0s"}


def test_outlier_detection_ejects_on_gateway_failures_only():
    detection = cluster(envoy_config(ClusterConfig(), LOCAL), AFFINITY_CLUSTER)["outlier_detection"]
    assert detection["consecutive_gateway_failure"] == 3
    assert detection["enforcing_consecutive_gateway_failure"] == 100  # Envoy's default is 0: off
    assert detection["enforcing_consecutive_5xx"] == 0 and detection["enforcing_success_rate"] == 0
    # A replica that refuses or resets connections (dead) is out after two, counted apart.
    assert detection["split_external_local_origin_errors"] is True
    assert detection["consecutive_local_origin_failure"] == 2
    assert detection["enforcing_consecutive_local_origin_failure"] == 100
    assert detection["max_ejection_percent"] == 50


def test_retries_unavailable_and_dead_connections_on_another_replica_never_overload():
    for route in routes(envoy_config(ClusterConfig(retries=2), LOCAL)):
        action = route["route"]
        policy = action["retry_policy"]
        assert set(policy["retry_on"].split(",")) == {"unavailable", "connect-failure", "refused-stream", "reset"}
        assert policy["num_retries"] == 2
        assert [p["name"] for p in policy["retry_host_predicate"]] == ["envoy.retry_host_predicates.previous_hosts"]
        # The caller's grpc-timeout is the deadline, retries included.
        assert action["timeout"] == "0s" and action["max_stream_duration"] == {"grpc_timeout_header_max": "0s"}
    assert all("retry_policy" not in route["route"] for route in routes(envoy_config(ClusterConfig(retries=0), LOCAL)))


def test_a_balance_factor_bounds_the_load_of_the_hash_cluster_only():
    config = envoy_config(ClusterConfig(hash_balance_factor=150), LOCAL)
    assert cluster(config, AFFINITY_CLUSTER)["common_lb_config"]["consistent_hashing_lb_config"] == {
        "hash_balance_factor": 150}
    assert "consistent_hashing_lb_config" not in cluster(config, BALANCED_CLUSTER)["common_lb_config"]


def test_a_dns_name_gives_strict_dns_clusters():
    upstream = cluster(envoy_config(ClusterConfig(), DNS), AFFINITY_CLUSTER)
    assert upstream["type"] == "STRICT_DNS" and endpoints(upstream) == DNS
    assert upstream["dns_lookup_family"] == "V4_ONLY"


def test_admin_listens_on_loopback_and_only_stats_and_ready_are_exposed():
    config = envoy_config(ClusterConfig(envoy_host="0.0.0.0", envoy_admin_port=9001, envoy_stats_port=9002), LOCAL)
    assert config["admin"]["address"]["socket_address"] == {"address": "127.0.0.1", "port_value": 9001}
    stats = listener(config, "envoy_stats")
    assert stats["address"]["socket_address"] == {"address": "0.0.0.0", "port_value": 9002}
    assert [(r["match"], r["route"]["cluster"]) for r in routes(config, "envoy_stats")] == [
        ({"path": "/stats/prometheus"}, ADMIN_CLUSTER), ({"path": "/ready"}, ADMIN_CLUSTER)]
    assert endpoints(cluster(config, ADMIN_CLUSTER)) == [("127.0.0.1", 9001)]
    assert listener(config, "brew_grpc")["address"]["socket_address"] == {"address": "0.0.0.0", "port_value": 50051}


def test_yaml_and_json_say_the_same():
    config = envoy_config(ClusterConfig(), LOCAL)
    assert yaml.safe_load(to_yaml(config)) == json.loads(to_json(config)) == config


def test_durations_never_use_an_exponent():
    assert [duration(s) for s in (1.0, 0.25, 10.0, 1e-5, 0.0)] == ["1s", "0.25s", "10s", "0.00001s", "0s"]


def test_no_replicas_is_an_error():
    with pytest.raises(ValueError, match="at least one replica"):
        envoy_config(ClusterConfig(), [])


@pytest.mark.parametrize("replicas", [LOCAL, DNS], ids=["static", "dns"])
@pytest.mark.parametrize("form", [to_yaml, to_json], ids=["yaml", "json"])
def test_envoy_accepts_the_configuration(tmp_path, replicas, form):
    try:
        envoy = find_envoy()
    except ClusterError as missing:
        pytest.skip(str(missing))
    path = tmp_path / f"envoy.{'yaml' if form is to_yaml else 'json'}"
    settings = ClusterConfig(hash_policy=HashPolicy.MAGLEV, hash_balance_factor=125, envoy_http_port=8080)
    path.write_text(form(envoy_config(settings, replicas, [(host, port + 1) for host, port in replicas])),
                    encoding="utf-8")
    checked = subprocess.run([str(envoy), "--mode", "validate", "-c", str(path), "--disable-hot-restart"],
                             capture_output=True, text=True, timeout=60, check=False)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "OK" in checked.stdout + checked.stderr


def test_without_an_http_port_envoy_serves_grpc_only():
    config = envoy_config(ClusterConfig(), LOCAL)
    assert [item["name"] for item in config["static_resources"]["listeners"]] == ["brew_grpc", "envoy_stats"]
    assert {c["name"] for c in config["static_resources"]["clusters"]} == {AFFINITY_CLUSTER, BALANCED_CLUSTER,
                                                                           ADMIN_CLUSTER}


def test_the_http_api_gets_the_same_affinity_health_on_http_and_retries_of_503():
    settings = ClusterConfig(envoy_http_port=8080, retries=2)
    config = envoy_config(settings, LOCAL, LOCAL_HTTP)
    assert listener(config, "brew_http")["address"]["socket_address"]["port_value"] == 8080
    with_member, without = routes(config, "brew_http")
    assert with_member["route"]["cluster"] == HTTP_AFFINITY_CLUSTER
    assert with_member["route"]["hash_policy"] == [{"header": {"header_name": "x-brew-member"}}]
    assert without["route"]["cluster"] == HTTP_BALANCED_CLUSTER and "hash_policy" not in without["route"]
    for route in (with_member, without):
        assert route["route"]["timeout"] == "0s" and "max_stream_duration" not in route["route"]
        retry = route["route"]["retry_policy"]
        assert retry["retry_on"] == "connect-failure,refused-stream,reset,retriable-status-codes"
        assert retry["retriable_status_codes"] == [503] and retry["num_retries"] == 2
    for name in (HTTP_AFFINITY_CLUSTER, HTTP_BALANCED_CLUSTER):
        upstream = cluster(config, name)
        assert endpoints(upstream) == LOCAL_HTTP
        [check] = upstream["health_checks"]
        assert check["http_health_check"] == {"path": "/health"} and "grpc_health_check" not in check
        options = upstream["typed_extension_protocol_options"]["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
        assert options["explicit_http_config"] == {"http_protocol_options": {}}  # HTTP/1.1: uvicorn
        idle = float(options["common_http_protocol_options"]["idle_timeout"].rstrip("s"))
        assert idle < KEEP_ALIVE_SECONDS  # Envoy lets a connection go before the replica does
        assert upstream["outlier_detection"] == cluster(config, AFFINITY_CLUSTER)["outlier_detection"]
    assert cluster(config, HTTP_AFFINITY_CLUSTER)["lb_policy"] == cluster(config, AFFINITY_CLUSTER)["lb_policy"]
    with pytest.raises(ValueError, match="HTTP addresses"):
        envoy_config(settings, LOCAL)
