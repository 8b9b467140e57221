"""The load generator's commands, from parsed options to files and a printed answer.

    run       one open-loop or closed-loop run (loadtest.experiment)
    capacity  a warm-up, then a rate sweep or a capacity search (loadtest.capacity),
              one run per step, each in its own directory; then the saturation
              throughput and the p99 at fractions of it (loadtest.saturation)
    overload  a warm-up, the capacity (given or searched), then one run at each
              multiple of it past capacity (loadtest.overload)
    soak      one long run at a steady rate, the server's memory sampled (loadtest.soak)

loadtest.cli parses the options and imports this module only when one of
these commands runs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
from dataclasses import replace
from pathlib import Path

from loadtest.capacity import WARMUP_CONCURRENCY, Sweep, search_capacity, sweep_rates, write_sweep_json
from loadtest.experiment import RunPlan, execute
from loadtest.host_cost import (
    LOAD_GENERATOR,
    SERVER,
    CpuMeter,
    format_host_cost,
    read_stat,
    write_host_cost_json,
)
from loadtest.overload import format_overload, sweep_overload, write_overload_json
from loadtest.plots import plot_overload, plot_soak, plot_sweep
from loadtest.runner import Target, Transport
from loadtest.saturation import Saturation, format_saturation, measure_saturation, saturation_callers
from loadtest.schedule import Arrivals
from loadtest.soak import MemorySampler, SoakResult, format_soak, write_soak_json
from loadtest.summary import Summary, format_summary
from loadtest.workload import WorkloadSpec


def plan_from_args(args: argparse.Namespace) -> RunPlan:
    """The plan of one run from the options of `run`, `capacity`, `overload`
    or `soak`, their defaults resolved (loadtest.flags.resolve_defaults)."""
    token = None
    if args.auth_token_env:
        token = os.environ.get(args.auth_token_env)
        if token is None:
            raise ValueError(f"--auth-token-env {args.auth_token_env}: that variable is not set")
    spec = WorkloadSpec(tasks=args.tasks, candidates=args.candidates, history=args.history,
                        members=args.members, repeat_share=args.repeat_share, seed=args.seed)
    return RunPlan(
        target=Target(args.target, tls_root_cert=args.tls_root_cert, tls_server_name=args.tls_server_name,
                      token=token, member_header=not args.no_member_header, transport=Transport(args.protocol)),
        out_dir=args.out,
        rate=getattr(args, "rate", None),
        concurrency=getattr(args, "concurrency", None),
        arrivals=args.arrivals,
        burstiness=args.burstiness if args.arrivals is Arrivals.GAMMA else 1.0,
        duration_s=args.duration,
        max_requests=args.max_requests,
        workload=spec,
        replay=args.replay,
        timeout_s=args.timeout,
        slo_s=args.slo_ms / 1000.0,
        seed=args.seed,
        max_outstanding=args.max_outstanding,
        metrics_urls=tuple(args.metrics_url or ()),
        ready_timeout_s=args.ready_timeout,
        progress=not args.no_progress,
        plots=not args.no_plots,
    )


def run_command(args: argparse.Namespace) -> int:
    """One run: execute the plan, print its summary (and, with --server-pid,
    the host cost of each process)."""
    plan = plan_from_args(args)
    meter = CpuMeter({SERVER: args.server_pid}, {LOAD_GENERATOR: os.getpid()}) if args.server_pid else None
    summary = asyncio.run(execute(plan, around_load=meter))
    print(format_summary(summary))
    if meter is not None:
        write_host_cost_json(meter.spent, summary.ok_candidates, plan.out_dir / "host_cost.json")
        print(format_host_cost(meter.spent, summary.ok_candidates))
    if not plan.metrics_urls:
        print("(no --metrics-url: the server's view was not recorded)")
    print(f"files in {plan.out_dir}")
    return 0


class Steps:
    """The runs of a sweep: open-loop at a rate or closed-loop with a number
    of callers, each in its own directory under `out_dir` and with its own
    seed (numbered from `first`, so a second sweep after a first one meets
    fresh members), with a pause between them."""

    def __init__(self, base: RunPlan, out_dir: Path, pause: float, first: int = 0) -> None:
        self._base = base
        self._out_dir = out_dir
        self._pause = pause
        self._count = first

    @property
    def count(self) -> int:
        return self._count

    async def warm_up(self, seconds: float) -> None:
        """Saturating closed-loop load, not reported (see `capacity --warmup`)."""
        print(f"warm-up: {seconds:g} s closed-loop, {WARMUP_CONCURRENCY} callers (not reported)", flush=True)
        await execute(replace(self._base, rate=None, concurrency=WARMUP_CONCURRENCY, duration_s=seconds,
                              max_requests=None, out_dir=self._out_dir / "warmup", plots=False))
        await asyncio.sleep(self._pause)

    async def measure(self, rate: float) -> Summary:
        """One open-loop run at `rate` requests/s."""
        return await self._run(rate, None)

    async def closed_loop(self, callers: int) -> Summary:
        """One closed-loop run with `callers` callers."""
        return await self._run(None, callers)

    async def _run(self, rate: float | None, callers: int | None) -> Summary:
        if self._count and self._pause > 0:
            await asyncio.sleep(self._pause)
        # A new seed per step: fresh members, so no step rides on the prefix
        # cache warmed by the one before it.
        name = f"rate-{rate:g}" if rate is not None else f"callers-{callers}"
        plan = replace(self._base, rate=rate, concurrency=callers, seed=self._base.seed + self._count,
                       out_dir=self._out_dir / f"step-{self._count:02d}-{name}")
        self._count += 1
        summary = await execute(plan)
        p99 = "-" if summary.p99_ms is None else f"{summary.p99_ms:.1f}"
        errors = ", ".join(f"{code} {n}" for code, n in summary.errors.items()) or "no errors"
        load = f"rate {rate:8.2f}/s" if rate is not None else f"{callers:5d} callers"
        print(f"{load}  {summary.candidates_per_s:9.1f} candidates/s  p99 {p99:>8} ms  {errors}", flush=True)
        return summary


def _base_plan(args: argparse.Namespace, rate: float) -> RunPlan:
    return plan_from_args(argparse.Namespace(**{**vars(args), "rate": rate}))


async def _search(args: argparse.Namespace, steps: Steps) -> Sweep:
    return await search_capacity(steps.measure, args.start_rate, max_brackets=args.max_brackets,
                                 bisect_steps=args.bisect_steps, confirm=args.confirm)


def capacity_command(args: argparse.Namespace) -> int:
    """A warm-up, then a sweep over the given rates or a doubling and bisecting
    search, then (unless --saturation-callers 0) a closed-loop saturation run
    and open-loop runs at fractions of it; write sweep.json (and sweep.png),
    print the capacity and the saturation found."""
    base = _base_plan(args, args.rates[0] if args.rates else args.start_rate)
    steps = Steps(base, base.out_dir, args.pause)

    async def sweep() -> tuple[Sweep, Saturation | None]:
        if args.warmup > 0:
            await steps.warm_up(args.warmup)
        if args.rates:
            found = await sweep_rates(steps.measure, args.rates, confirm=args.confirm)
        else:
            found = await _search(args, steps)
        callers = args.saturation_callers
        if callers is None:
            knee = found.capacity_verdict
            callers = saturation_callers(sum(base.workload.candidates) / 2,
                                         None if knee is None else knee.rate, base.timeout_s)
        if not callers:
            return found, None
        print(f"saturation: {callers} closed-loop callers, then open-loop at "
              f"{', '.join(f'{f:.0%}' for f in args.fractions)} of the requests/s they sustained", flush=True)
        return found, await measure_saturation(steps.closed_loop, steps.measure, callers, args.fractions)

    result, saturation = asyncio.run(sweep())
    _report_capacity(result, base, saturation=saturation)
    print(f"files in {base.out_dir}")
    return 0


def _report_capacity(result: Sweep, base: RunPlan, out_dir: Path | None = None,
                     saturation: Saturation | None = None) -> None:
    """sweep.json (and sweep.png) in `out_dir`, and the capacity (and saturation) found, printed."""
    out_dir = out_dir or base.out_dir
    write_sweep_json(result, out_dir / "sweep.json", saturation)
    verdict = result.capacity_verdict
    if base.plots:
        plot_sweep(result, base.slo_s, out_dir / "sweep.png")
    if verdict is None:
        print(f"no rate met the SLO ({base.slo_s * 1000:g} ms p99, no errors): try a lower --start-rate")
    else:
        capacity = verdict.median
        print(f"capacity: {capacity.rate:g} requests/s = "
              f"{capacity.summary.candidates_per_s:.1f} candidates/s at p99 {capacity.summary.p99_ms:.1f} ms "
              f"(SLO {base.slo_s * 1000:g} ms; "
              f"{verdict.good_windows} of {len(verdict.windows)} windows good)")
    if saturation is not None:
        print(format_saturation(saturation))


def overload_command(args: argparse.Namespace) -> int:
    """A warm-up, the capacity (--capacity, or a search from --start-rate into
    capacity/), then one run per multiple of it; write overload.json and
    overload.png, print the table and whether goodput held."""
    base = _base_plan(args, args.capacity if args.capacity is not None else args.start_rate)

    async def sweep():  # type: ignore[no-untyped-def]
        if args.warmup > 0:
            await Steps(base, base.out_dir, args.pause).warm_up(args.warmup)
        capacity, source, first = args.capacity, "given", 0
        if capacity is None:
            print(f"capacity search from {args.start_rate:g} requests/s", flush=True)
            search = Steps(base, base.out_dir / "capacity", args.pause)
            searched = await _search(args, search)
            _report_capacity(searched, base, base.out_dir / "capacity")
            if searched.capacity is None:
                return None
            capacity, source, first = searched.capacity.rate, "searched", search.count
        print(f"overload sweep: {', '.join(f'{m:g}x' for m in args.multiples)} of {capacity:g} requests/s",
              flush=True)
        steps = Steps(base, base.out_dir, args.pause, first=first)
        return await sweep_overload(steps.measure, capacity, args.multiples, source)

    result = asyncio.run(sweep())
    if result is None:
        print(f"files in {base.out_dir}")
        return 1
    write_overload_json(result, base.out_dir / "overload.json")
    if base.plots:
        plot_overload(result, base.out_dir / "overload.png")
    print(format_overload(result))
    print(f"files in {base.out_dir}")
    return 0


def soak_command(args: argparse.Namespace) -> int:
    """One open-loop run at --rate for --duration (default 30 min), the
    memory of --server-pid and its descendants sampled; write soak.json and
    soak.png, print the verdict; exit 1 unless it passed."""
    if read_stat(args.server_pid) is None:
        print(f"--server-pid {args.server_pid}: no such process", flush=True)
        return 2
    plan = plan_from_args(args)
    sampler = MemorySampler(args.server_pid, args.sample_interval)

    async def run() -> Summary:
        sampling = asyncio.create_task(sampler.run())
        try:
            return await execute(plan)
        finally:
            sampling.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sampling

    summary = asyncio.run(run())
    result = SoakResult(rate=args.rate, duration_s=summary.wall_s, settle_s=args.settle, window_s=args.window,
                        summary=summary, samples=sampler.samples)
    write_soak_json(result, plan.out_dir / "soak.json")
    if plan.plots:
        plot_soak(result, plan.out_dir / "soak.png")
    print(format_summary(summary))
    print(format_soak(result))
    print(f"files in {plan.out_dir}")
    return 0 if result.passed else 1
