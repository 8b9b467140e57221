"""The server's configuration: one typed, frozen object, each setting declared once.

Built from an optional TOML file, then CLI flags on top (`load_config`).
Every setting is declared in its field (brew.settings.setting: type, default,
bound, help); validation, TOML loading, `brew serve`'s flags and its --help
text all come from those declarations. A bad setting fails at start, with a
message that says how to fix it, not under load. The TOML file mirrors the
classes below (examples/server.toml has every section):

    engine = "vllm"            # the engine settings (brew.engines.engine_settings), top level
    model = "brew/demo/brew-demo"
    prompts = "prompts"
    multi_item = "auto"        # off | on | auto
    [server]     host, port, metrics_port, slo_ms, grace_seconds, ...   (ServerConfig's own fields)
    [batching]   max_batch_candidates, collect_window_ms, ...           (BatchingConfig)
    [limits]     max_candidates_per_request, ...                        (Limits)
    [supervisor] probe_interval_seconds, max_failures, ...              (SupervisorConfig)
    [vllm]       kv_cache_gib, max_model_len, ...                       (brew.engines.options.VllmOptions)
    [packing]    min_candidates, max_candidate_share, ...               (brew.engines.multi_item_rule.PackingRule)
    [torch]      max_forward_candidates, max_batch_tokens, ...          (brew.engines.options.TorchOptions)
    [cluster]    replicas, envoy_port, hash_policy, ...                 (`brew cluster`: ClusterConfig)
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from brew import defaults
from brew.engines.engine_settings import EngineSettings
from brew.settings import (
    Settings, SettingsError, UnknownKeyError, fields_of, from_table, merge, section, sections_of, setting,
)

PORT = {"ge": 0, "le": 65535, "hint": "(0 picks a free one)"}


# A setting is invalid; the message says which and how to fix it.
ConfigError = SettingsError


@dataclass(frozen=True)
class AdmissionTarget(StrEnum):
    """What an admitted request must finish by (serving.admission)."""

    SLO = "slo"  # min(its deadline, arrival + the SLO): the answers admitted come in time
    DEADLINE = "deadline"  # its deadline alone: late answers are admitted while the deadline allows


@dataclass(frozen=True)
class BatchingConfig(Settings):
    """How the dispatcher forms engine batches from concurrent callers, and what it admits."""

    max_batch_candidates: int = setting(256, ge=1, help="engine batch limit, in candidates")
    collect_window_ms: float = setting(4.0, ge=0, help="how long a batch waits for more callers")
    max_queue_candidates: int = setting(4096, ge=1, help="the queue's hard cap in candidates; then "
                                                         "RESOURCE_EXHAUSTED")
    max_inflight_batches: int = setting(2, ge=1, help="engine batches running at once")
    target_queue_delay_ms: float = setting(100.0, gt=0, help="the queue delay the adaptive queue limit aims at "
                                                             "(serving.admission; under admission_target slo "
                                                             "at most half the SLO)")
    admission_target: AdmissionTarget = setting(AdmissionTarget.SLO, help="admit what would finish within "
                                                "min(deadline, SLO) (slo) or within the deadline alone (deadline)")

    def cross_checks(self) -> Iterator[str]:
        if self.max_queue_candidates < self.max_batch_candidates:
            yield (f"max_queue_candidates ({self.max_queue_candidates}) must be at least "
                   f"max_batch_candidates ({self.max_batch_candidates})")


@dataclass(frozen=True)
class Limits(Settings):
    """Per-request limits; a request over one gets INVALID_ARGUMENT naming it."""

    max_candidates_per_request: int = setting(1024, ge=1, help="candidates in one request, all tasks together")
    max_tasks_per_request: int = setting(8, ge=1, help="tasks in one request")
    max_history_items: int = setting(1000, ge=1, help="history items of the member in one request")


class HashPolicy(StrEnum):
    """Envoy's consistent-hash load balancers (either keeps a member on one replica)."""

    RING_HASH = "ring_hash"
    MAGLEV = "maglev"


