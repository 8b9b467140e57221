"""`brew loadtest scaling`: every engine measured on both sweeps, then
scaling.json, the plots and the tables. The benchmark itself:
loadtest.bench.scaling."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import sys
import tempfile
from pathlib import Path

import torch

from brew.engines import EngineKind, PackingRule, TorchOptions, engine_variants
from brew.settings import from_table, given_flags
from loadtest.bench.flops import DecoderShape, measure_cuda_matmul_flops, measure_matmul_flops
from loadtest.bench.scaling.checkpoint import checkpoint_positions, write_checkpoint
from loadtest.bench.scaling.measure import measure_engine, threads_by_engine
from loadtest.bench.scaling.plots import plot_scaling
from loadtest.bench.scaling.points import PACKING_PREFIX, ScalingSettings, ScalingSweeps, label_ids_for
from loadtest.bench.scaling.report import format_report, scaling_json
from loadtest.bench.scaling.results import ScalingResult


def gpu_engines_problem(device: str, engines: tuple[str, ...]) -> str | None:
    """Why these engines cannot be measured on `device`, or None."""
    if not device.startswith("cuda"):
        return None
    if any(engine_variants()[name].kind is EngineKind.VLLM for name in engines):
        return ("--device cuda measures the torch engines (naive, torch, torch-mis, torch-auto); vLLM chooses its "
                "own device (its GPU build runs on the GPU): leave vllm, vllm-mis and vllm-auto out of --engines")
    if not torch.cuda.is_available():
        return "--device cuda: torch sees no GPU here"
    return None


async def _measure_and_report(args: argparse.Namespace) -> int:
    problem = gpu_engines_problem(args.device, tuple(args.engines))
    if problem:
        print(f"brew loadtest scaling: {problem}", file=sys.stderr)
        return 2
    # Checked before any measurement: a bad value fails at once (SettingsError, a ValueError).
    packing = from_table(PackingRule, given_flags(args, PackingRule, PACKING_PREFIX), "[packing]")
    if args.threads:
        torch.set_num_threads(args.threads)
    torch_threads = torch.get_num_threads()
    engine_threads = threads_by_engine(args.engines, torch_threads, os.environ, len(os.sched_getaffinity(0)))
    sweeps = ScalingSweeps(args.candidate_counts, args.history_tokens, args.fixed_history, args.fixed_candidates)
    settings = ScalingSettings(sweeps, args.repeats, args.seed, args.suffix_tokens, args.max_prompt_tokens)
    peaks = {}
    device_label = None
    if args.device.startswith("cuda"):
        device_label = f"{args.device} ({torch.cuda.get_device_name(args.device)})"
        print(f"measuring fp32 matmul FLOP/s on {device_label}", file=sys.stderr, flush=True)
        peaks[torch_threads] = measure_cuda_matmul_flops(args.device)
    else:
        for threads in sorted(set(engine_threads.values())):
            print(f"measuring fp32 matmul FLOP/s on {threads} thread(s)", file=sys.stderr, flush=True)
            peaks[threads] = measure_matmul_flops(threads)

    torch_options = TorchOptions(max_batch_tokens=args.max_batch_tokens, attention=args.attention)
    positions = checkpoint_positions(sweeps.longest_history + settings.suffix_tokens)
    with tempfile.TemporaryDirectory(prefix="brew-scaling-") as scratch:
        model_dir = write_checkpoint(args.checkpoint_dir or Path(scratch), positions, args.seed, args.model_shape)
        shape = DecoderShape.from_config(json.loads((model_dir / "config.json").read_text()))
        label_ids = label_ids_for(shape.vocab_size, args.seed)
        results: list[ScalingResult] = []
        for kind in args.engines:  # one engine at a time: each closes before the next starts
            results += await measure_engine(kind, model_dir, shape, label_ids, settings,
                                            peaks[engine_threads[kind]], device=args.device,
                                            torch_options=torch_options, packing=packing)

    args.out.mkdir(parents=True, exist_ok=True)
    report = scaling_json(results, settings, shape, positions, engine_threads, peaks, label_ids, device_label,
                          {"max_batch_tokens": args.max_batch_tokens, **dataclasses.asdict(packing),
                           "attention": args.attention or "sdpa"})
    (args.out / "scaling.json").write_text(json.dumps(report, indent=2) + "\n")
    plot_scaling(results, sweeps, args.out)
    print(format_report(results, sweeps, engine_threads, peaks, device_label))
    return 0


def scaling_command(args: argparse.Namespace) -> int:
    """Measure every engine on both sweeps; write scaling.json and the plots
    under args.out and print the tables."""
    return asyncio.run(_measure_and_report(args))
