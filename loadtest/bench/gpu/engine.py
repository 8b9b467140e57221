"""The engine alone, in-process, at growing batch sizes: candidates/s and
the share of the dense matmul peak it reaches.

The batches are the published workload's requests (loadtest.workload.
PUBLISHED_WORKLOAD), rendered and tokenized by the demo tasks' templates
once, before timing: what is timed is `score_batch` on a batch of that many
callers, the call the dispatcher makes. Each size: one warm-up call, then
`repeats` timed calls; the median and the range. The useful FLOPs of a
group are its prefix once and each candidate behind it
(loadtest.bench.flops.shared_group_flops); their rate over the median call,
against the dense matmul peak measured on the same device in the weights'
dtype, is the share of peak. The gap between that share and 100% is the
engine's overhead: kernel launches, attention masks, padding, Python.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from brew import defaults
from brew.engines import EngineKind
from brew.engines.base import CallerWork
from brew.engines.options import DEFAULT_MAX_BATCH_TOKENS, TorchOptions
from brew.runtime import build_ranker
from brew.types import ScoringGroup
from brew.wire import request_from_proto
from loadtest.bench.flops import (
    DecoderShape,
    measure_cuda_matmul_flops,
    measure_matmul_flops,
    shared_group_flops,
)
from loadtest.workload import PUBLISHED_WORKLOAD, SyntheticWorkload


@dataclass(frozen=True)
class BatchPoint:
    """One batch size's measurement."""

    requests: int
    candidates: int
    median_ms: float
    fastest_ms: float
    slowest_ms: float
    candidates_per_second: float
    tflops: float  # useful FLOPs over the median call
    share_of_peak: float


def published_groups(ranker, count: int) -> list[list[ScoringGroup]]:  # type: ignore[no-untyped-def]
    """`count` requests of the published workload, as each caller's scoring groups."""
    requests = SyntheticWorkload(PUBLISHED_WORKLOAD).requests()
    return [[prepared.group for prepared in ranker.prepare(request_from_proto(request))]
            for request in itertools.islice(requests, count)]


def peak_flops(device: str, dtype: str) -> tuple[float, str]:
    """The dense matmul peak the share is taken against, measured here and
    now, and what it is: on CUDA in the weights' dtype; on a CPU fp32's
    (this project's CPUs have no fast bf16)."""
    import torch

    if device.startswith("cuda"):
        name = dtype if dtype != "auto" else "float32"
        return measure_cuda_matmul_flops(device, dtype=getattr(torch, name)), f"dense {name} matmul, {device}"
    threads = torch.get_num_threads()
    return measure_matmul_flops(threads, seconds=1.0), f"dense float32 matmul, cpu, {threads} threads"


async def sweep(model_dir: Path, device: str, dtype: str, batch_sizes: list[int], repeats: int,
                multi_item: str = "on", max_batch_tokens: int = DEFAULT_MAX_BATCH_TOKENS,
                ) -> tuple[list[BatchPoint], float, str]:
    """Each batch size's point, and the peak FLOP/s they are measured against."""
    ranker = await build_ranker(model_dir, defaults.PROMPTS_DIR, EngineKind.TORCH, dtype=dtype, device=device,
                                multi_item=multi_item, torch=TorchOptions(max_batch_tokens=max_batch_tokens))
    try:
        engine = ranker.engine
        shape = DecoderShape.from_config(json.loads((model_dir / "config.json").read_text()))
        callers = published_groups(ranker, max(batch_sizes))
        peak, peak_name = peak_flops(device, dtype)
        points = []
        for size in batch_sizes:
            batch = callers[:size]
            flops = sum(shared_group_flops(shape, len(g.prefix_ids), [len(s) for s in g.suffix_ids])
                        for groups in batch for g in groups)
            candidates = sum(g.num_candidates for groups in batch for g in groups)
            seconds = []
            for attempt in range(repeats + 1):
                started = time.perf_counter()
                outcomes = await engine.score_batch([CallerWork(groups) for groups in batch])
                elapsed = time.perf_counter() - started
                failed = [o for o in outcomes if isinstance(o, BaseException)]
                if failed:
                    raise failed[0]
                if attempt:  # the first call is the warm-up
                    seconds.append(elapsed)
            median = statistics.median(seconds)
            points.append(BatchPoint(size, candidates, 1e3 * median, 1e3 * min(seconds), 1e3 * max(seconds),
                                     candidates / median, flops / median / 1e12, flops / median / peak))
        return points, peak, peak_name
    finally:
        await ranker.engine.close()


def format_points(points: list[BatchPoint], peak: float, peak_name: str) -> str:
    lines = [f"peak measured ({peak_name}): {peak / 1e12:.2f} TFLOP/s",
             "| requests | candidates | ms per batch, median (fastest-slowest) | candidates/s | TFLOP/s | "
             "share of peak |", "|---:|---:|---|---:|---:|---:|"]
    for p in points:
        spread = f"{p.median_ms:.1f} ({p.fastest_ms:.1f}-{p.slowest_ms:.1f})"
        lines.append(f"| {p.requests} | {p.candidates} | {spread} | {p.candidates_per_second:,.0f} "
                     f"| {p.tflops:.2f} | {p.share_of_peak:.1%} |")
    return "\n".join(lines)


def run(model_dir: Path, device: str, dtype: str, batch_sizes: list[int], repeats: int, out: Path,
        multi_item: str = "on", max_batch_tokens: int = DEFAULT_MAX_BATCH_TOKENS) -> int:
    points, peak, peak_name = asyncio.run(sweep(model_dir, device, dtype, batch_sizes, repeats, multi_item,
                                                max_batch_tokens))
    table = format_points(points, peak, peak_name)
    out.mkdir(parents=True, exist_ok=True)
    document = {"device": device, "dtype": dtype, "multi_item": multi_item,
                "max_batch_tokens": max_batch_tokens, "peak_flops": peak, "peak": peak_name,
                "points": [asdict(p) for p in points]}
    (out / "engine.json").write_text(json.dumps(document, indent=2))
    (out / "engine.md").write_text(table + "\n")
    print(table)
    return 0