CLUSTER_PORTS = ("envoy_port", "envoy_stats_port", "envoy_admin_port", "first_replica_port",
                 "first_replica_metrics_port")
# Taken only with envoy_http_port set (the HTTP/JSON API behind Envoy too).
CLUSTER_HTTP_PORTS = ("envoy_http_port", "first_replica_http_port")


@dataclass(frozen=True)
class ClusterConfig(Settings):
    """`brew cluster`: N replicas behind one Envoy port (serving.cluster, serving.envoy_config).

    Replica i serves gRPC on first_replica_port + i and /metrics on
    first_replica_metrics_port + i. A port of 0 is picked free when the
    cluster starts. `replicas_dns` names one DNS name that resolves to every
    replica (a Kubernetes headless service): Envoy then finds the replicas
    there, on the server's `port`, instead of on this host.
    """

    replicas: int = setting(2, ge=1, help="number of brew serve replicas")
    envoy_host: str = setting("127.0.0.1", help="Envoy's listen address")
    envoy_port: int = setting(50051, help="the one gRPC port callers use (0: free)")
    envoy_stats_port: int = setting(9902, help="Envoy's /stats/prometheus and /ready (0: free)")
    envoy_admin_port: int = setting(9901, help="Envoy's admin interface, on 127.0.0.1 only (0: free)")
    first_replica_port: int = setting(50061, help="replica i serves gRPC on this port + i (0: free ports)")
    first_replica_metrics_port: int = setting(9401, help="replica i serves /metrics on this port + i "
                                                          "(0: free ports)")
    envoy_http_port: int | None = setting(None, help="the one HTTP/JSON port callers use, in front of the "
                                                     "replicas' --http-port (0: free; not set: gRPC only)")
    first_replica_http_port: int = setting(8081, help="with envoy_http_port: replica i serves HTTP on this port "
                                                      "+ i (0: free ports)")
    hash_policy: HashPolicy = setting(HashPolicy.RING_HASH, help="Envoy's consistent hash on x-brew-member")
    hash_balance_factor: int = setting(0, ge=0, help="bounded load: a replica over this % of the mean active "
                                                     "requests passes calls on along the ring (e.g. 150; 0: off)")
    health_check_interval_seconds: float = setting(1.0, gt=0, help="Envoy's health checks of the replicas")
    retries: int = setting(1, ge=0, hint="(0: Envoy never retries)",
                           help="Envoy's retries of UNAVAILABLE and dead connections, on another replica")
    replicas_dns: str | None = setting(None, help="find the replicas at this DNS name on the server's port "
                                                  "(a Kubernetes headless service) instead of on this host")
    rollout_file: Path | None = setting(None, help="on SIGHUP the replicas restart one at a time; this TOML "
                                                   "file's model and prompts (each optional) are the new ones "
                                                   "(serving.cluster_run)")

    def cross_checks(self) -> Iterator[str]:
        if self.replicas < 1:
            return  # named by its bound; the port ranges below need a replica
        used: dict[str, range] = {}  # setting -> the ports it takes (0: picked free at start)
        for name in self.port_settings():
            first = getattr(self, name)
            ports = range(first, first + (self.replicas if name.startswith("first_") else 1))
            if not 0 <= ports[0] <= ports[-1] <= 65535:
                yield f"{name}={first} does not give every replica a TCP port (0-65535); 0 picks free ones"
            elif first:
                for other, taken in used.items():
                    if set(ports) & set(taken):
                        yield f"{name} ({first}) and cluster.{other} ({taken[0]}) share ports; move one"
                used[name] = ports
        if self.hash_balance_factor and self.hash_balance_factor < 100:
            yield (f"hash_balance_factor must be 0 (off) or at least 100 (% of the mean load), "
                   f"got {self.hash_balance_factor}")
        if self.replicas_dns is not None and not self.replicas_dns.strip():
            yield "replicas_dns is empty; give the replicas' DNS name or leave it out"

    def port_settings(self) -> tuple[str, ...]:
        """The port settings the cluster takes: the HTTP ones only with envoy_http_port."""
        return CLUSTER_PORTS + (CLUSTER_HTTP_PORTS if self.envoy_http_port is not None else ())


