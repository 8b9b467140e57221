"""The Envoy in front of Brew's replicas, generated from the typed configuration.

`envoy_config(config, replicas)` is the whole Envoy bootstrap (a plain dict,
written out as YAML or JSON) for `config.cluster` and the replicas'
addresses: `brew cluster` runs Envoy with it, `brew cluster
--print-envoy-config` prints it, and deploy/kubernetes/envoy.yaml is its
output for the Kubernetes settings. Pure: no I/O, unit-tested.

Routing. One listener takes every gRPC path (ranking, admin, health,
reflection). A request with `x-brew-member` goes to a consistent-hash
cluster (ring hash or Maglev) hashed on that header, so a member keeps
hitting the replica whose prefix cache holds its history. Without the
header a hash load balancer picks a random host (Envoy hashes a random
number when the request gives no hash key), so such requests take a second
route to a least-request cluster over the same replicas instead.

Health. Envoy checks every replica over grpc.health.v1 for
`brew.v1.RankingService`: a loading, draining or failed replica answers
NOT_SERVING and gets no new calls (an answer other than SERVING marks it
unhealthy at once; network failures count up to `unhealthy_threshold`).
Panic routing is off: with no healthy replica Envoy answers UNAVAILABLE
(from its own 503) rather than sending calls to replicas that said no.
`no_traffic_interval` is the normal interval: Envoy's default of 60 s would
keep a replica that finished loading out of an idle cluster for a minute.
`update_merge_window` is 0: by default Envoy merges health changes for up
to a second before it rebuilds the hash ring, while its admin already shows
the new state; a few replicas make rebuilding at once cheap, and a member
then moves once, not back and forth, when a replica comes or goes.

Balance. Affinity balances members, not requests: a few busy members can
load one replica more than the others. `cluster.hash_balance_factor` (off
by default) turns on Envoy's consistent hashing with bounded loads: a
replica with more than that percentage of the mean active requests passes
new calls on to the next replica of the ring, trading some cache hits for
balance.

Ejection. Envoy maps the grpc-status of a trailers-only answer to an HTTP
code for outlier detection (UNAVAILABLE -> 503, DEADLINE_EXCEEDED -> 504,
RESOURCE_EXHAUSTED -> 429, INTERNAL -> 500). `consecutive_gateway_failure`
(502/503/504) ejects a replica that keeps answering UNAVAILABLE; there is
no setting for 503 alone, so DEADLINE_EXCEEDED counts too. Failures of
Envoy's own making (connection refused, reset, timed out: a replica that
died) are counted apart (`split_external_local_origin_errors`) and eject
after CONSECUTIVE_LOCAL_FAILURES in a row: a dead replica is out after
two calls, each retried on another replica, well before its health checks
fail twice. Plain 5xx ejection is off:
INTERNAL is a bug that follows the request, not the replica; 429 (the
replica's full queue) never ejects. At most half the replicas are ejected.

Retries. Envoy retries, on another replica (`previous_hosts`):
- `unavailable`: the replica refused before doing any work (loading,
  draining, engine down);
- `connect-failure`, `refused-stream`: the call never reached a replica;
- `reset`: the replica's connection broke before it answered, e.g. it was
  killed. Work may have started there, but scoring is read-only and
  idempotent, so running it again elsewhere only costs engine time.
Nothing else: RESOURCE_EXHAUSTED (overload: retrying would add load),
DEADLINE_EXCEEDED and INVALID_ARGUMENT are answers. At most
`cluster.retries` retries per call, and Envoy's retry budget keeps retries
under a quarter of the active requests, so a dying replica cannot start a
retry storm. The caller's grpc-timeout bounds the whole call, retries
included (no route timeout of Envoy's own).

HTTP. With `cluster.envoy_http_port` set, a second listener puts the
replicas' HTTP/JSON API (serving/http, their --http-port) behind Envoy the
same way: the same member affinity on `x-brew-member` (least request
without it), the same ejection and retry budget, HTTP/1.1 to the replicas,
health checked on `GET /health` (200 only while SERVING). Retried on another
replica: connection failures, resets and a 503 (the replica refused before
any work: loading, draining, engine down), as `unavailable` is for gRPC.
Every answer keeps the replica's own `x-brew-replica` header.

Envoy's own metrics (`/stats/prometheus`) and readiness (`/ready`) are
exposed on a separate stats listener, proxied to the admin interface,
which itself listens on 127.0.0.1 only (it can stop Envoy).
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Sequence
from typing import Any

import yaml

from serving.config import ClusterConfig, HashPolicy
from serving.replica import MEMBER_HEADER

RANKING_SERVICE = "brew.v1.RankingService"
AFFINITY_CLUSTER = "brew_affinity"
BALANCED_CLUSTER = "brew_balanced"
HTTP_AFFINITY_CLUSTER = "brew_http_affinity"
HTTP_BALANCED_CLUSTER = "brew_http_balanced"
HEALTH_PATH = "/health"
ADMIN_CLUSTER = "envoy_admin"
STATS_PATHS = ("/stats/prometheus", "/ready")
UNHEALTHY_THRESHOLD = 2  # network failures in a row; NOT_SERVING counts at once
CONSECUTIVE_GATEWAY_FAILURES = 3
CONSECUTIVE_LOCAL_FAILURES = 2  # connection refused or reset: the replica is gone
BASE_EJECTION_SECONDS = 10.0
MAX_EJECTION_PERCENT = 50
RETRY_ON = "unavailable,connect-failure,refused-stream,reset"
HTTP_RETRY_ON = "connect-failure,refused-stream,reset,retriable-status-codes"
HTTP_RETRIABLE_STATUS_CODES = (503,)
# Envoy closes an idle HTTP/1.1 connection to a replica before the replica
# does (serving.http.server.KEEP_ALIVE_SECONDS, 30), so it never sends a
# request down a connection the replica is closing.
HTTP_UPSTREAM_IDLE_SECONDS = 20.0
RETRY_BUDGET_PERCENT = 25.0
# How many times Envoy may pick a host again for a retry until it finds one the
# call has not tried. On the member-affinity cluster the ring hash picks the
# next ring entry at each try (`(index + attempt) % ring size` in Envoy's
# RingHashLoadBalancer), and with two replicas each entry is the dead one
# about half the time: 5 tries sent 1 retry in 32 back to the dead replica
# (a failed call, seen in the replica-kill test); 32 tries, 1 in 4 billion.
HOST_SELECTION_ATTEMPTS = 32
MIN_RETRY_CONCURRENCY = 8
DNS_REFRESH_SECONDS = 5.0
MAX_DOWNSTREAM_CONNECTIONS = 10_000

Address = tuple[str, int]
Config = dict[str, Any]

_LB_POLICY = {HashPolicy.RING_HASH: "RING_HASH", HashPolicy.MAGLEV: "MAGLEV"}
_TYPE = "@type"
_HCM = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
_ROUTER = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
_HTTP_OPTIONS = "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
_PREVIOUS_HOSTS = "type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"
_CONNECTIONS = "type.googleapis.com/envoy.extensions.resource_monitors.downstream_connections.v3.DownstreamConnectionsConfig"


def duration(seconds: float) -> str:
    """A protobuf Duration as Envoy's YAML spells it: '1s', '0.25s' (never an exponent)."""
    return f"{seconds:.9f}".rstrip("0").rstrip(".") + "s"


