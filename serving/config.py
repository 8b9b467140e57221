"""The server's configuration: one typed, frozen object.

Built from an optional TOML file, then CLI flags on top. Every setting is
validated when the object is built, with a message that says how to fix it,
so a bad setting fails at start, not under load. A TOML file mirrors the
sections below:

    engine = "vllm"            # vllm | torch | naive (brew.engines.ENGINES)
    model = "brew/demo/brew-demo"
    multi_item = false         # exact multi-item scoring: candidates packed behind their member's context
    [server]   host, port, metrics_port, grace_seconds, max_message_bytes, ...
    [batching] max_batch_candidates, collect_window_ms, max_queue_candidates, target_queue_delay_ms, ...
    [limits]   max_candidates_per_request, max_tasks_per_request, max_history_items
    [vllm]     kv_cache_gib, max_model_len, gpu_memory_utilization, ...  (brew.engines.options.VllmOptions)
    [torch]    max_forward_candidates, max_batch_tokens, attention, ... (brew.engines.options.TorchOptions)
    [supervisor] probe_interval_seconds, initial_backoff_seconds, max_failures, ...  (serving.supervisor)
    [cluster]  replicas, envoy_port, hash_policy, ...  (`brew cluster`: serving.cluster, serving.envoy_config)
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from enum import StrEnum
from pathlib import Path
from typing import Any

from brew import defaults
from brew.engines import ENGINES, EngineKind
from brew.engines.options import TorchOptions, VllmOptions, option_names


class ConfigError(ValueError):
    """A setting is invalid; the message says which and how to fix it."""


@dataclass(frozen=True)
class BatchingConfig:
    """How the dispatcher forms engine batches from concurrent callers."""

    max_batch_candidates: int = 256
    collect_window_seconds: float = 0.004
    max_queue_candidates: int = 4096
    max_inflight_batches: int = 2
    # The queue delay the adaptive queue limit aims at (serving.admission).
    target_queue_delay_seconds: float = 0.1


@dataclass(frozen=True)
class Limits:
    """Per-request limits; a request over one gets INVALID_ARGUMENT naming it."""

    max_candidates_per_request: int = 1024
    max_tasks_per_request: int = 8
    max_history_items: int = 1000


class HashPolicy(StrEnum):
    """Envoy's consistent-hash load balancers (either keeps a member on one replica)."""

    RING_HASH = "ring_hash"
    MAGLEV = "maglev"


@dataclass(frozen=True)
class ClusterConfig:
    """`brew cluster`: N replicas behind one Envoy port (serving.cluster, serving.envoy_config).

    Replica i serves gRPC on first_replica_port + i and /metrics on
    first_replica_metrics_port + i. A port of 0 is picked free when the
    cluster starts. `replicas_dns` names one DNS name that resolves to every
    replica (a Kubernetes headless service): Envoy then finds the replicas
    there, on the server's `port`, instead of on this host.
    """

    replicas: int = 2
    envoy_host: str = "127.0.0.1"
    envoy_port: int = 50051
    envoy_stats_port: int = 9902  # /stats/prometheus and /ready, on envoy_host
    envoy_admin_port: int = 9901  # the full admin interface, on 127.0.0.1 only
    first_replica_port: int = 50061
    first_replica_metrics_port: int = 9401
    hash_policy: HashPolicy = HashPolicy.RING_HASH
    hash_balance_factor: int = 0  # bounded load, in % of the mean: 150 caps a replica at 1.5x; 0: off
    health_check_interval_seconds: float = 1.0
    retries: int = 1
    replicas_dns: str | None = None


@dataclass(frozen=True)
class SupervisorConfig:
    """How the engine watchdog probes and restarts the engine (serving.supervisor)."""

    probe_interval_seconds: float = 1.0
    probe_timeout_seconds: float = 30.0
    initial_backoff_seconds: float = 1.0
    max_backoff_seconds: float = 30.0
    max_failures: int = 5  # this many engine failures within failure_window_seconds: exit
    failure_window_seconds: float = 600.0


