"""Side-by-side: the same model and workload through each serving system, one
after another on the same machine, measured by the same load generator.

    python -m loadtest.bench.sidebyside --out runs/sidebyside [--systems brew-vllm,vllm-openai,...]

Systems (each started here as a subprocess, loaded, then stopped):

    brew-vllm     `brew serve --engine vllm`   (batched, shared prefixes, vLLM)
    brew-torch    `brew serve --engine torch`  (batched, prefix KV reused, transformers)
    vllm-openai   vLLM's own OpenAI server, POST /generative_scoring
                  (loadtest.bench.vllm_http: same token ids, one call per task)
    naive         `brew serve --engine naive`  (one transformers forward per candidate)

For each system: start it and wait until it is ready; a warm-up run at
saturation (closed-loop, WARMUP_CONCURRENCY callers) that is thrown away; a
capacity search (loadtest.capacity: double until p99 breaks the SLO, then
bisect); then `--repeats` runs at the capacity rate found and
`--repeats` at one fixed rate common to all systems, each with a fresh seed
(fresh members, so no repeat rides on the previous one's prefix cache). The
report gives medians of the repeats and ratios against vllm-openai, and is
written as sidebyside.json, sidebyside.md and sweeps.png (every system's
sweep on one chart) under --out, next to every run's own files.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from brew import defaults
from loadtest.capacity import WARMUP_CONCURRENCY, search_capacity, write_sweep_json
from loadtest.experiment import RunPlan, execute
from loadtest.plots import plot_sweep, plot_sweeps
from loadtest.runner import Scorer, Target
from loadtest.summary import Summary
from loadtest.workload import WorkloadSpec

SYSTEMS = ("brew-vllm", "brew-torch", "vllm-openai", "naive")
BASELINE = "vllm-openai"
READY_TIMEOUT_S = 300.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass(frozen=True)
class Endpoints:
    port: int
    metrics_port: int

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


def server_command(system: str, endpoints: Endpoints, model: Path) -> list[str]:
    """The command line that serves `model` as `system`, vLLM's settings
    matched to Brew's vLLM engine (fp32, eager, prefix caching, 32-token
    blocks on CPU, 1 GiB of KV cache)."""
    if system == "vllm-openai":
        return [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model),
                "--served-model-name", model.name, "--host", "127.0.0.1", "--port", str(endpoints.port),
                "--dtype", "float32", "--enforce-eager", "--enable-prefix-caching", "--block-size", "32",
                "--gpu-memory-utilization", "0.3", "--kv-cache-memory-bytes", str(1 << 30),
                "--disable-log-stats"]
    engine = {"brew-vllm": "vllm", "brew-torch": "torch", "naive": "naive"}[system]
    return [sys.executable, "-m", "brew.cli", "serve", "--engine", engine, "--model", str(model),
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


@contextlib.asynccontextmanager
async def scorer_for(system: str, endpoints: Endpoints, model: Path, prompts: Path) -> AsyncIterator[Scorer]:
    """A ready scorer for the running system."""
    if system == "vllm-openai":
        from loadtest.bench.vllm_http import VllmScoringScorer

        async with VllmScoringScorer.for_model(f"http://{endpoints.address}", model, prompts) as scorer:
            await scorer.wait_until_ready(READY_TIMEOUT_S)
            yield scorer
        return
    async with Target(endpoints.address).client() as client:
        await client.wait_until_serving(READY_TIMEOUT_S)
        yield client


@dataclass(frozen=True)
class SystemResult:
    system: str
    capacity_rate: float | None  # requests/s; None when even the lowest rate probed broke the SLO
    capacity_candidates_per_s: list[float]  # one per repeat at the capacity rate
    capacity_p99_ms: list[float | None]
    fixed_rate: float
    fixed_candidates_per_s: list[float]
    fixed_p99_ms: list[float | None]
    fixed_errors: list[dict[str, int]]

    @staticmethod
    def median(values: Sequence[float | None]) -> float | None:
        present = [v for v in values if v is not None]
        return statistics.median(present) if present else None


@dataclass(frozen=True)
class Settings:
    out: Path
    model: Path
    prompts: Path
    workload: WorkloadSpec
    slo_s: float
    duration_s: float
    start_rate: float
    fixed_rate: float
    repeats: int
    timeout_s: float
    pause_s: float


async def _measure_system(system: str, endpoints: Endpoints, settings: Settings) -> SystemResult:
    base_dir = settings.out / system
    metrics = None if system == BASELINE else f"http://127.0.0.1:{endpoints.metrics_port}/metrics"
    base = RunPlan(target=Target(endpoints.address), out_dir=base_dir, rate=settings.start_rate,
                   duration_s=settings.duration_s, workload=settings.workload, slo_s=settings.slo_s,
                   timeout_s=settings.timeout_s, metrics_url=metrics, ready_timeout_s=0, progress=False)
    seeds = iter(range(1, 1_000_000))

    async with scorer_for(system, endpoints, settings.model, settings.prompts) as scorer:
        async def run(rate: float, label: str) -> Summary:
            # An overloaded run leaves work behind (the naive engine cannot
            # abort a forward pass): let it drain before the next one starts.
            await asyncio.sleep(settings.pause_s)
            plan = replace(base, rate=rate, seed=next(seeds), out_dir=base_dir / label)
            summary = await execute(plan, scorer)
            print(f"{system:12} {label:22} rate {rate:7.2f}/s  {summary.candidates_per_s:8.1f} cand/s  "
                  f"p99 {summary.p99_ms or float('nan'):8.1f} ms  errors {dict(summary.errors) or '-'}", flush=True)
            return summary

        # Warm-up at saturation, never reported: the first run at high load
        # otherwise pays for kernels and buffers of batch shapes not seen yet
        # (measured: a p99 two to three times that of the same rate later).
        await asyncio.sleep(settings.pause_s)
        await execute(replace(base, rate=None, concurrency=WARMUP_CONCURRENCY, seed=0,
                              out_dir=base_dir / "warmup"), scorer)
        probes = iter(range(100))
        sweep = await search_capacity(lambda rate: run(rate, f"search-{next(probes):02d}-rate-{rate:g}"),
                                      settings.start_rate)
        write_sweep_json(sweep, base_dir / "sweep.json")
        plot_sweep(sweep, settings.slo_s, base_dir / "sweep.png")
        capacity = sweep.capacity
        at_capacity = [await run(capacity.rate, f"capacity-{i}") for i in range(settings.repeats)] if capacity else []
        fixed = [await run(settings.fixed_rate, f"fixed-{i}") for i in range(settings.repeats)]
    return SystemResult(
        system=system,
        capacity_rate=capacity.rate if capacity else None,
        capacity_candidates_per_s=[s.candidates_per_s for s in at_capacity],
        capacity_p99_ms=[s.p99_ms for s in at_capacity],
        fixed_rate=settings.fixed_rate,
        fixed_candidates_per_s=[s.candidates_per_s for s in fixed],
        fixed_p99_ms=[s.p99_ms for s in fixed],
        fixed_errors=[dict(s.errors) for s in fixed],
    )


def measure_system(system: str, settings: Settings) -> SystemResult:
    endpoints = Endpoints(free_port(), free_port())
    command = server_command(system, endpoints, settings.model)
    with running(command, settings.out / system / "server.log"):
        return asyncio.run(_measure_system(system, endpoints, settings))


@dataclass(frozen=True)
class ComputeLimit:
    """The work a candidate of the workload needs and what the machine can do."""

    flops_per_candidate: float  # with the shared prefix computed once (loadtest.bench.flops)
    naive_flops_per_candidate: float  # every prompt from scratch
    matmul_flops_per_s: float  # measured, all cores, fp32
    threads: int


def compute_limit(settings: Settings, sample: int = 200) -> ComputeLimit:
    """Mean FLOPs per candidate over the first `sample` requests of the
    workload, verbalized into the same ids the systems score, and the
    machine's measured matmul FLOP/s (run with no server up)."""
    from transformers import AutoConfig

    from brew.wire import request_from_proto
    from loadtest.bench.flops import DecoderShape, measure_matmul_flops, naive_group_flops, shared_group_flops
    from loadtest.bench.vllm_http import verbalizer_for
    from loadtest.workload import SyntheticWorkload

    shape = DecoderShape.from_config(AutoConfig.from_pretrained(str(settings.model), local_files_only=True))
    verbalizer = verbalizer_for(settings.model, settings.prompts)
    shared = naive = candidates = 0
    for _, request in zip(range(sample), SyntheticWorkload(replace(settings.workload, seed=1)).requests()):
        domain = request_from_proto(request)
        for task in domain.tasks:
            group = verbalizer.prepare(domain.member, task).group
            suffixes = [len(s) for s in group.suffix_ids]
            shared += shared_group_flops(shape, len(group.prefix_ids), suffixes)
            naive += naive_group_flops(shape, len(group.prefix_ids), suffixes)
            candidates += len(suffixes)
    threads = os.cpu_count() or 1
    return ComputeLimit(shared / candidates, naive / candidates, measure_matmul_flops(threads), threads)