def _socket(host: str, port: int) -> Config:
    return {"socket_address": {"address": host, "port_value": port}}


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _listener(name: str, host: str, port: int, routes: list[Config]) -> Config:
    """A plaintext HTTP listener (HTTP/2 and HTTP/1.1 by the client's preface) with these routes."""
    manager = {
        _TYPE: _HCM,
        "stat_prefix": name,
        "codec_type": "AUTO",
        "route_config": {"name": name, "virtual_hosts": [{"name": name, "domains": ["*"], "routes": routes}]},
        "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {_TYPE: _ROUTER}}],
    }
    return {
        "name": name,
        "address": _socket(host, port),
        "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager",
                                        "typed_config": manager}]}],
    }


def _route(match: Config, cluster: ClusterConfig, target: str, hash_on_member: bool, http: bool = False) -> Config:
    action: Config = {
        "cluster": target,
        # No route timeout: the caller's deadline (grpc-timeout, x-request-timeout) is the one.
        "timeout": "0s",
    }
    if not http:
        action["max_stream_duration"] = {"grpc_timeout_header_max": "0s"}
    if hash_on_member:
        action["hash_policy"] = [{"header": {"header_name": MEMBER_HEADER}}]
    if cluster.retries:
        action["retry_policy"] = {
            "retry_on": HTTP_RETRY_ON if http else RETRY_ON,
            "num_retries": cluster.retries,
            "retry_host_predicate": [{"name": "envoy.retry_host_predicates.previous_hosts",
                                      "typed_config": {_TYPE: _PREVIOUS_HOSTS}}],
            "host_selection_retry_max_attempts": HOST_SELECTION_ATTEMPTS,
        }
        if http:
            action["retry_policy"]["retriable_status_codes"] = list(HTTP_RETRIABLE_STATUS_CODES)
    return {"match": match, "route": action}


