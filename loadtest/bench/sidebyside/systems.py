"""The systems a side-by-side run compares, and how each is started.

Each system is a server started here as a subprocess on free localhost
ports, its output in a log file, and stopped with SIGTERM (then SIGKILL)
when its runs are done. vLLM's own server gets the settings Brew's vLLM
engine runs with, so only the serving path differs.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from brew.engines import EngineKind, EngineVariant, MultiItemMode, engine_variants
from brew.quantization.schemes import LOAD_SCHEMES, CheckpointScheme

VLLM_OPENAI = "vllm-openai"  # vLLM's own OpenAI server, POST /generative_scoring
BASELINE = VLLM_OPENAI  # the system the report's ratios are taken against


def system_name(variant: EngineVariant) -> str:
    """The system that serves with `brew serve --engine KIND --multi-item
    MODE`: brew-KIND (off), brew-KIND-mis (on), brew-KIND-auto (auto), but the
    naive engine, a baseline rather than a way to serve, is just naive."""
    return variant.name if variant.kind is EngineKind.NAIVE else f"brew-{variant.name}"


ENGINE_SYSTEMS = {system_name(variant): variant for variant in engine_variants().values()}
# Run and reported in this order: Brew's engines, then the baselines.
SYSTEMS = (
    *(name for name, variant in ENGINE_SYSTEMS.items() if variant.kind is not EngineKind.NAIVE),
    VLLM_OPENAI,
    *(name for name, variant in ENGINE_SYSTEMS.items() if variant.kind is EngineKind.NAIVE),
)


# A Brew system served with --http-port and loaded over POST /v1/brew/score
# (loadtest.http_client), e.g. brew-vllm-http: the same server, the other transport.
HTTP = "-http"
HTTP_SYSTEMS = tuple(f"{name}{HTTP}" for name, variant in ENGINE_SYSTEMS.items() if variant.kind is not EngineKind.NAIVE)
# A Brew system on a quantized model (docs/quantization.md): SYSTEM+int8-w8a8
# serves the checkpoint `brew quantize` wrote (--quantized-model), e.g.
# brew-vllm+int8-w8a8; SYSTEM+int8-dynamic (or +int8-weight) quantizes at load,
# on the engines that can (brew.quantization.schemes.LOAD_SCHEMES, CPU ones).
# Each engine's plain variant (multi-item off) only.
QUANTIZED = "+"
QUANTIZED_SYSTEMS = tuple(
    f"{name}{QUANTIZED}{scheme}" for name, variant in ENGINE_SYSTEMS.items()
    if variant.kind is not EngineKind.NAIVE and variant.multi_item is MultiItemMode.OFF
    for scheme in (*(s.value for s in CheckpointScheme),
                   *(s.value for s, device in LOAD_SCHEMES[variant.kind.value].items() if device == "any")))
# What --systems accepts; the default is SYSTEMS.
CHOICES = (*SYSTEMS, *HTTP_SYSTEMS, *QUANTIZED_SYSTEMS)


def needs_quantized_model(system: str) -> bool:
    """Whether `system` serves a `brew quantize` checkpoint (--quantized-model)."""
    return system.partition(QUANTIZED)[2] in tuple(CheckpointScheme)


def over_http(system: str) -> bool:
    return system in HTTP_SYSTEMS


def free_ports(count: int) -> list[int]:
    """`count` distinct free localhost ports: every probe is held open until
    all are bound, so the system cannot hand out one twice."""
    with contextlib.ExitStack() as stack:
        probes = [stack.enter_context(socket.socket()) for _ in range(count)]
        for probe in probes:
            probe.bind(("127.0.0.1", 0))
        return [probe.getsockname()[1] for probe in probes]


@dataclass(frozen=True)
class Endpoints:
    port: int
    metrics_port: int
    http_port: int | None = None  # a system loaded over HTTP (over_http)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def http_address(self) -> str:
        return f"127.0.0.1:{self.http_port}"


def server_command(system: str, endpoints: Endpoints, model: Path, prompts: Path,
                   quantized_model: Path | None = None) -> list[str]:
    """The command line that serves `model` as `system`, vLLM's settings
    matched to Brew's vLLM engine (fp32, eager, prefix caching, 32-token
    blocks on CPU, 1 GiB of KV cache). Brew's servers render with `prompts`;
    vLLM's server is sent prompts rendered with the same directory by the
    load generator (loadtest.bench.vllm_http), so it takes none. A quantized
    system (QUANTIZED) serves `quantized_model` or quantizes at load."""
    if QUANTIZED in system:
        base, _, scheme = system.partition(QUANTIZED)
        if needs_quantized_model(system):
            assert quantized_model is not None, f"{system} needs --quantized-model"
            return server_command(base, endpoints, quantized_model, prompts)
        return [*server_command(base, endpoints, model, prompts), "--quantization", scheme]
    if system == VLLM_OPENAI:
        return [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model),
                "--served-model-name", model.name, "--host", "127.0.0.1", "--port", str(endpoints.port),
                "--dtype", "float32", "--enforce-eager", "--enable-prefix-caching", "--block-size", "32",
                "--gpu-memory-utilization", "0.3", "--kv-cache-memory-bytes", str(1 << 30),
                "--disable-log-stats"]
    if over_http(system):
        assert endpoints.http_port is not None, f"{system} needs an HTTP port"
        return [*server_command(system.removesuffix(HTTP), endpoints, model, prompts),
                "--http-port", str(endpoints.http_port)]
    variant = ENGINE_SYSTEMS[system]
    # Admitted by their deadlines, as vLLM's server (which refuses nothing) is:
    # the capacity search fails a window with any refused request, and admission
    # by the SLO refuses early by design (BENCHMARKS.md, section 4, measures it).
    return [sys.executable, "-m", "brew.cli", "serve", "--engine", variant.kind.value, "--model", str(model),
            "--prompts", str(prompts), "--multi-item", variant.multi_item.value, "--admission-target", "deadline",
            "--port", str(endpoints.port), "--metrics-port", str(endpoints.metrics_port), "--log-level", "warning"]


@contextlib.contextmanager
def running(command: Sequence[str], log_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """The server process, its output in `log_path`; SIGTERM (then SIGKILL) on exit."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                   env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
        try:
            yield process
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
