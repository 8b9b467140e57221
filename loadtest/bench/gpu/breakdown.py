"""Where a request's time went, through the whole server: rendering, the
dispatcher, the engine, gRPC.

A short closed-loop run of the published workload against a running server
(`brew serve`): each answer carries the server's own timings
(ServerTiming: prepare, queue, engine, total), and the client times the
call around them. Per request:

- rendering: `prepare_seconds` (decode, render the templates, tokenize);
- dispatcher: `queue_seconds` (waiting for a batch: the collect window and
  the batches ahead);
- engine: `engine_seconds` (its batch's engine time, the double-buffered
  host work of that batch included);
- server, other: `total - prepare - queue - engine` (admission, assembling
  the answer, the event loop);
- gRPC and the client: the client's time minus the server's `total`
  (serialisation, the socket, the client's own event loop).

Reported as each stage's mean and median, and its share of the mean
client time.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from pathlib import Path

from loadtest.workload import PUBLISHED_WORKLOAD, SyntheticWorkload
from serving.client import NO_RETRY, RankingClient

STAGES = ("rendering", "dispatcher", "engine", "server, other", "gRPC and client")


def stages_of(client_seconds: float, timing) -> dict[str, float]:  # type: ignore[no-untyped-def]
    """One answer's seconds per stage, from its ServerTiming and the client's clock."""
    inside = timing.prepare_seconds + timing.queue_seconds + timing.engine_seconds
    return {"rendering": timing.prepare_seconds, "dispatcher": timing.queue_seconds,
            "engine": timing.engine_seconds, "server, other": max(0.0, timing.total_seconds - inside),
            "gRPC and client": max(0.0, client_seconds - timing.total_seconds)}


async def measure(target: str, concurrency: int, seconds: float, timeout: float) -> list[dict[str, float]]:
    """Every answer's stages over `seconds` of closed-loop load from `concurrency` callers."""
    requests = SyntheticWorkload(PUBLISHED_WORKLOAD).requests()
    rows: list[dict[str, float]] = []
    end = time.monotonic() + seconds
    async with RankingClient(target, retry=NO_RETRY) as client:
        await client.wait_until_serving(60.0)

        async def caller() -> None:
            while time.monotonic() < end:
                request = next(requests)
                started = time.perf_counter()
                response = await client.score(request, timeout=timeout)
                rows.append(stages_of(time.perf_counter() - started, response.timing))

        await asyncio.gather(*(caller() for _ in range(concurrency)))
    return rows


def summarise(rows: list[dict[str, float]], concurrency: int) -> str:
    client = statistics.fmean(sum(row.values()) for row in rows)
    lines = [f"{len(rows)} requests, {concurrency} closed-loop callers; "
             f"mean client time {1e3 * client:.1f} ms",
             "| stage | mean ms | median ms | share of the client's time |", "|---|---:|---:|---:|"]
    for stage in STAGES:
        values = [row[stage] for row in rows]
        mean, median = statistics.fmean(values), statistics.median(values)
        lines.append(f"| {stage} | {1e3 * mean:.2f} | {1e3 * median:.2f} | {mean / client:.0%} |")
    return "\n".join(lines)


def run(target: str, concurrency: int, seconds: float, timeout: float, out: Path, name: str) -> int:
    rows = asyncio.run(measure(target, concurrency, seconds, timeout))
    if not rows:
        print("no answers: nothing to break down")
        return 1
    table = summarise(rows, concurrency)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(rows))
    (out / f"{name}.md").write_text(table + "\n")
    print(table)
    return 0