@dataclass(frozen=True)
class ServerConfig:
    engine: EngineKind = EngineKind.VLLM
    model: Path = defaults.DEMO_MODEL_DIR
    prompts: Path = defaults.PROMPTS_DIR
    dtype: str = "float32"
    device: str = "cpu"
    multi_item: bool = False
    host: str = "127.0.0.1"
    port: int = 50051
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 9400
    slo_seconds: float = 0.5
    grace_seconds: float = 10.0
    max_message_bytes: int = 4 * 1024 * 1024
    keepalive_time_seconds: float = 60.0
    keepalive_timeout_seconds: float = 20.0
    stats_interval_seconds: float = 10.0
    context_cache_entries: int = 4096  # rendered member contexts kept for repeat members; 0 turns it off
    default_deadline_seconds: float = 5.0  # for callers that send none
    tls_cert: Path | None = None
    tls_key: Path | None = None
    auth_token: str | None = None
    replica_name: str | None = None  # the x-brew-replica header; None: hostname:port
    batching: BatchingConfig = field(default_factory=BatchingConfig)
    limits: Limits = field(default_factory=Limits)
    supervisor: SupervisorConfig = field(default_factory=SupervisorConfig)
    vllm: VllmOptions = field(default_factory=VllmOptions)
    torch: TorchOptions = field(default_factory=TorchOptions)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)

    def __post_init__(self) -> None:
        problems = list(_problems(self))
        if problems:
            raise ConfigError("invalid server configuration:\n  - " + "\n  - ".join(problems))


NUMBER_SETTINGS = (
    "port", "metrics_port", "slo_seconds", "grace_seconds", "max_message_bytes", "keepalive_time_seconds",
    "keepalive_timeout_seconds", "stats_interval_seconds", "context_cache_entries", "default_deadline_seconds",
)


