"""The scaling benchmark's measurement: one engine started in-process, every
point timed on it, and the threads each engine computes on.

The first call at each point is a warm-up and is not timed; every timed call
records the share of prompt tokens the engine reports as cached, so what
vLLM really reused is visible rather than assumed. The CPU seconds of this
process and of each of its children (vLLM's engine core and worker) over the
timed calls are read from /proc (loadtest.host_cost).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from brew.engines.multi_item_rule import PackingRule
from brew.engines.options import TorchOptions
from loadtest.bench.flops import DecoderShape, naive_group_flops, shared_group_flops
from loadtest.bench.scaling.points import ScalingPoint, ScalingSettings, make_group
from loadtest.bench.scaling.results import THIS_PROCESS, ScalingResult
from loadtest.host_cost import CpuMeter


def point_flops(shape: DecoderShape, point: ScalingPoint, suffix_tokens: int) -> tuple[int, int]:
    """(needed with sharing, needed without) for a group at `point`."""
    suffixes = [suffix_tokens] * point.candidates
    return (shared_group_flops(shape, point.history_tokens, suffixes),
            naive_group_flops(shape, point.history_tokens, suffixes))


def threads_by_engine(engines: Sequence[str], torch_threads: int, environ: Mapping[str, str],
                      cpus: int) -> dict[str, int]:
    """The threads each engine variant computes on (vllm, vllm-mis, vllm-auto:
    vLLM's CPU worker's; the torch ones: torch's), for its share of peak."""
    from brew.engines import EngineKind, engine_variants

    variants = engine_variants()
    return {name: vllm_cpu_threads(environ, cpus) if variants[name].kind is EngineKind.VLLM else torch_threads
            for name in engines}


def vllm_cpu_threads(environ: Mapping[str, str], cpus: int) -> int:
    """The OpenMP threads vLLM's CPU worker computes on (one rank), as vLLM 0.32
    decides them (vllm/utils/ompmultiprocessing.py): with the default "auto"
    binding, every allowed core but the reserved ones (1 by default);
    with an explicit list ("0-3,6"), its cores; with "nobind", all cores."""
    bind = environ.get("VLLM_CPU_OMP_THREADS_BIND", "auto").strip()
    if bind == "auto":
        reserved = int(environ.get("VLLM_CPU_NUM_OF_RESERVED_CPU", "1"))
        return max(1, cpus - reserved)
    if bind == "nobind":
        return cpus
    count = 0
    for part in bind.split("|")[0].split(","):  # "|" separates tensor-parallel ranks
        first, _, last = part.partition("-")
        count += int(last or first) - int(first) + 1
    return count


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.2f}"


async def measure_engine(kind: str, model_dir: Path, shape: DecoderShape, label_ids: tuple[int, int],
                         settings: ScalingSettings, peak_flops: float, device: str = "cpu",
                         torch_options: TorchOptions | None = None,
                         packing: PackingRule | None = None) -> list[ScalingResult]:
    """Start one engine (on `device`: the torch engines' device), measure
    every point on it, close it. A call's time includes bringing its scores
    back to the host, so a GPU call is timed to its end."""
    from brew.engines import create_engine, engine_variants

    variant = engine_variants()[kind]
    engine = await create_engine(variant.kind, model_dir, device=device, torch=torch_options,
                                 multi_item=variant.multi_item, packing=packing)
    results = []
    try:
        for point in settings.sweeps.points():
            needed, naive = point_flops(shape, point, settings.suffix_tokens)
            reason = settings.skip_reason(kind, point)
            if reason:
                results.append(ScalingResult(kind, point, needed, naive, peak_flops, skipped=reason))
                continue
            # Drawn before any call, so the CPU meter sees the engine's work only.
            groups = [make_group(point, vocab_size=shape.vocab_size, suffix_tokens=settings.suffix_tokens,
                                 label_ids=label_ids, seed=settings.seed, call=call)
                      for call in range(settings.repeats + 1)]
            await engine.score([groups[0]])  # the warm-up
            seconds, prompt, cached = [], 0, 0
            with CpuMeter({THIS_PROCESS: os.getpid()}) as meter:
                for group in groups[1:]:
                    start = time.perf_counter()
                    [result] = await engine.score([group])
                    seconds.append(time.perf_counter() - start)
                    prompt += sum(c.prompt_tokens for c in result.candidates)
                    cached += sum(c.cached_tokens for c in result.candidates)
            measured = ScalingResult(kind, point, needed, naive, peak_flops, tuple(seconds),
                                     cached / prompt if prompt else None, cpu_s=meter.spent)
            results.append(measured)
            print(f"{kind} {point.candidates} x {point.history_tokens}: "
                  f"{measured.s_per_candidate * 1000:.2f} ms/candidate, CPU "
                  f"{_ms(measured.own_cpu_s_per_candidate)} ms/candidate here and "
                  f"{_ms(measured.children_cpu_s_per_candidate)} in children", file=sys.stderr, flush=True)
    finally:
        await engine.close()
    return results