@dataclass(frozen=True)
class SupervisorConfig(Settings):
    """How the engine watchdog probes and restarts the engine (serving.supervisor)."""

    probe_interval_seconds: float = setting(1.0, gt=0, help="engine health check, idle or busy")
    probe_timeout_seconds: float = setting(30.0, gt=0, help="a check that takes longer fails the engine (hung)")
    initial_backoff_seconds: float = setting(1.0, gt=0, help="wait before the first restart; doubled per failure")
    max_backoff_seconds: float = setting(30.0, gt=0, help="the longest wait between restarts")
    max_failures: int = setting(5, ge=1, help="this many engine failures within failure_window_seconds: "
                                              "exit with status 3 (the process manager takes over)")
    failure_window_seconds: float = setting(600.0, gt=0, help="the window max_failures counts in")

    def cross_checks(self) -> Iterator[str]:
        if self.max_backoff_seconds < self.initial_backoff_seconds:
            yield (f"max_backoff_seconds ({self.max_backoff_seconds}) must be at least "
                   f"initial_backoff_seconds ({self.initial_backoff_seconds})")


@dataclass(frozen=True)
class ServerConfig(EngineSettings):
    """Everything `brew serve` runs with: the engine settings (top level of the
    TOML file), the server's own (`[server]`) and the sections."""

    prompts: Path = setting(defaults.PROMPTS_DIR, top_level=True, help="prompts directory with the task templates")
    host: str = setting("127.0.0.1", help="gRPC listen address (0.0.0.0 for all interfaces)")
    port: int = setting(50051, **PORT, help="gRPC port")
    metrics_host: str = setting("127.0.0.1", help="Prometheus /metrics listen address")
    metrics_port: int = setting(9400, **PORT, help="Prometheus /metrics port")
    http_port: int | None = setting(None, **PORT, help="HTTP/JSON API port on --host, beside gRPC: the same service "
                                                       "(serving/http; OpenAPI at /docs; not set: no HTTP)")
    rerank_task: str = setting("rerank", help="the task POST /v1/rerank scores with when the request's model "
                                              "field names none")
    reuse_port: bool = setting(False, help="share the gRPC port with other processes (SO_REUSEPORT): only for "
                                           "a deliberate set of identical servers; off, a taken port is an error")
    slo_ms: float = setting(500.0, gt=0, help="latency SLO; the latency histograms get a bucket here")
    grace_seconds: float = setting(10.0, gt=0, help="drain time for in-flight calls on SIGTERM")
    max_message_bytes: int = setting(4 * 1024 * 1024, ge=1024, help="largest request accepted")
    keepalive_time_seconds: float = setting(60.0, gt=0, help="gRPC keepalive ping interval")
    keepalive_timeout_seconds: float = setting(20.0, gt=0, help="gRPC keepalive ping timeout")
    stats_interval_seconds: float = setting(10.0, gt=0, help="the periodic throughput log line")
    context_cache_entries: int = setting(4096, ge=0, hint="(0 turns the cache off)",
                                         help="rendered member contexts kept for repeat members")
    default_deadline_seconds: float = setting(5.0, gt=0, help="the deadline of a call that comes without one")
    tls_cert: Path | None = setting(None, help="PEM certificate chain: serve TLS (with --tls-key)")
    tls_key: Path | None = setting(None, help="PEM private key for --tls-cert")
    # A secret stays off the command line: `brew serve --auth-token-env VAR` reads it from the environment.
    auth_token: str | None = setting(None, flag=False, help="require 'authorization: Bearer <token>'")
    replica_name: str | None = setting(None, help="this replica's name in every response's x-brew-replica "
                                                  "header (not set: hostname:port)")
    batching: BatchingConfig = section(BatchingConfig, help="how engine batches form from concurrent callers")
    limits: Limits = section(Limits, help="per-request limits (INVALID_ARGUMENT over one)")
    supervisor: SupervisorConfig = section(SupervisorConfig, help="the engine watchdog and its restarts")
    cluster: ClusterConfig = section(ClusterConfig, help="brew cluster: replicas behind one Envoy")

    @property
    def slo_seconds(self) -> float:
        return self.slo_ms / 1000.0

    def cross_checks(self) -> Iterator[str]:
        yield from super().cross_checks()
        if not self.prompts.is_dir():
            yield f"prompts {self.prompts} is not a directory; pass --prompts DIR"
        if self.port and self.port == self.metrics_port and self.host == self.metrics_host:
            yield f"port and metrics_port are both {self.port}; give metrics its own port"
        if self.http_port and self.http_port == self.port:
            yield f"port and http_port are both {self.port}; give HTTP its own port"
        if (self.tls_cert is None) != (self.tls_key is None):
            yield "TLS needs both tls_cert and tls_key (or neither)"
        for name in ("tls_cert", "tls_key"):
            path = getattr(self, name)
            if path is not None and not path.is_file():
                yield f"{name} {path} does not exist"
        if self.auth_token is not None and not self.auth_token:
            yield "auth_token is empty; give a token or leave it out"
        if self.replica_name is not None and not _is_header_value(self.replica_name):
            yield f"replica_name {self.replica_name!r} must be non-empty printable ASCII (it is a gRPC header)"
        if self.limits.max_candidates_per_request > self.batching.max_queue_candidates:
            yield (f"limits.max_candidates_per_request ({self.limits.max_candidates_per_request}) exceeds "
                   f"batching.max_queue_candidates ({self.batching.max_queue_candidates}): such a request "
                   "could never be admitted")


