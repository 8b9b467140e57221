"""Where a server's CPU goes under load, part by part: py-spy samples of
`brew serve` and each process below it (vLLM's engine core and worker),
counted by the part of the engine step they fall in.

    python -m loadtest.bench.profile --system brew-vllm-mis --concurrency 4 --out runs/profile/feed50-mis \\
        --tasks feed_engagement=1 --candidates 50 --history 30-50

Needs py-spy (the `profile` extra). The server is started as the side-by-side starts it (`sidebyside.systems`),
warmed up with the same load, then loaded again for `--duration` seconds
with `brew loadtest run --server-pid` (which measures each process's CPU
per candidate) while py-spy samples every Python process of the server's
tree at 100 Hz without stopping it. A sample counts once, under the first
part that a frame of its stack matches, looking from the innermost frame
outwards: a matmul inside the attention backend is attention, the same
matmul in a linear layer is a matmul. A part's CPU per candidate is its
share of the process's samples times the process's CPU per candidate over
the same load (py-spy records on-CPU samples only, so the shares are of
CPU time, not of wall time).

Why sampling and not torch's profiler: the parts that matter here (the
scheduler, the model runner's input preparation, the engine core's
sockets) are Python, outside any torch op, and the server must run under
its real load in its real processes; torch's profiler sees ops in one
process. `loadtest.bench.mis_kernel` times the attention backend's own
steps (plan, KV write, gather, attention) op by op.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from loadtest import flags
from loadtest.bench.logged_process import LoggedProcess
from loadtest.bench.sidebyside.systems import ENGINE_SYSTEMS, Endpoints, free_ports, server_command
from loadtest.flags import positive_float
from loadtest.host_cost import command_name, process_tree

SAMPLE_HZ = 100
DEFAULT_MODEL = Path(__file__).resolve().parents[2] / "brew" / "demo" / "brew-demo"
DEFAULT_PROMPTS = Path(__file__).resolve().parents[2] / "prompts"
SERVER = "server"  # host_cost.json's label of the root process (brew serve)
PROCESSES = "processes.json"  # pid -> label of each process sampled


@dataclass(frozen=True)
class Part:
    """A part of the work, recognised by a frame: the frame's file path
    contains `path` and, when `functions` is given, its function is one of
    them."""

    name: str
    path: str
    functions: frozenset[str] | None = None

    def matches(self, function: str, file: str) -> bool:
        return self.path in file and (self.functions is None or function in self.functions)


def _part(name: str, path: str, *functions: str) -> Part:
    return Part(name, path, frozenset(functions) if functions else None)


MIS = "brew/engines/vllm_multi_item/"
SHM = "vllm/distributed/device_communicators/shm_broadcast.py"
# Parts that take every sample they enclose, whatever runs inside them.
ENCLOSING: tuple[Part, ...] = (
    # vLLM's processes busy-poll their shared-memory queue for a second
    # after each message (sched_yield between polls): on-CPU, but waiting.
    _part("waiting for the other process (shared-memory queue polling)", SHM, "MessageQueue.acquire_read"),
    _part("read-out: pooler (logits, log-softmax, label columns)", "vllm/v1/worker/gpu_model_runner.py",
          "GPUModelRunner._pool"),
)
# Then looked for in this order at each frame, innermost frame first; the
# first part a frame matches takes the sample. py-spy names methods
# Class.method.
PARTS: tuple[Part, ...] = (
    _part("multi-item attention: plan", MIS + "kernel.py", "plan_request", "_runs", "_candidate_batch", "_bias"),
    _part("multi-item attention: plan", MIS + "attention.py", "MultiItemAttentionMetadataBuilder.build",
          "MultiItemAttentionImpl._plans"),
    _part("multi-item attention: KV write", MIS + "attention.py", "MultiItemAttentionImpl.do_kv_cache_update",
          "token_rows"),
    _part("multi-item attention: KV gather", MIS + "attention.py", "MultiItemAttentionImpl.context"),
    _part("multi-item attention: plan", MIS + "cpu_kernel.py", "CpuStepPlan.build"),
    _part("multi-item attention: scratch cache and vLLM's kernel", MIS + "cpu_kernel.py"),
    _part("multi-item attention: attend", MIS + "kernel.py"),
    _part("multi-item attention: per-request loop", MIS + "attention.py"),
    _part("multi-item attention: per-request loop", MIS + "cpu_kernel.py"),
    _part("multi-item layout rows (positions, rule)", MIS + "model.py"),
    _part("multi-item layout rows (positions, rule)", MIS + "layout.py"),
    _part("vLLM CPU attention (KV write included)", "vllm/v1/attention/backends/cpu_attn.py"),
    _part("matmuls (linear layers)", "vllm/_custom_ops.py", "onednn_mm"),
    _part("matmuls (linear layers)", "vllm/model_executor/layers/utils.py"),
    _part("matmuls (linear layers)", "vllm/model_executor/layers/linear.py"),
    _part("logits and sampling", "vllm/model_executor/layers/logits_processor.py"),
    _part("logits and sampling", "vllm/v1/sample/"),
    _part("norms, rotary, activation", "vllm/_custom_ops.py", "rotary_embedding"),
    _part("norms, rotary, activation", "vllm/model_executor/layers/layernorm.py"),
    _part("norms, rotary, activation", "vllm/model_executor/layers/rotary_embedding/"),
    _part("norms, rotary, activation", "vllm/model_executor/layers/activation.py"),
    _part("rest of the model forward (embedding, residuals, module calls)", "vllm/model_executor/"),
    _part("rest of the model forward (embedding, residuals, module calls)", "torch/nn/modules/"),
    _part("model runner: inputs, metadata, outputs", "vllm/v1/attention/"),
    _part("model runner: inputs, metadata, outputs", "vllm/v1/worker/"),
    _part("scheduler and KV cache manager", "vllm/v1/core/"),
    _part("messages between processes (shared memory, ZeroMQ, msgpack)", SHM),
    _part("messages between processes (shared memory, ZeroMQ, msgpack)", "vllm/v1/serial_utils.py"),
    _part("messages between processes (shared memory, ZeroMQ, msgpack)", "zmq/"),
    _part("messages between processes (shared memory, ZeroMQ, msgpack)", "msgspec"),
    _part("executor", "vllm/v1/executor/"),
    _part("engine core: loop", "vllm/v1/engine/core.py"),
    _part("Brew: rendering, tokenizing", "brew/verbalize.py"),
    _part("Brew: rendering, tokenizing", "brew/tokenization.py"),
    _part("Brew: rendering, tokenizing", "jinja2/"),
    _part("Brew: rendering, tokenizing", "tokenizers/"),
    _part("Brew: engine client", "brew/engines/"),
    _part("vLLM's client", "vllm/v1/engine/"),
    _part("Brew: service, dispatcher, gRPC", "serving/"),
    _part("Brew: service, dispatcher, gRPC", "grpc/"),
    _part("event loop and gRPC's C core (no Python frame below the loop)", "asyncio/"),
    _part("event loop and gRPC's C core (no Python frame below the loop)", "uvloop/"),
    _part("threads: hand-offs and waits", "concurrent/futures/"),
    _part("threads: hand-offs and waits", "threading.py"),
    _part("Brew: other", "brew/"),
)
OTHER = "other"

_FRAME = re.compile(r"^(?P<function>.*?) \((?P<file>[^()]*?)(?::\d+)?\)$")


def parse_raw(text: str) -> Counter[tuple[tuple[str, str], ...]]:
    """py-spy's raw (collapsed) output: one stack per line, outermost frame
    first, frames `function (file:line)` joined by ';', then a space and the
    number of samples. Stacks as (function, file) tuples, counted."""
    stacks: Counter[tuple[tuple[str, str], ...]] = Counter()
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = []
        for frame in stack.split(";"):
            match = _FRAME.match(frame)
            frames.append((match["function"], match["file"]) if match else (frame, ""))
        stacks[tuple(frames)] += int(count)
    return stacks


def part_of(stack: Sequence[tuple[str, str]], parts: Sequence[Part] = PARTS,
            enclosing: Sequence[Part] = ENCLOSING) -> str:
    """The part a sample belongs to: an enclosing part any frame matches,
    else the first part matched by its innermost frame that matches any."""
    for part in enclosing:
        if any(part.matches(function, file) for function, file in stack):
            return part.name
    for function, file in reversed(stack):
        for part in parts:
            if part.matches(function, file):
                return part.name
    return OTHER


def shares(stacks: Counter[tuple[tuple[str, str], ...]]) -> dict[str, float]:
    """Each part's share of the samples, largest first."""
    counts: Counter[str] = Counter()
    for stack, count in stacks.items():
        counts[part_of(stack)] += count
    total = sum(counts.values())
    return {name: count / total for name, count in counts.most_common()} if total else {}