def _wrong_types(config: ServerConfig):  # type: ignore[no-untyped-def]
    """Settings that are not numbers where numbers are needed (e.g. port = "50051" in TOML)."""
    sections = [("", config, NUMBER_SETTINGS),
                ("batching.", config.batching, [f.name for f in fields(BatchingConfig)]),
                ("limits.", config.limits, [f.name for f in fields(Limits)]),
                ("supervisor.", config.supervisor, [f.name for f in fields(SupervisorConfig)]),
                ("cluster.", config.cluster, CLUSTER_NUMBER_SETTINGS)]
    for prefix, section, names in sections:
        for name in names:
            value = getattr(section, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                yield f"{prefix}{name} must be a number, got {value!r}"


def _problems(config: ServerConfig):  # type: ignore[no-untyped-def]
    wrong_types = list(_wrong_types(config))
    if wrong_types:
        yield from wrong_types
        return
    if not (config.model / "config.json").is_file():
        yield f"model {config.model} is not a checkpoint directory (no config.json); pass --model DIR"
    if not isinstance(config.multi_item, bool):
        yield f"multi_item must be true or false, got {config.multi_item!r}"
    elif config.multi_item and not ENGINES[config.engine].multi_item:
        with_it = [kind.value for kind, spec in ENGINES.items() if spec.multi_item]
        yield f"multi_item: engine {config.engine.value} has no multi-item scoring; use engine {with_it}"
    if not config.prompts.is_dir():
        yield f"prompts {config.prompts} is not a directory; pass --prompts DIR"
    for name in ("port", "metrics_port"):
        value = getattr(config, name)
        if not 0 <= value <= 65535:
            yield f"{name}={value} is not a TCP port; use 0-65535 (0 picks a free one)"
    if config.port and config.port == config.metrics_port and config.host == config.metrics_host:
        yield f"port and metrics_port are both {config.port}; give metrics its own port"
    for name in ("slo_seconds", "grace_seconds", "keepalive_time_seconds", "keepalive_timeout_seconds",
                 "stats_interval_seconds", "default_deadline_seconds"):
        if getattr(config, name) <= 0:
            yield f"{name} must be > 0, got {getattr(config, name)}"
    if config.context_cache_entries < 0:
        yield f"context_cache_entries must be >= 0 (0 turns the cache off), got {config.context_cache_entries}"
    if config.max_message_bytes < 1024:
        yield f"max_message_bytes={config.max_message_bytes} is too small; use at least 1024"
    if (config.tls_cert is None) != (config.tls_key is None):
        yield "TLS needs both tls_cert and tls_key (or neither)"
    for name in ("tls_cert", "tls_key"):
        path = getattr(config, name)
        if path is not None and not path.is_file():
            yield f"{name} {path} does not exist"
    if config.auth_token is not None and not config.auth_token:
        yield "auth_token is empty; give a token or leave it out"
    if config.replica_name is not None and not _is_header_value(config.replica_name):
        yield f"replica_name {config.replica_name!r} must be non-empty printable ASCII (it is a gRPC header)"
    yield from _cluster_problems(config.cluster)
    batching = config.batching
    if batching.max_batch_candidates < 1:
        yield f"batching.max_batch_candidates must be >= 1, got {batching.max_batch_candidates}"
    if batching.collect_window_seconds < 0:
        yield f"batching.collect_window_ms must be >= 0, got {batching.collect_window_seconds * 1000}"
    if batching.max_queue_candidates < batching.max_batch_candidates:
        yield (f"batching.max_queue_candidates ({batching.max_queue_candidates}) must be at least "
               f"max_batch_candidates ({batching.max_batch_candidates})")
    if batching.max_inflight_batches < 1:
        yield f"batching.max_inflight_batches must be >= 1, got {batching.max_inflight_batches}"
    if batching.target_queue_delay_seconds <= 0:
        yield f"batching.target_queue_delay_ms must be > 0, got {batching.target_queue_delay_seconds * 1000}"
    yield from _supervisor_problems(config.supervisor)
    for limit in fields(Limits):
        if getattr(config.limits, limit.name) < 1:
            yield f"limits.{limit.name} must be >= 1, got {getattr(config.limits, limit.name)}"
    if config.limits.max_candidates_per_request > batching.max_queue_candidates:
        yield (f"limits.max_candidates_per_request ({config.limits.max_candidates_per_request}) exceeds "
               f"batching.max_queue_candidates ({batching.max_queue_candidates}): such a request could never be admitted")


CLUSTER_NUMBER_SETTINGS = (
    "replicas", "envoy_port", "envoy_stats_port", "envoy_admin_port", "first_replica_port",
    "first_replica_metrics_port", "hash_balance_factor", "health_check_interval_seconds", "retries",
)


def _is_header_value(text: str) -> bool:
    return bool(text) and text.isascii() and text.isprintable() and text == text.strip()


def _cluster_problems(cluster: ClusterConfig):  # type: ignore[no-untyped-def]
    if cluster.replicas < 1:
        yield f"cluster.replicas must be >= 1, got {cluster.replicas}"
        return
    used: dict[str, range] = {}  # setting -> the ports it takes (0: picked free at start)
    for name in ("envoy_port", "envoy_stats_port", "envoy_admin_port", "first_replica_port",
                 "first_replica_metrics_port"):
        first = getattr(cluster, name)
        ports = range(first, first + (cluster.replicas if name.startswith("first_") else 1))
        if not 0 <= ports[0] <= ports[-1] <= 65535:
            yield f"cluster.{name}={first} does not give every replica a TCP port (0-65535); 0 picks free ones"
        elif first:
            for other, taken in used.items():
                if set(ports) & set(taken):
                    yield f"cluster.{name} ({first}) and cluster.{other} ({taken[0]}) share ports; move one"
            used[name] = ports
    if cluster.health_check_interval_seconds <= 0:
        yield f"cluster.health_check_interval_seconds must be > 0, got {cluster.health_check_interval_seconds}"
    if cluster.retries < 0:
        yield f"cluster.retries must be >= 0 (0: Envoy never retries), got {cluster.retries}"
    if cluster.hash_balance_factor and cluster.hash_balance_factor < 100:
        yield (f"cluster.hash_balance_factor must be 0 (off) or at least 100 (% of the mean load), "
               f"got {cluster.hash_balance_factor}")
    if cluster.replicas_dns is not None and not cluster.replicas_dns.strip():
        yield "cluster.replicas_dns is empty; give the replicas' DNS name or leave it out"


def _supervisor_problems(supervisor: SupervisorConfig):  # type: ignore[no-untyped-def]
    for name in ("probe_interval_seconds", "probe_timeout_seconds", "initial_backoff_seconds",
                 "failure_window_seconds"):
        if getattr(supervisor, name) <= 0:
            yield f"supervisor.{name} must be > 0, got {getattr(supervisor, name)}"
    if supervisor.max_backoff_seconds < supervisor.initial_backoff_seconds:
        yield (f"supervisor.max_backoff_seconds ({supervisor.max_backoff_seconds}) must be at least "
               f"initial_backoff_seconds ({supervisor.initial_backoff_seconds})")
    if supervisor.max_failures < 1:
        yield f"supervisor.max_failures must be >= 1, got {supervisor.max_failures}"


SECTIONS = {"batching", "limits", "supervisor", "vllm", "torch", "cluster"}
TOP_KEYS = ("engine", "model", "prompts", "dtype", "device", "multi_item")
# TOML keys in milliseconds -> the seconds fields they set.
BATCHING_MS_KEYS = {"collect_window_ms": "collect_window_seconds",
                    "target_queue_delay_ms": "target_queue_delay_seconds"}
SERVER_KEYS = {f.name for f in fields(ServerConfig)} - SECTIONS - set(TOP_KEYS)


def load_config(toml_file: Path | None = None, **overrides: Any) -> ServerConfig:
    """TOML file (optional) first, then the overrides that are not None.

    `batching` and `limits` overrides are dicts merged key by key over the
    file's sections, so one flag does not reset the rest of a section.
    """
    values: dict[str, Any] = {}
    if toml_file is not None:
        try:
            raw = tomllib.loads(Path(toml_file).read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as error:
            raise ConfigError(f"cannot read config file {toml_file}: {error}") from error
        values = _from_toml(raw)
    sections = {name: {**values.pop(name, {}), **_given(overrides.pop(name, {}))} for name in SECTIONS}
    values.update(_given(overrides))
    try:
        if "engine" in values:
            if values["engine"] not in {kind.value for kind in ENGINES}:
                raise ConfigError(f"engine {values['engine']!r} is not one of {[k.value for k in ENGINES]}")
            values["engine"] = EngineKind(values["engine"])
        for key in ("model", "prompts", "tls_cert", "tls_key"):
            if values.get(key) is not None:
                values[key] = Path(values[key])
        return ServerConfig(
            batching=replace(BatchingConfig(), **sections["batching"]), limits=replace(Limits(), **sections["limits"]),
            supervisor=replace(SupervisorConfig(), **sections["supervisor"]),
            vllm=_options("vllm", VllmOptions, sections["vllm"]), torch=_options("torch", TorchOptions, sections["torch"]),
            cluster=_cluster(sections["cluster"]), **values,
        )
    except ConfigError:
        raise
    except (TypeError, ValueError) as error:
        raise ConfigError(f"invalid server configuration: {error}") from error


def _cluster(settings: Mapping[str, Any]) -> ClusterConfig:
    settings = dict(settings)
    if "hash_policy" in settings:
        if settings["hash_policy"] not in {policy.value for policy in HashPolicy}:
            raise ConfigError(f"cluster.hash_policy {settings['hash_policy']!r} is not one of "
                              f"{[policy.value for policy in HashPolicy]}")
        settings["hash_policy"] = HashPolicy(settings["hash_policy"])
    return replace(ClusterConfig(), **settings)


def _options(section: str, options: type, settings: Mapping[str, Any]) -> Any:
    """An engine options object from a config section; ConfigError naming the section."""
    known = option_names(options)
    unknown = sorted(set(settings) - known)
    if unknown:
        raise ConfigError(f"invalid server configuration: [{section}] unknown setting(s) {unknown}; "
                          f"known: {sorted(known)}")
    try:
        return options(**settings)
    except ValueError as error:
        raise ConfigError(f"invalid server configuration: [{section}] {error}") from error


def _reject_unknown(section: str, settings: Mapping[str, Any], known: set[str]) -> None:
    unknown = sorted(set(settings) - known)
    if unknown:
        where = f" {section}" if section else ""
        raise ConfigError(f"config file{where}: unknown key(s) {unknown}; known: {sorted(known)}")


def _given(settings: Mapping[str, Any]) -> dict[str, Any]:
    """The settings actually given (CLI flags left out are None)."""
    return {k: v for k, v in settings.items() if v is not None}


def _from_toml(raw: Mapping[str, Any]) -> dict[str, Any]:
    known_top = {*TOP_KEYS, "server"} | SECTIONS
    _reject_unknown("", raw, known_top)
    values = {k: raw[k] for k in TOP_KEYS if k in raw}
    server = dict(raw.get("server", {}))
    _reject_unknown("[server]", server, SERVER_KEYS)
    values.update(server)
    batching = dict(raw.get("batching", {}))
    known_batching = {f.name for f in fields(BatchingConfig)} - set(BATCHING_MS_KEYS.values())
    known_batching |= set(BATCHING_MS_KEYS)
    _reject_unknown("[batching]", batching, known_batching)
    for ms_key, seconds_field in BATCHING_MS_KEYS.items():
        if ms_key in batching:
            batching[seconds_field] = float(batching.pop(ms_key)) / 1000.0
    values["batching"] = batching
    values["limits"] = dict(raw.get("limits", {}))
    _reject_unknown("[limits]", values["limits"], {f.name for f in fields(Limits)})
    values["supervisor"] = dict(raw.get("supervisor", {}))
    _reject_unknown("[supervisor]", values["supervisor"], {f.name for f in fields(SupervisorConfig)})
    values["vllm"] = dict(raw.get("vllm", {}))
    values["torch"] = dict(raw.get("torch", {}))
    values["cluster"] = dict(raw.get("cluster", {}))
    _reject_unknown("[cluster]", values["cluster"], {f.name for f in fields(ClusterConfig)})
    return values
