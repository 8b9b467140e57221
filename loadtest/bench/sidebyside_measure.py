"""One system of a side-by-side run measured: started, warmed up, its
capacity searched, then repeats at that capacity and at the common fixed
rate; and the compute limit of the workload on this machine.

Every run gets a fresh seed (fresh members, so no repeat rides on the
previous one's prefix cache) and its own directory of files.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path

from loadtest.bench.sidebyside_results import ComputeLimit, SystemResult
from loadtest.bench.sidebyside_systems import VLLM_OPENAI, Endpoints, free_port, running, server_command
from loadtest.capacity import WARMUP_CONCURRENCY, search_capacity, write_sweep_json
from loadtest.experiment import RunPlan, execute
from loadtest.plots import plot_sweep
from loadtest.runner import Scorer, Target
from loadtest.summary import Summary
from loadtest.workload import WorkloadSpec

READY_TIMEOUT_S = 300.0


@contextlib.asynccontextmanager
async def scorer_for(system: str, endpoints: Endpoints, model: Path, prompts: Path) -> AsyncIterator[Scorer]:
    """A ready scorer for the running system."""
    if system == VLLM_OPENAI:
        from loadtest.bench.vllm_http import VllmScoringScorer

        async with VllmScoringScorer.for_model(f"http://{endpoints.address}", model, prompts) as scorer:
            await scorer.wait_until_ready(READY_TIMEOUT_S)
            yield scorer
        return
    async with Target(endpoints.address).client() as client:
        await client.wait_until_serving(READY_TIMEOUT_S)
        yield client


@dataclass(frozen=True)
class SideBySideSettings:
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


async def _measure_system(system: str, endpoints: Endpoints, settings: SideBySideSettings) -> SystemResult:
    base_dir = settings.out / system
    metrics = None if system == VLLM_OPENAI else f"http://127.0.0.1:{endpoints.metrics_port}/metrics"
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


def measure_system(system: str, settings: SideBySideSettings) -> SystemResult:
    endpoints = Endpoints(free_port(), free_port())
    command = server_command(system, endpoints, settings.model)
    with running(command, settings.out / system / "server.log"):
        return asyncio.run(_measure_system(system, endpoints, settings))


def compute_limit(settings: SideBySideSettings, sample: int = 200) -> ComputeLimit:
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