@dataclass(frozen=True)
class ProcessProfile:
    label: str  # host_cost.json's label: "server", or the process's command line
    samples: int
    cpu_ms_per_candidate: float | None
    shares: dict[str, float]


def report(profiles: Iterable[ProcessProfile]) -> str:
    """A markdown table per process: each part's share of the samples and,
    where the process's CPU per candidate is known, its ms per candidate."""
    lines: list[str] = []
    for profile in profiles:
        cost = (f", {profile.cpu_ms_per_candidate:.3f} ms CPU per candidate"
                if profile.cpu_ms_per_candidate is not None else "")
        lines += [f"**{profile.label}** ({profile.samples} samples{cost})", "",
                  "| part | share of samples | ms CPU per candidate |", "|---|---:|---:|"]
        for name, share in profile.shares.items():
            ms = f"{share * profile.cpu_ms_per_candidate:.3f}" if profile.cpu_ms_per_candidate is not None else "-"
            lines.append(f"| {name} | {share:.1%} | {ms} |")
        lines.append("")
    return "\n".join(lines)


def _brew(*args: str) -> list[str]:
    return [sys.executable, "-m", "brew.cli", *args]


def _load_command(endpoints: Endpoints, load: Sequence[str], duration: float, workload: Sequence[str],
                  out: Path, server_pid: int | None = None) -> list[str]:
    command = _brew("loadtest", "run", "--target", endpoints.address, *load, "--duration", str(duration), "--ready-timeout", "300", "--no-progress", "--no-plots",
                    "--out", str(out), *workload)
    return command + (["--server-pid", str(server_pid)] if server_pid else [])


