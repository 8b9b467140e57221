"""`python -m loadtest` (also `brew loadtest`): load one replica, or find its capacity.

    python -m loadtest run --target 127.0.0.1:50051 --metrics-url http://127.0.0.1:9400/metrics \\
        --rate 20 --arrivals poisson --duration 30 --candidates 16 --slo-ms 500 --out results/run1
    python -m loadtest run --concurrency 8 --max-requests 500 ...        (closed-loop)
    python -m loadtest capacity --start-rate 5 --duration 20 ...          (double, then bisect)
    python -m loadtest capacity --rates 5,10,20,40 ...                    (a given sweep)

Only argparse lives here; the work is imported when a command runs, so
`brew --help` stays fast.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from loadtest.schedule import Arrivals

if TYPE_CHECKING:
    from loadtest.experiment import RunPlan


# --- argument types: each says what it expected -------------------------------

def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return value


def int_range(text: str) -> tuple[int, int]:
    """'16' -> (16, 16); '8-32' -> (8, 32)."""
    lo, _, hi = text.partition("-")
    try:
        bounds = (int(lo), int(hi or lo))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected N or LO-HI, got {text!r}") from None
    if not 0 <= bounds[0] <= bounds[1]:
        raise argparse.ArgumentTypeError(f"expected 0 <= LO <= HI, got {text!r}")
    return bounds


def task_weights(text: str) -> dict[str, float]:
    """'job_apply=1,feed_engagement=2' (a bare name weighs 1)."""
    weights = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, _, weight = part.partition("=")
        try:
            weights[name.strip()] = float(weight) if weight else 1.0
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected TASK=WEIGHT, got {part!r}") from None
    if not weights:
        raise argparse.ArgumentTypeError("expected at least one task, e.g. job_apply=1")
    return weights


def rate_list(text: str) -> list[float]:
    """'5,10,20' -> [5.0, 10.0, 20.0]."""
    return [_positive_float(part) for part in text.split(",") if part.strip()]


def _share(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a share in [0, 1], got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a share in [0, 1], got {text!r}")
    return value


# --- parser -----------------------------------------------------------------------

def _add_common(parser: argparse.ArgumentParser) -> None:
    where = parser.add_argument_group("target")
    where.add_argument("--target", default="127.0.0.1:50051", help="host:port of the one server to load "
                       "(default: %(default)s)")
    where.add_argument("--metrics-url", help="the server's /metrics URL, scraped before and after for its "
                       "view (batch size, queue time, cache hits, rejections), "
                       "e.g. http://127.0.0.1:9400/metrics")
    where.add_argument("--tls-root-cert", type=Path, help="PEM root certificate: connect with TLS")
    where.add_argument("--tls-server-name", help="server name to verify when it differs from --target's host")
    where.add_argument("--auth-token-env", metavar="VAR",
                       help="send 'authorization: Bearer <token>' with the token read from this variable")
    where.add_argument("--ready-timeout", type=float, default=60.0,
                       help="wait this long for health SERVING before starting; 0 skips "
                            "(default: %(default)s s)")

    load = parser.add_argument_group("load")
    load.add_argument("--arrivals", type=Arrivals, choices=list(Arrivals), default=Arrivals.POISSON,
                      help="open-loop arrival process (default: %(default)s)")
    load.add_argument("--burstiness", type=_positive_float, default=4.0,
                      help="gamma arrivals: CV^2 of the gaps; 1 is Poisson (default: %(default)s)")
    load.add_argument("--duration", type=_positive_float,
                      help="seconds of load per run (default: 30 for run, 20 per capacity step; "
                           "none with --max-requests)")
    load.add_argument("--max-requests", type=_positive_int, help="at most this many requests per run")
    load.add_argument("--timeout", type=_positive_float, default=2.0,
                      help="per-request deadline in seconds (default: %(default)s)")
    load.add_argument("--max-outstanding", type=_positive_int, default=1000,
                      help="open-loop cap on unanswered requests; over it a request is recorded as "
                           "CLIENT_REJECTED (default: %(default)s)")

    shape = parser.add_argument_group("workload (synthetic unless --replay)")
    shape.add_argument("--candidates", type=int_range, default=(16, 16), metavar="N|LO-HI",
                       help="candidates per request (default: 16)")
    shape.add_argument("--tasks", type=task_weights, default={"job_apply": 1.0}, metavar="TASK=W,...",
                       help="task mix by weight, one task per request (default: job_apply=1)")
    shape.add_argument("--members", type=_positive_int, default=100,
                       help="distinct members at most (default: %(default)s)")
    shape.add_argument("--repeat-share", type=_share, default=0.5,
                       help="share of requests reusing a member already sent: prefix-cache hits "
                            "(default: %(default)s)")
    shape.add_argument("--history", type=int_range, default=(12, 24), metavar="N|LO-HI",
                       help="history length of each member (default: 12-24)")
    shape.add_argument("--replay", type=Path, metavar="FILE.jsonl",
                       help="send these requests (one per line, proto JSON mapping) instead, cycling")

    report = parser.add_argument_group("report")
    report.add_argument("--slo-ms", type=_positive_float, default=500.0,
                        help="p99 latency objective in ms (default: %(default)s)")
    report.add_argument("--seed", type=int, default=0,
                        help="seeds the schedule and the workload (default: %(default)s)")
    report.add_argument("--out", type=Path,
                        help="output directory (default: runs/loadtest/<UTC time>, git-ignored)")
    report.add_argument("--no-progress", action="store_true", help="no progress bar")
    report.add_argument("--no-plots", action="store_true", help="skip the PNG plots")


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog or "python -m loadtest",
        description="Load-test one Brew replica: how many candidates/s it scores while p99 stays under "
                    "the SLO, and where it breaks. Writes summary.json, requests.jsonl and PNG plots.",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="one run: open-loop at --rate, or closed-loop with --concurrency")
    mode = run.add_mutually_exclusive_group(required=True)
    mode.add_argument("--rate", type=_positive_float, help="open-loop: requests per second")
    mode.add_argument("--concurrency", type=_positive_int,
                      help="closed-loop: this many callers, each sending when its last answer arrives")
    _add_common(run)
    run.set_defaults(command_run=_run)

    capacity = commands.add_parser("capacity", help="open-loop sweep: the highest rate within the SLO")
    rates = capacity.add_mutually_exclusive_group(required=True)
    rates.add_argument("--rates", type=rate_list, metavar="R1,R2,...", help="measure exactly these rates")
    rates.add_argument("--start-rate", type=_positive_float,
                       help="search: double from here until p99 > SLO or errors, then bisect")
    capacity.add_argument("--bisect-steps", type=int, default=3,
                          help="bisection steps (default: %(default)s)")
    capacity.add_argument("--max-brackets", type=_positive_int, default=10,
                          help="at most this many doubling/halving steps (default: %(default)s)")
    capacity.add_argument("--pause", type=float, default=2.0,
                          help="seconds between steps, for the server to drain (default: %(default)s)")
    capacity.add_argument("--warmup", type=float, default=15.0,
                          help="seconds of closed-loop load at saturation before the sweep, not reported: "
                               "the first loaded step would otherwise pay for batch shapes not seen yet; "
                               "0 skips (default: %(default)s)")
    _add_common(capacity)
    capacity.set_defaults(command_run=_capacity)
    return parser


# --- commands -------------------------------------------------------------------

def _plan(args: argparse.Namespace, default_duration: float) -> RunPlan:
    from loadtest.experiment import RunPlan
    from loadtest.runner import Target
    from loadtest.workload import WorkloadSpec

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
                      token=token),
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
        metrics_url=args.metrics_url,
        ready_timeout_s=args.ready_timeout,
        progress=not args.no_progress,
        plots=not args.no_plots,
    )


def _run(args: argparse.Namespace) -> int:
    from loadtest.experiment import execute
    from loadtest.summary import format_summary

    plan = _plan(args, default_duration=30.0)
    summary = asyncio.run(execute(plan))
    print(format_summary(summary))
    if plan.metrics_url is None:
        print("(no --metrics-url: the server's view was not recorded)")
    print(f"files in {plan.out_dir}")
    return 0


def _capacity(args: argparse.Namespace) -> int:
    from loadtest.capacity import WARMUP_CONCURRENCY, search_capacity, sweep_rates, write_sweep_json
    from loadtest.experiment import execute
    from loadtest.plots import plot_sweep
    from loadtest.summary import Summary

    base = _plan(argparse.Namespace(**{**vars(args), "rate": args.start_rate or args.rates[0]}),
                 default_duration=20.0)
    steps_run = 0

    async def measure(rate: float) -> Summary:
        nonlocal steps_run
        if steps_run and args.pause > 0:
            await asyncio.sleep(args.pause)
        # A new seed per step: fresh members, so no step rides on the prefix
        # cache warmed by the one before it.
        plan = replace(base, rate=rate, seed=base.seed + steps_run,
                       out_dir=base.out_dir / f"step-{steps_run:02d}-rate-{rate:g}")
        steps_run += 1
        summary = await execute(plan)
        p99 = "-" if summary.p99_ms is None else f"{summary.p99_ms:.1f}"
        errors = ", ".join(f"{code} {n}" for code, n in summary.errors.items()) or "no errors"
        print(f"rate {rate:8.2f}/s  {summary.candidates_per_s:9.1f} candidates/s  p99 {p99:>8} ms  {errors}",
              flush=True)
        return summary

    async def sweep():  # type: ignore[no-untyped-def]
        if args.warmup > 0:
            print(f"warm-up: {args.warmup:g} s closed-loop, {WARMUP_CONCURRENCY} callers (not reported)",
                  flush=True)
            await execute(replace(base, rate=None, concurrency=WARMUP_CONCURRENCY, duration_s=args.warmup,
                                  max_requests=None, out_dir=base.out_dir / "warmup", plots=False))
            await asyncio.sleep(args.pause)
        if args.rates:
            return await sweep_rates(measure, args.rates)
        return await search_capacity(measure, args.start_rate, max_brackets=args.max_brackets,
                                     bisect_steps=args.bisect_steps)

    result = asyncio.run(sweep())
    write_sweep_json(result, base.out_dir / "sweep.json")
    capacity = result.capacity
    if base.plots:
        plot_sweep(result, base.slo_s, base.out_dir / "sweep.png")
    if capacity is None:
        print(f"no rate met the SLO ({base.slo_s * 1000:g} ms p99, no errors): try a lower --start-rate")
    else:
        print(f"capacity: {capacity.rate:g} requests/s = "
              f"{capacity.summary.candidates_per_s:.1f} candidates/s at p99 {capacity.summary.p99_ms:.1f} ms "
              f"(SLO {base.slo_s * 1000:g} ms)")
    print(f"files in {base.out_dir}")
    return 0


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    try:
        return int(args.command_run(args))
    except ValueError as error:  # a plan or workload that cannot run: the message says why
        print(f"{parser.prog} {args.command}: error: {error}", file=sys.stderr)
        return 2
    except (TimeoutError, OSError) as error:  # server not SERVING, /metrics unreachable
        print(f"{parser.prog} {args.command}: error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
