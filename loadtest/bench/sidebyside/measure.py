"""The systems of a side-by-side run measured: each started, warmed up, its
capacity searched (bad steps and the capacity confirmed), then repeats at
that capacity, of the saturation throughput with the p99 at fractions of
it, and at the common fixed rate; and the compute limit of the workload on
this machine.

One system after another (`measure_system`), or interleaved
(`measure_interleaved`): every server started at once, and their runs
taking turns, one window each in rotation, so that a machine whose speed
drifts over the half hour of a run (a shared VM's neighbours) slows every
system alike instead of the one measured at the time. A turn is one run:
the drain pause, then the load; nothing else of the run (no warm-up, no
plot) happens while another system's load is on. Only one load is ever on,
and the idle servers cost next to nothing (vLLM's idle worker polls at
about 1% of a core), but all must fit in memory at once.

Every run gets a fresh seed (fresh members, so no repeat rides on the
previous one's prefix cache) and its own directory of files, host_cost.json
among them: the CPU seconds the server process, each of its descendants and
the load generator spent over the load (loadtest.host_cost), and per OK
candidate.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from loadtest.bench.sidebyside.results import ComputeLimit, SystemResult
from loadtest.bench.sidebyside.systems import (
    VLLM_OPENAI, Endpoints, free_ports, over_http, running, server_command,
)
from loadtest.capacity import (
    DEFAULT_CONFIRM, WARMUP_CONCURRENCY, RateVerdict, search_capacity, write_sweep_json,
)
from loadtest.experiment import RunPlan, execute
from loadtest.host_cost import (
    LOAD_GENERATOR, SERVER, CpuMeter, per_candidate, resident_bytes, write_host_cost_json,
)
from loadtest.http_client import BrewHttpScorer
from loadtest.plots import plot_sweep
from loadtest.runner import Scorer, Target, Transport
from loadtest.saturation import DEFAULT_FRACTIONS, Saturation, measure_saturation, saturation_callers
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
    if over_http(system):
        async with BrewHttpScorer(f"http://{endpoints.http_address}") as http:
            await http.wait_until_ready(READY_TIMEOUT_S)
            yield http
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
    confirm: int = DEFAULT_CONFIRM  # extra windows that confirm a bad step or the capacity
    saturation_callers: int | None = None  # None: loadtest.saturation.saturation_callers
    fractions: tuple[float, ...] = DEFAULT_FRACTIONS  # of the saturation requests/s
    quantized_model: Path | None = None  # the checkpoint of the SYSTEM+int8-w8a8 systems (brew quantize)

    def callers(self, capacity_rate: float | None) -> int:
        """The closed-loop callers of the saturation runs, given the capacity found."""
        if self.saturation_callers is not None:
            return self.saturation_callers
        return saturation_callers(sum(self.workload.candidates) / 2, capacity_rate, self.timeout_s)


@dataclass(frozen=True)
class Measured:
    """One run: its summary and the CPU seconds per OK candidate of each process."""

    summary: Summary
    cpu_s_per_candidate: dict[str, float]


@dataclass
class _Runs:
    """The runs of one system: each after a pause, with a fresh seed, in its
    own directory, with the CPU its processes and the load generator spent."""

    system: str
    base: RunPlan
    scorer: Scorer
    server_pid: int
    pause_s: float
    turn: asyncio.Lock  # held for each run; shared by interleaved systems, which it serializes
    seeds: Iterator[int] = field(default_factory=lambda: itertools.count(1))
    windows: Iterator[int] = field(default_factory=itertools.count)  # the search's windows, numbered

    async def run(self, label: str, rate: float | None = None, callers: int | None = None) -> Measured:
        """Open-loop at `rate`, or closed-loop with `callers`."""
        plan = replace(self.base, rate=rate, concurrency=callers, seed=next(self.seeds),
                       out_dir=self.base.out_dir / label)
        async with self.turn:
            # An overloaded run leaves work behind (the naive engine cannot
            # abort a forward pass): let it drain before the next one starts.
            await asyncio.sleep(self.pause_s)
            meter = CpuMeter({SERVER: self.server_pid}, {LOAD_GENERATOR: os.getpid()})
            summary = await execute(plan, self.scorer, meter)
            write_host_cost_json(meter.spent, summary.ok_candidates, plan.out_dir / "host_cost.json")
        cpu = per_candidate(meter.spent, summary.ok_candidates)
        load = f"rate {rate:7.2f}/s" if rate is not None else f"{callers:4d} callers "
        print(f"{self.system:12} {label:28} {load}  {summary.candidates_per_s:8.1f} cand/s  "
              f"p99 {summary.p99_ms or float('nan'):8.1f} ms  cpu {sum(cpu.values()) * 1000:6.2f} ms/cand  "
              f"errors {dict(summary.errors) or '-'}", flush=True)
        return Measured(summary, cpu)

    async def window(self, rate: float) -> Summary:
        """One window of the capacity search."""
        return (await self.run(f"search-{next(self.windows):02d}-rate-{rate:g}", rate)).summary

    async def saturation(self, repeat: int, callers: int, fractions: tuple[float, ...]) -> Saturation:
        async def closed_loop(n: int) -> Summary:
            return (await self.run(f"saturation-{repeat}-callers-{n}", callers=n)).summary

        async def open_loop(rate: float) -> Summary:
            return (await self.run(f"saturation-{repeat}-rate-{rate:.3g}", rate)).summary

        return await measure_saturation(closed_loop, open_loop, callers, fractions)


def _fraction_figures(saturations: list[Saturation], fractions: tuple[float, ...]
                      ) -> tuple[list[list[float]], list[list[float | None]]]:
    """(rates, p99s) per fraction, one entry per repeat that reached it."""
    rates: list[list[float]] = [[] for _ in fractions]
    p99s: list[list[float | None]] = [[] for _ in fractions]
    for saturation in saturations:
        for index, point in enumerate(saturation.points):
            rates[index].append(point.rate)
            p99s[index].append(point.summary.p99_ms)
    return rates, p99s


def _system_result(system: str, settings: SideBySideSettings, verdict: RateVerdict | None,
                   at_capacity: list[Measured], callers: int, saturations: list[Saturation],
                   fixed: list[Measured]) -> SystemResult:
    fraction_rates, fraction_p99s = _fraction_figures(saturations, settings.fractions)
    return SystemResult(
        system=system,
        capacity_rate=verdict.rate if verdict else None,
        capacity_candidates_per_s=[m.summary.candidates_per_s for m in at_capacity],
        capacity_p99_ms=[m.summary.p99_ms for m in at_capacity],
        fixed_rate=settings.fixed_rate,
        fixed_candidates_per_s=[m.summary.candidates_per_s for m in fixed],
        fixed_p99_ms=[m.summary.p99_ms for m in fixed],
        fixed_errors=[dict(m.summary.errors) for m in fixed],
        capacity_windows=len(verdict.windows) if verdict else 0,
        capacity_good_windows=verdict.good_windows if verdict else 0,
        capacity_cpu_s_per_candidate=[m.cpu_s_per_candidate for m in at_capacity],
        fixed_cpu_s_per_candidate=[m.cpu_s_per_candidate for m in fixed],
        saturation_callers=callers,
        saturation_requests_per_s=[s.requests_per_s for s in saturations],
        saturation_candidates_per_s=[s.candidates_per_s for s in saturations],
        saturation_p99_ms=[s.p99_ms for s in saturations],
        fractions=list(settings.fractions),
        fraction_rates=fraction_rates,
        fraction_p99_ms=fraction_p99s,
    )


async def _measure_system(system: str, endpoints: Endpoints, settings: SideBySideSettings, server_pid: int,
                          turn: asyncio.Lock, everyone_ready: asyncio.Barrier) -> SystemResult:
    """Measure one running system; each run (and the warm-up, and the
    sweep's files) under `turn`, the first only once `everyone_ready` says
    every system sharing the turn can answer."""
    base_dir = settings.out / system
    metrics = None if system == VLLM_OPENAI else f"http://127.0.0.1:{endpoints.metrics_port}/metrics"
    target = (Target(endpoints.http_address, transport=Transport.HTTP) if over_http(system)
              else Target(endpoints.address))
    base = RunPlan(target=target, out_dir=base_dir, rate=settings.start_rate,
                   duration_s=settings.duration_s, workload=settings.workload, slo_s=settings.slo_s,
                   timeout_s=settings.timeout_s, metrics_urls=(metrics,) if metrics else (), ready_timeout_s=0,
                   progress=False)
    repeats = range(settings.repeats)
    async with scorer_for(system, endpoints, settings.model, settings.prompts) as scorer:
        await everyone_ready.wait()  # no load while a server is still starting
        runs = _Runs(system, base, scorer, server_pid, settings.pause_s, turn)
        async with turn:
            # Warm-up at saturation, never reported: the first run at high load
            # otherwise pays for kernels and buffers of batch shapes not seen yet
            # (measured: a p99 two to three times that of the same rate later).
            await asyncio.sleep(settings.pause_s)
            await execute(replace(base, rate=None, concurrency=WARMUP_CONCURRENCY, seed=0,
                                  out_dir=base_dir / "warmup"), scorer)
            resident = resident_bytes(server_pid)  # weights, KV cache and buffers, warm
        sweep = await search_capacity(runs.window, settings.start_rate, confirm=settings.confirm)
        async with turn:  # a chart costs CPU: never while another system is loaded
            write_sweep_json(sweep, base_dir / "sweep.json")
            plot_sweep(sweep, settings.slo_s, base_dir / "sweep.png")
        verdict = sweep.capacity_verdict
        at_capacity = [await runs.run(f"capacity-{i}", verdict.rate) for i in repeats] if verdict else []
        callers = settings.callers(verdict.rate if verdict else None)
        saturations = [await runs.saturation(i, callers, settings.fractions) for i in repeats] if callers else []
        fixed = [await runs.run(f"fixed-{i}", settings.fixed_rate) for i in repeats]
    return replace(_system_result(system, settings, verdict, at_capacity, callers, saturations, fixed),
                   resident_mib=resident / (1 << 20) if resident else None)


async def _measure_all(servers: Sequence[tuple[str, Endpoints, int]], settings: SideBySideSettings
                       ) -> list[SystemResult]:
    """Every (system, endpoints, server pid) measured concurrently, their
    runs taking turns: asyncio's lock wakes its waiters first come, first
    served, so the systems' runs follow each other in rotation."""
    turn, everyone_ready = asyncio.Lock(), asyncio.Barrier(len(servers))
    return list(await asyncio.gather(*(
        _measure_system(system, endpoints, settings, pid, turn, everyone_ready)
        for system, endpoints, pid in servers)))


def measure_system(system: str, settings: SideBySideSettings) -> SystemResult:
    """One system alone: started, measured, stopped."""
    return measure_interleaved([system], settings)[0]


def measure_interleaved(systems: Sequence[str], settings: SideBySideSettings) -> list[SystemResult]:
    """Every system started at once and measured with their runs taking
    turns (see the module docstring), then all stopped."""
    ports = iter(free_ports(3 * len(systems)))
    with contextlib.ExitStack() as stack:
        servers = []
        for system in systems:
            endpoints = Endpoints(next(ports), next(ports), next(ports))
            command = server_command(system, endpoints, settings.model, settings.prompts, settings.quantized_model)
            server = stack.enter_context(running(command, settings.out / system / "server.log"))
            servers.append((system, endpoints, server.pid))
        return asyncio.run(_measure_all(servers, settings))


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