def _python_processes(root: int) -> list[int]:
    """The server and every Python process below it (vLLM's engine core and
    worker; not resource trackers, which only wait)."""
    return [pid for pid in process_tree(root) if "resource_tracker" not in command_name(pid)]


def profile_system(system: str, load: Sequence[str], duration: float, warmup: float, workload: Sequence[str],
                   out: Path, model: Path, prompts: Path) -> list[ProcessProfile]:
    """Start `system`, load it (`load`: `--rate R` or `--concurrency N`, as
    `brew loadtest run` takes them), sample it into `out`; one ProcessProfile
    per process."""
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(py_spy).exists():
        raise SystemExit("py-spy is not installed: pip install -e '.[profile]'")
    port, metrics_port = free_ports(2)
    endpoints = Endpoints(port, metrics_port)
    server = LoggedProcess.start(server_command(system, endpoints, model, prompts), out / "server")
    try:
        subprocess.run(_load_command(endpoints, load, warmup, workload, out / "warmup"), check=True,
                       stdout=subprocess.DEVNULL)
        loader = subprocess.Popen(_load_command(endpoints, load, duration, workload, out / "load", server.process.pid),
                                stdout=subprocess.DEVNULL)
        time.sleep(2.0)  # the load generator starting: not the server's steady state
        pids = _python_processes(server.process.pid)
        spies = {pid: subprocess.Popen([py_spy, "record", "--pid", str(pid), "--rate", str(SAMPLE_HZ),
                                        "--duration", str(int(duration - 4)), "--nonblocking", "--format", "raw",
                                        "--output", str(out / f"py-spy-{pid}.txt")],
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                 for pid in pids}
        labels = {pid: SERVER if pid == server.process.pid else command_name(pid) for pid in pids}
        (out / PROCESSES).write_text(json.dumps({str(pid): label for pid, label in labels.items()}, indent=2),
                                     encoding="utf-8")
        for spy in spies.values():
            spy.wait()
        if loader.wait() != 0:
            raise RuntimeError(f"the load generator failed; see {out / 'load'}")
    finally:
        server.stop()
    return read_profiles(out)


def read_profiles(out: Path) -> list[ProcessProfile]:
    """The profiles of a run's directory: its samples (py-spy-PID.txt), the
    processes they are of (processes.json) and their CPU per candidate over
    the load (load/host_cost.json)."""
    labels = json.loads((out / PROCESSES).read_text(encoding="utf-8"))
    cost = json.loads((out / "load" / "host_cost.json").read_text(encoding="utf-8"))["cpu_s_per_candidate"]
    profiles = []
    for pid, label in labels.items():
        path = out / f"py-spy-{pid}.txt"
        stacks = parse_raw(path.read_text(encoding="utf-8")) if path.exists() else Counter()
        per_candidate = cost.get(label)
        profiles.append(ProcessProfile(label, sum(stacks.values()),
                                       per_candidate * 1000 if per_candidate is not None else None, shares(stacks)))
    return profiles


def throughput_line(out: Path) -> str:
    """What the load got: candidates scored per second and p99 latency."""
    summary = json.loads((out / "load" / "summary.json").read_text(encoding="utf-8"))
    return (f"load: {summary['throughput']['candidates_per_s']:.1f} candidates/s scored OK, "
            f"p99 {summary['latency_ms']['from_sent']['p99']:.1f} ms (from send)\n")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m loadtest.bench.profile", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--system", choices=sorted(ENGINE_SYSTEMS),
                        help="the Brew system to start and profile (as in sidebyside --systems)")
    flags.add(parser.add_mutually_exclusive_group(), flags.RATE, flags.CONCURRENCY)  # as brew loadtest run's
    parser.add_argument("--duration", type=positive_float, default=30.0, help="seconds of measured load (default: 30)")
    flags.WARMUP.add(parser)
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--prompts", type=Path, default=DEFAULT_PROMPTS)
    parser.add_argument("--out", type=Path, required=True, help="directory for the samples, logs and report")
    parser.add_argument("--report", action="store_true",
                        help="measure nothing: count --out's samples again (after the parts changed)")
    args, workload = parser.parse_known_args(argv)
    if not args.report:
        if args.system is None or (args.rate is None and args.concurrency is None):
            parser.error("--system and one of --rate or --concurrency are required (or --report)")
        load = ["--rate", str(args.rate)] if args.rate is not None else ["--concurrency", str(args.concurrency)]
        profile_system(args.system, load, args.duration, args.warmup, workload, args.out, args.model, args.prompts)
    text = throughput_line(args.out) + "\n" + report(read_profiles(args.out))
    (args.out / "profile.md").write_text(text, encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
