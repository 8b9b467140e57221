"""`brew loadtest cluster`: every arm measured, each run on a freshly
started cluster, then cluster.json and cluster.md under --out. The
benchmark itself: loadtest.bench.cluster."""

from __future__ import annotations

import argparse
import asyncio
import json
from dataclasses import asdict, replace
from pathlib import Path

from loadtest.bench.cluster.report import CLUSTER_ROOT, Arm, ArmRun, arm_results, arms, markdown_report
from loadtest.bench.cluster.systems import running_cluster
from loadtest.capacity import WARMUP_CONCURRENCY
from loadtest.experiment import RunPlan, execute
from loadtest.host_cost import CpuMeter
from loadtest.runner import Target
from loadtest.summary import format_summary
from loadtest.workload import WorkloadSpec

WARMUP_SEED_OFFSET = 1_000_000  # warm-up members never met in the measured run


def _cluster_args(args: argparse.Namespace, arm: Arm) -> list[str]:
    flags = ["--replicas", str(arm.replicas), "--engine", args.engine, "--log-level", "warning",
             "--envoy-log-level", "error"]
    for flag, value in (("--config", args.config), ("--model", args.model)):
        if value is not None:
            flags += [flag, str(value)]
    return flags


def _plan(args: argparse.Namespace, arm: Arm, target: str, metrics_urls: tuple[str, ...], out: Path) -> RunPlan:
    return RunPlan(
        target=Target(target, member_header=arm.member_header), out_dir=out,
        rate=args.rate, concurrency=None if args.rate else args.concurrency, duration_s=args.duration,
        workload=WorkloadSpec(tasks=args.tasks, candidates=args.candidates, history=args.history,
                              members=args.members, repeat_share=args.repeat_share),
        seed=args.seed, timeout_s=args.timeout, slo_s=args.slo_ms / 1000.0, metrics_urls=metrics_urls,
        progress=False,
    )


def _measure(args: argparse.Namespace, arm: Arm, repeat: int) -> ArmRun:
    out = args.out / f"{arm.replicas}-{arm.routing.replace(' ', '-')}" / f"repeat-{repeat}"
    print(f"{arm.label}, repeat {repeat + 1}/{args.repeats}: starting brew cluster", flush=True)
    with running_cluster(out / "cluster", *_cluster_args(args, arm)) as cluster:
        metrics = tuple(replica.metrics_url for replica in cluster.replicas().values())
        plan = _plan(args, arm, cluster.target, metrics, out)
        if args.warmup > 0:
            callers = args.concurrency or WARMUP_CONCURRENCY
            asyncio.run(execute(replace(plan, rate=None, concurrency=callers, duration_s=args.warmup,
                                        max_requests=None, seed=args.seed + WARMUP_SEED_OFFSET,
                                        out_dir=out / "warmup", plots=False)))
        meter = CpuMeter({CLUSTER_ROOT: cluster.process.pid})
        summary = asyncio.run(execute(plan, around_load=meter))
    print(format_summary(summary), flush=True)
    return ArmRun.of(arm, repeat, summary, meter.spent)


def cluster_command(args: argparse.Namespace) -> int:
    """Measure every arm (args.replicas) args.repeats times; write cluster.json and cluster.md."""
    runs = [_measure(args, arm, repeat) for repeat in range(args.repeats) for arm in arms(args.replicas)]
    settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "cluster.json").write_text(json.dumps({"settings": settings, "runs": [asdict(r) for r in runs]},
                                                      indent=2) + "\n", encoding="utf-8")
    load = f"open-loop at {args.rate:g} requests/s" if args.rate else f"closed-loop, {args.concurrency} callers"
    notes = (f"Engine {args.engine}; {load}, {args.duration:g} s per run after {args.warmup:g} s of warm-up; "
             f"{args.members} members, repeat share {args.repeat_share:g}, candidates {args.candidates[0]}-"
             f"{args.candidates[1]}, history {args.history[0]}-{args.history[1]}; medians of {args.repeats} "
             "repeat(s), each on a freshly started cluster.")
    report = markdown_report(arm_results(runs), notes)
    (args.out / "cluster.md").write_text(report, encoding="utf-8")
    print(report)
    print(f"files in {args.out}")
    return 0