def sweep_points(path: Path) -> list[tuple[float, float, bool]]:
    """(candidates/s, p99 ms, good) per step of a saved sweep, in rate order."""
    steps = sorted(json.loads(path.read_text(encoding="utf-8"))["steps"], key=lambda step: step["rate"])
    return [(step["candidates_per_s"], step["p99_ms"], step["good"]) for step in steps if step["p99_ms"] is not None]


def _fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def markdown_table(results: Sequence[SystemResult], candidates_per_request: int,
                   limit: ComputeLimit | None = None) -> str:
    """Medians of the repeats, candidates/s at capacity as a ratio to the
    baseline, and (with `limit`) the share of the machine's matmul FLOP/s
    that the needed work at that rate amounts to."""
    baseline = next((r for r in results if r.system == BASELINE), None)
    base_cps = SystemResult.median(baseline.capacity_candidates_per_s) if baseline else None
    lines = [
        f"| system | capacity (req/s) | candidates/s at capacity | p99 at capacity (ms) "
        f"| × {BASELINE} | % of matmul peak | p99 at {results[0].fixed_rate:g} req/s (ms) "
        f"| errors at the fixed rate |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        cps = SystemResult.median(r.capacity_candidates_per_s)
        ratio = f"{cps / base_cps:.2f}" if cps and base_cps else "-"
        share = f"{100 * cps * limit.flops_per_candidate / limit.matmul_flops_per_s:.2f}" if cps and limit else "-"
        errors = sum(sum(e.values()) for e in r.fixed_errors)
        lines.append(f"| {r.system} | {_fmt(r.capacity_rate, 2)} | {_fmt(cps)} | "
                     f"{_fmt(SystemResult.median(r.capacity_p99_ms))} | {ratio} | {share} | "
                     f"{_fmt(SystemResult.median(r.fixed_p99_ms))} | {errors} |")
    notes = f"\n\n{candidates_per_request} candidates per request; medians of the repeats."
    if limit:
        notes += (f" Work per candidate {limit.flops_per_candidate / 1e6:.2f} MFLOP with the prefix shared "
                  f"({limit.naive_flops_per_candidate / 1e6:.2f} MFLOP from scratch); matmul peak "
                  f"{limit.matmul_flops_per_s / 1e9:.1f} GFLOP/s fp32 on {limit.threads} threads.")
    return "\n".join(lines) + notes + "\n"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m loadtest.bench.sidebyside", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("runs/sidebyside") / time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()))
    parser.add_argument("--systems", default=",".join(SYSTEMS), help=f"comma-separated, from {', '.join(SYSTEMS)}")
    parser.add_argument("--model", type=Path, default=defaults.DEMO_MODEL_DIR)
    parser.add_argument("--prompts", type=Path, default=defaults.PROMPTS_DIR)
    parser.add_argument("--task", default="job_apply", help="the task of every request")
    parser.add_argument("--candidates", type=int, default=16, help="candidates per request")
    parser.add_argument("--slo-ms", type=float, default=500.0)
    parser.add_argument("--duration", type=float, default=15.0, help="seconds per run")
    parser.add_argument("--start-rate", type=float, default=4.0, help="requests/s where the capacity search starts")
    parser.add_argument("--fixed-rate", type=float, default=2.0, help="requests/s of the common fixed-rate runs")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=5.0, help="per-request deadline, seconds")
    parser.add_argument("--pause", type=float, default=8.0, help="seconds between runs, for the server to drain")
    parser.add_argument("--report", action="store_true",
                        help="measure nothing: rewrite sidebyside.md from --out's sidebyside.json")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    unknown = sorted(set(systems) - set(SYSTEMS))
    if unknown:
        raise SystemExit(f"unknown systems {unknown}; choose from {list(SYSTEMS)}")
    results_file = args.out / "sidebyside.json"
    if args.report:
        saved = json.loads(results_file.read_text(encoding="utf-8"))
        build_parser().parse_args([], namespace=args)  # defaults, then the saved run's settings
        vars(args).update({k: v for k, v in saved["settings"].items() if k not in ("report", "out")})
        args.model, args.prompts, args.report = Path(args.model), Path(args.prompts), True
    settings = Settings(
        out=args.out, model=args.model.resolve(), prompts=args.prompts.resolve(),
        workload=WorkloadSpec(tasks={args.task: 1.0}, candidates=(args.candidates, args.candidates)),
        slo_s=args.slo_ms / 1000, duration_s=args.duration, start_rate=args.start_rate,
        fixed_rate=args.fixed_rate, repeats=args.repeats, timeout_s=args.timeout, pause_s=args.pause,
    )
    if args.report:
        results = [SystemResult(**r) for r in saved["results"]]
    else:
        results = [measure_system(system, settings) for system in systems]
        args.out.mkdir(parents=True, exist_ok=True)
        results_file.write_text(
            json.dumps({"settings": {**vars(args), "out": str(args.out), "model": str(args.model),
                                     "prompts": str(args.prompts)},
                        "results": [asdict(r) for r in results]}, indent=2) + "\n", encoding="utf-8")
    table = markdown_table(results, args.candidates, compute_limit(settings))
    (args.out / "sidebyside.md").write_text(table, encoding="utf-8")
    plot_sweeps({r.system: sweep_points(args.out / r.system / "sweep.json") for r in results}, settings.slo_s,
                args.out / "sweeps.png")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
