"""One load-test run from plan to files: the glue between the pieces.

`execute(plan)` waits for the server to report SERVING, scrapes its
/metrics (every page given: a cluster's replicas), draws the workload and
the schedule before the clock starts (so request generation never delays a
send), runs the load, scrapes again, and writes into `plan.out_dir`:

    requests.jsonl              one record per request (loadtest.records)
    summary.json                the run's summary (loadtest.summary)
    latency_over_time.png       latency against intended send time, by status
    latency_percentiles.png     percentile curves, both latency definitions

The plan's seed seeds both the arrival schedule and the synthetic workload,
so one plan always sends the same requests at the same offsets.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import sys
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from brew.v1 import ranking_pb2 as pb
from loadtest import plots
from loadtest.records import ok_latency_histograms, write_records_jsonl
from loadtest.http_client import BrewHttpScorer
from loadtest.runner import RunResult, Scorer, ServedScorer, Target, Transport, run_closed_loop, run_open_loop
from loadtest.schedule import Arrivals, arrival_offsets
from loadtest.summary import (
    RunInfo, ServerView, Summary, scrape_metrics, server_view, summarize, write_summary_json,
)
from loadtest.workload import ReplayWorkload, SyntheticWorkload, Workload, WorkloadSpec


@dataclass(frozen=True)
class RunPlan:
    """Everything one run needs. Open-loop with `rate`, closed-loop with `concurrency`."""

    target: Target
    out_dir: Path
    rate: float | None = None
    concurrency: int | None = None
    arrivals: Arrivals = Arrivals.POISSON
    burstiness: float = 1.0
    duration_s: float | None = 30.0
    max_requests: int | None = None
    workload: WorkloadSpec = field(default_factory=WorkloadSpec)
    replay: Path | None = None  # replay this JSONL file instead of the synthetic workload
    timeout_s: float = 2.0
    slo_s: float = 0.5
    seed: int = 0
    max_outstanding: int = 1000
    metrics_urls: tuple[str, ...] = ()  # /metrics pages, summed (a cluster's replicas)
    ready_timeout_s: float = 60.0  # wait for health SERVING first; 0 skips the check
    progress: bool = True
    plots: bool = True

    def __post_init__(self) -> None:
        if (self.rate is None) == (self.concurrency is None):
            raise ValueError("give either a rate (open-loop) or a concurrency (closed-loop), not both")
        if self.duration_s is None and self.max_requests is None:
            raise ValueError("a run needs a bound: a duration, a maximum number of requests, or both")
        if not self.timeout_s > 0:
            raise ValueError(f"timeout must be positive seconds, got {self.timeout_s}")
        if not self.slo_s > 0:
            raise ValueError(f"SLO must be positive, got {self.slo_s * 1000:g} ms")

    @property
    def open_loop(self) -> bool:
        return self.rate is not None

    def run_info(self) -> RunInfo:
        workload: dict[str, object] = (
            {"replay": str(self.replay)} if self.replay
            else {**asdict(self.workload), "tasks": dict(self.workload.tasks), "seed": self.seed}
        )
        return RunInfo(
            mode="open-loop" if self.open_loop else "closed-loop",
            target=self.target.address,
            timeout_s=self.timeout_s,
            seed=self.seed,
            member_header=self.target.member_header,
            protocol=self.target.transport.value,
            arrivals=self.arrivals.value if self.open_loop else None,
            rate=self.rate,
            burstiness=self.burstiness if self.open_loop else None,
            concurrency=self.concurrency,
            duration_s=self.duration_s,
            max_requests=self.max_requests,
            workload=workload,
        )


def make_workload(plan: RunPlan) -> Workload:
    if plan.replay is not None:
        return ReplayWorkload(plan.replay)
    return SyntheticWorkload(replace(plan.workload, seed=plan.seed))


def _warn(message: str) -> None:
    print(f"loadtest: {message}", file=sys.stderr)


async def _scrape(urls: tuple[str, ...]) -> list[str]:
    texts = []
    for url in urls:
        try:
            texts.append(await asyncio.to_thread(scrape_metrics, url))
        except OSError as error:
            raise OSError(f"cannot read the server's metrics at {url}: {error}") from error
    return texts


async def _load(plan: RunPlan, client: Scorer, stream: Iterator[pb.ScoreCandidatesRequest]) -> RunResult:
    if plan.open_loop:
        assert plan.rate is not None
        offsets = arrival_offsets(plan.arrivals, plan.rate, duration=plan.duration_s,
                                  count=plan.max_requests, burstiness=plan.burstiness, seed=plan.seed)
        requests = list(itertools.islice(stream, len(offsets)))  # drawn before the clock starts
        return await run_open_loop(client, requests, offsets, timeout_s=plan.timeout_s,
                                   max_outstanding=plan.max_outstanding, duration_s=plan.duration_s,
                                   progress=plan.progress)
    assert plan.concurrency is not None
    if plan.max_requests is not None:  # a known size: drawn before the clock starts too
        stream = iter(list(itertools.islice(stream, plan.max_requests)))
    return await run_closed_loop(client, stream, concurrency=plan.concurrency, timeout_s=plan.timeout_s,
                                 duration_s=plan.duration_s, max_requests=plan.max_requests,
                                 progress=plan.progress)


async def execute(plan: RunPlan, scorer: Scorer | None = None,
                  around_load: contextlib.AbstractContextManager[object] | None = None) -> Summary:
    """Run the plan against its target and write its files; returns the summary.

    `scorer` replaces the gRPC client of `plan.target` (which then only names
    the target): loadtest.bench.vllm_http loads another server with the same plan.
    `around_load` is entered around the load (which, open-loop, starts by
    drawing its requests), not the readiness check, the scrapes or the files:
    loadtest.host_cost.CpuMeter reads the CPU the load cost."""
    stream = make_workload(plan).requests()
    plan.out_dir.mkdir(parents=True, exist_ok=True)
    async with contextlib.AsyncExitStack() as stack:
        if scorer is None and plan.target.transport is Transport.HTTP:
            target = plan.target
            http = await stack.enter_async_context(BrewHttpScorer(
                target.http_url, token=target.token, tls_root_cert=target.tls_root_cert,
                member_header=target.member_header))
            if plan.ready_timeout_s > 0:
                await http.wait_until_ready(plan.ready_timeout_s)
            scorer = http
        elif scorer is None:
            client = await stack.enter_async_context(plan.target.client())
            if plan.ready_timeout_s > 0:
                await client.wait_until_serving(plan.ready_timeout_s)
            scorer = ServedScorer(client)
        # An unreachable /metrics raises here, before any load is sent.
        before = await _scrape(plan.metrics_urls)
        with around_load or contextlib.nullcontext():
            result = await _load(plan, scorer, stream)
    server: ServerView | None = None
    if plan.metrics_urls:
        try:
            server = server_view(before, await _scrape(plan.metrics_urls), plan.metrics_urls)
        except OSError as error:
            _warn(f"{error}; the summary has no server view")
    summary = summarize(result.records, wall_s=result.wall_s, slo_s=plan.slo_s, run=plan.run_info(),
                        started_at=result.started_at, server=server)
    write_records_jsonl(result.records, plan.out_dir / "requests.jsonl")
    write_summary_json(summary, plan.out_dir / "summary.json")
    if plan.plots:
        plots.plot_latency_over_time(result.records, plan.slo_s, plan.out_dir / "latency_over_time.png")
        plots.plot_percentiles(*ok_latency_histograms(result.records), plan.slo_s,
                               plan.out_dir / "latency_percentiles.png")
    return summary