def grpc_routes(cluster: ClusterConfig) -> list[Config]:
    """With x-brew-member: the hash cluster; without: least request. Every path."""
    return _member_routes(cluster, AFFINITY_CLUSTER, BALANCED_CLUSTER, http=False)


def http_routes(cluster: ClusterConfig) -> list[Config]:
    """The same two routes for the HTTP/JSON API, to its own pair of clusters."""
    return _member_routes(cluster, HTTP_AFFINITY_CLUSTER, HTTP_BALANCED_CLUSTER, http=True)


def _member_routes(cluster: ClusterConfig, affinity: str, balanced: str, http: bool) -> list[Config]:
    with_member = {"prefix": "/", "headers": [{"name": MEMBER_HEADER, "present_match": True}]}
    return [
        _route(with_member, cluster, affinity, hash_on_member=True, http=http),
        _route({"prefix": "/"}, cluster, balanced, hash_on_member=False, http=http),
    ]


def _replica_cluster(name: str, lb_policy: str, cluster: ClusterConfig, replicas: Sequence[Address],
                     http: bool = False) -> Config:
    interval = duration(cluster.health_check_interval_seconds)
    by_dns = not all(_is_ip(host) for host, _ in replicas)
    balancing: Config = {"healthy_panic_threshold": {"value": 0.0}, "update_merge_window": "0s"}
    if cluster.hash_balance_factor and lb_policy != "LEAST_REQUEST":
        balancing["consistent_hashing_lb_config"] = {"hash_balance_factor": cluster.hash_balance_factor}
    upstream: Config = {
        "name": name,
        "type": "STRICT_DNS" if by_dns else "STATIC",
        "lb_policy": lb_policy,
        "connect_timeout": "1s",
        "typed_extension_protocol_options": {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
            _TYPE: _HTTP_OPTIONS,
            "explicit_http_config": {"http_protocol_options": {}} if http else {"http2_protocol_options": {}},
            **({"common_http_protocol_options": {"idle_timeout": duration(HTTP_UPSTREAM_IDLE_SECONDS)}}
               if http else {})}},
        "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [
            {"endpoint": {"address": _socket(host, port)}} for host, port in replicas]}]},
        "health_checks": [{
            "timeout": interval,
            "interval": interval,
            "no_traffic_interval": interval,
            "unhealthy_threshold": UNHEALTHY_THRESHOLD,
            "healthy_threshold": 1,
            **({"http_health_check": {"path": HEALTH_PATH}} if http
               else {"grpc_health_check": {"service_name": RANKING_SERVICE}}),
        }],
        "outlier_detection": {
            "consecutive_gateway_failure": CONSECUTIVE_GATEWAY_FAILURES,
            "enforcing_consecutive_gateway_failure": 100,
            "split_external_local_origin_errors": True,
            "consecutive_local_origin_failure": CONSECUTIVE_LOCAL_FAILURES,
            "enforcing_consecutive_local_origin_failure": 100,
            "enforcing_consecutive_5xx": 0,
            "enforcing_success_rate": 0,
            "base_ejection_time": duration(BASE_EJECTION_SECONDS),
            "max_ejection_percent": MAX_EJECTION_PERCENT,
        },
        "common_lb_config": balancing,
        "circuit_breakers": {"thresholds": [{"retry_budget": {
            "budget_percent": {"value": RETRY_BUDGET_PERCENT}, "min_retry_concurrency": MIN_RETRY_CONCURRENCY}}]},
    }
    if by_dns:
        upstream["dns_lookup_family"] = "V4_ONLY"
        upstream["dns_refresh_rate"] = duration(DNS_REFRESH_SECONDS)
    return upstream


