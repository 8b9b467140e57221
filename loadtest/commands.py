"""The load generator's commands, from parsed options to files and a printed answer.

    run       one open-loop or closed-loop run (loadtest.experiment)
    capacity  a warm-up, then a rate sweep or a capacity search (loadtest.capacity),
              one run per step, each in its own directory; then the saturation
              throughput and the p99 at fractions of it (loadtest.saturation)

loadtest.cli parses the options and imports this module only when one of
these commands runs.
"""

from __future__ import annotations

import argparse
import asyncio
import os
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from loadtest.capacity import WARMUP_CONCURRENCY, search_capacity, sweep_rates, write_sweep_json
from loadtest.experiment import RunPlan, execute
from loadtest.plots import plot_sweep
from loadtest.runner import Target
from loadtest.saturation import format_saturation, measure_saturation, saturation_callers
from loadtest.schedule import Arrivals
from loadtest.summary import Summary, format_summary
from loadtest.workload import WorkloadSpec


def plan_from_args(args: argparse.Namespace, default_duration: float) -> RunPlan:
    """The plan of one run from `run`'s or `capacity`'s options; `default_duration`
    bounds it when neither --duration nor --max-requests does."""
    token = None
    if args.auth_token_env:
        token = os.environ.get(args.auth_token_env)
        if token is None:
            raise ValueError(f"--auth-token-env {args.auth_token_env}: that variable is not set")
    spec = WorkloadSpec(tasks=args.tasks, candidates=args.candidates, history=args.history,
                        members=args.members, repeat_share=args.repeat_share, seed=args.seed)
    duration = args.duration
    if duration is None and args.max_requests is None:
        duration = default_duration
    out = args.out or Path("runs") / "loadtest" / datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    return RunPlan(
        target=Target(args.target, tls_root_cert=args.tls_root_cert, tls_server_name=args.tls_server_name,
                      token=token, member_header=not args.no_member_header),
        out_dir=out,
        rate=getattr(args, "rate", None),
        concurrency=getattr(args, "concurrency", None),
        arrivals=args.arrivals,
        burstiness=args.burstiness if args.arrivals is Arrivals.GAMMA else 1.0,
        duration_s=duration,
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
    """One run: execute the plan, print its summary."""
    plan = plan_from_args(args, default_duration=30.0)
    summary = asyncio.run(execute(plan))
    print(format_summary(summary))
    if not plan.metrics_urls:
        print("(no --metrics-url: the server's view was not recorded)")
    print(f"files in {plan.out_dir}")
    return 0


def capacity_command(args: argparse.Namespace) -> int:
    """A warm-up, then a sweep over the given rates or a doubling and bisecting
    search, then (unless --saturation-callers 0) a closed-loop saturation run
    and open-loop runs at fractions of it; write sweep.json (and sweep.png),
    print the capacity and the saturation found."""
    base = plan_from_args(argparse.Namespace(**{**vars(args), "rate": args.start_rate or args.rates[0]}),
                          default_duration=20.0)
    steps_run = 0

    async def run_step(rate: float | None, callers: int | None = None) -> Summary:
        """One step: open-loop at `rate`, or closed-loop with `callers`."""
        nonlocal steps_run
        if steps_run and args.pause > 0:
            await asyncio.sleep(args.pause)
        # A new seed per step: fresh members, so no step rides on the prefix
        # cache warmed by the one before it.
        name = f"rate-{rate:g}" if rate is not None else f"callers-{callers}"
        plan = replace(base, rate=rate, concurrency=callers, seed=base.seed + steps_run,
                       out_dir=base.out_dir / f"step-{steps_run:02d}-{name}")
        steps_run += 1
        summary = await execute(plan)
        p99 = "-" if summary.p99_ms is None else f"{summary.p99_ms:.1f}"
        errors = ", ".join(f"{code} {n}" for code, n in summary.errors.items()) or "no errors"
        load = f"rate {rate:8.2f}/s" if rate is not None else f"{callers:5d} callers"
        print(f"{load}  {summary.candidates_per_s:9.1f} candidates/s  p99 {p99:>8} ms  {errors}", flush=True)
        return summary

    async def measure(rate: float) -> Summary:
        return await run_step(rate)

    async def closed_loop(callers: int) -> Summary:
        return await run_step(None, callers)

    async def sweep():  # type: ignore[no-untyped-def]
        if args.warmup > 0:
            print(f"warm-up: {args.warmup:g} s closed-loop, {WARMUP_CONCURRENCY} callers (not reported)",
                  flush=True)
            await execute(replace(base, rate=None, concurrency=WARMUP_CONCURRENCY, duration_s=args.warmup,
                                  max_requests=None, out_dir=base.out_dir / "warmup", plots=False))
            await asyncio.sleep(args.pause)
        if args.rates:
            found = await sweep_rates(measure, args.rates, confirm=args.confirm)
        else:
            found = await search_capacity(measure, args.start_rate, max_brackets=args.max_brackets,
                                          bisect_steps=args.bisect_steps, confirm=args.confirm)
        callers = args.saturation_callers
        if callers is None:
            knee = found.capacity_verdict
            callers = saturation_callers(sum(base.workload.candidates) / 2,
                                         None if knee is None else knee.rate, base.timeout_s)
        if not callers:
            return found, None
        print(f"saturation: {callers} closed-loop callers, then open-loop at "
              f"{', '.join(f'{f:.0%}' for f in args.fractions)} of the requests/s they sustained", flush=True)
        return found, await measure_saturation(closed_loop, measure, callers, args.fractions)

    result, saturation = asyncio.run(sweep())
    write_sweep_json(result, base.out_dir / "sweep.json", saturation)
    verdict = result.capacity_verdict
    if base.plots:
        plot_sweep(result, base.slo_s, base.out_dir / "sweep.png")
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
    print(f"files in {base.out_dir}")
    return 0