def _is_header_value(text: str) -> bool:
    return bool(text) and text.isascii() and text.isprintable() and text == text.strip()


def toml_layout(raw: Mapping[str, Any]) -> dict[str, Any]:
    """A TOML file's tables as ServerConfig's fields: the top-level keys and
    `[server]` are fields of ServerConfig itself, the other tables its sections.
    A key in the wrong place is refused like an unknown one."""
    own = fields_of(ServerConfig)
    top = {f.name for f in own if f.spec.top_level}
    server = {f.name for f in own if not f.spec.top_level}
    sections = set(sections_of(ServerConfig))
    misplaced = sorted(set(raw) - top - sections - {"server"})
    if misplaced:
        raise UnknownKeyError([f"unknown key(s) {misplaced}; known: {sorted(top | sections | {'server'})}"],
                              "config file")
    table = dict(raw.get("server", {}))
    wrong = sorted(set(table) - server)
    if wrong:
        raise UnknownKeyError([f"unknown key(s) {wrong}; known: {sorted(server)}"], "config file [server]")
    return {**{k: v for k, v in raw.items() if k != "server"}, **table}


def read_toml(toml_file: Path) -> dict[str, Any]:
    """The file's settings as a table of ServerConfig (ConfigError if unreadable)."""
    try:
        raw = tomllib.loads(Path(toml_file).read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise ConfigError([f"cannot read config file {toml_file}: {error}"], "invalid server configuration")
    return toml_layout(raw)


def load_config(toml_file: Path | None = None, **overrides: Any) -> ServerConfig:
    """TOML file (optional) first, then the overrides that are not None.

    Section overrides (`batching={...}`) are merged key by key over the
    file's tables, so one flag does not reset the rest of a section.
    """
    table = read_toml(toml_file) if toml_file is not None else {}
    table = merge(table, _given(overrides))
    try:
        return from_table(ServerConfig, table)
    except UnknownKeyError as error:
        raise
    except SettingsError as error:
        raise ConfigError(error.problems, "invalid server configuration") from None


def _given(settings: Mapping[str, Any]) -> dict[str, Any]:
    """The settings actually given (a flag left out is None), sections included."""
    given: dict[str, Any] = {}
    for key, value in settings.items():
        if isinstance(value, Mapping):
            value = _given(value)
        if value is not None:
            given[key] = value
    return given