def envoy_config(cluster: ClusterConfig, replicas: Sequence[Address],
                 http_replicas: Sequence[Address] | None = None) -> Config:
    """The Envoy bootstrap for `cluster` in front of `replicas` ((host, gRPC port) each),
    and with `cluster.envoy_http_port`, of `http_replicas` ((host, HTTP port) each).

    IP addresses give STATIC clusters; a name (a Kubernetes headless service)
    gives STRICT_DNS clusters, with every address the name resolves to a replica.
    """
    if not replicas:
        raise ValueError("Envoy needs at least one replica address")
    admin_host = "127.0.0.1"
    stats_routes = [{"match": {"path": path}, "route": {"cluster": ADMIN_CLUSTER}} for path in STATS_PATHS]
    http_listeners: list[Config] = []
    http_clusters: list[Config] = []
    if cluster.envoy_http_port is not None:
        if not http_replicas:
            raise ValueError("envoy_http_port needs the replicas' HTTP addresses")
        http_listeners = [_listener("brew_http", cluster.envoy_host, cluster.envoy_http_port, http_routes(cluster))]
        http_clusters = [
            _replica_cluster(HTTP_AFFINITY_CLUSTER, _LB_POLICY[cluster.hash_policy], cluster, http_replicas,
                             http=True),
            _replica_cluster(HTTP_BALANCED_CLUSTER, "LEAST_REQUEST", cluster, http_replicas, http=True),
        ]
    return {
        "admin": {"address": _socket(admin_host, cluster.envoy_admin_port)},
        "static_resources": {
            "listeners": [
                _listener("brew_grpc", cluster.envoy_host, cluster.envoy_port, grpc_routes(cluster)),
                *http_listeners,
                _listener("envoy_stats", cluster.envoy_host, cluster.envoy_stats_port, stats_routes),
            ],
            "clusters": [
                _replica_cluster(AFFINITY_CLUSTER, _LB_POLICY[cluster.hash_policy], cluster, replicas),
                _replica_cluster(BALANCED_CLUSTER, "LEAST_REQUEST", cluster, replicas),
                *http_clusters,
                {"name": ADMIN_CLUSTER, "type": "STATIC", "connect_timeout": "1s",
                 "load_assignment": {"cluster_name": ADMIN_CLUSTER, "endpoints": [{"lb_endpoints": [
                     {"endpoint": {"address": _socket(admin_host, cluster.envoy_admin_port)}}]}]}},
            ],
        },
        "overload_manager": {"resource_monitors": [{
            "name": "envoy.resource_monitors.global_downstream_max_connections",
            "typed_config": {_TYPE: _CONNECTIONS, "max_active_downstream_connections": MAX_DOWNSTREAM_CONNECTIONS},
        }]},
    }


YAML_HEADER = ("# Envoy in front of Brew's replicas, generated by `brew cluster --print-envoy-config`\n"
               "# (serving/envoy_config.py) from the typed configuration: regenerate it, do not edit it.\n")


def to_yaml(config: Config) -> str:
    return YAML_HEADER + yaml.safe_dump(config, sort_keys=False, default_flow_style=False)


def to_json(config: Config) -> str:
    return json.dumps(config, indent=2) + "\n"
