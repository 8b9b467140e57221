"""Scaling curves: cost per candidate as candidates and history grow.

`brew loadtest scaling --out DIR` scores synthetic groups straight
through each engine (no server, no templates) and measures two sweeps:

- candidates per group (default 1 to 256) at a fixed history (512 tokens),
- history tokens (default 64 to 4,096) at a fixed candidate count (32).

What a sharing engine saves shows as per-candidate cost falling with more
candidates (the prefix is paid once per group) and rising slowly with history
(each candidate only attends over it), against the naive engine that runs
every full prompt. Each point also reports the share of the machine's compute
limit reached: the FLOPs the group needs with prefix sharing (loadtest.bench.flops)
divided by the wall time and by the measured fp32 matmul FLOP/s.

Groups are random token ids (seeded), each candidate a random suffix of a
fixed length, two fixed single-token labels; the weights are random too (a
checkpoint with the demo's architecture, saved with room for the longest
history), since cost does not depend on them. One group is scored per call;
the first call at each point is a warm-up and is not timed; the reported time
is the median of the timed calls.

Honest prefix caching: every call, the warm-up included, gets a fresh random
prefix, so vLLM's prefix cache can never serve a measured call from an
earlier call (or another point) -- only the candidates within one call share
their prefix, which is exactly the saving being measured. The share of prompt
tokens each engine reports as cached is recorded, so what vLLM really reused
is visible rather than assumed. vLLM caches whole KV blocks (32 tokens on
CPU here), so a history that is not a multiple of the block size leaves its
last partial block to be recomputed by every candidate: that is the
engine's real cost, and the cached share shows it.

A per-engine cap on the prompt tokens of a point (candidates x (history +
suffix)) skips points that would run for minutes (the naive engine at long
histories and many candidates); they show as "skipped" in the table.

By default a CPU benchmark (engines are started on CPU). `--device cuda`
starts the torch engines (naive, torch, torch-mis) on the GPU instead, their
share taken against the GPU's fp32 matmul FLOP/s (TF32 off, as Brew scores);
vLLM chooses its own device (its GPU build runs on the GPU), so it is not
measured this way. `--model-shape` sizes the random model (a GPU needs a
model of its size: see loadtest.bench.scaling_checkpoint); `--max-row-tokens`
and `--max-batch-tokens` set torch-mis's packing budgets and `--attention`
the torch engines' kernel (TorchOptions), to find where packing stops
paying on a machine. `--threads` sets
torch's threads for the torch engines. vLLM's CPU worker binds its own
threads: by default every allowed core but one, which it reserves for its
scheduler (on 2 cores: one thread). Each engine's share is taken against the
matmul FLOP/s measured on its own thread count, so vLLM is not judged
against cores it does not compute on.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
from pathlib import Path

import torch

from brew.engines import EngineKind, TorchOptions
from loadtest.bench.flops import DecoderShape, measure_cuda_matmul_flops, measure_matmul_flops
from loadtest.bench.scaling_checkpoint import checkpoint_positions, write_checkpoint
from loadtest.bench.scaling_measure import measure_engine, vllm_cpu_threads
from loadtest.bench.scaling_plots import plot_scaling
from loadtest.bench.scaling_points import ScalingSettings, ScalingSweeps, label_ids_for
from loadtest.bench.scaling_report import format_report, scaling_json
from loadtest.bench.scaling_results import ScalingResult


def gpu_engines_problem(device: str, engines: tuple[str, ...]) -> str | None:
    """Why these engines cannot be measured on `device`, or None."""
    if not device.startswith("cuda"):
        return None
    if EngineKind.VLLM.value in engines:
        return ("--device cuda measures the torch engines (naive, torch, torch-mis); vLLM chooses its own "
                "device (its GPU build runs on the GPU): leave vllm out of --engines")
    if not torch.cuda.is_available():
        return "--device cuda: torch sees no GPU here"
    return None


async def _measure_and_report(args: argparse.Namespace) -> int:
    problem = gpu_engines_problem(args.device, tuple(args.engines))
    if problem:
        print(f"brew loadtest scaling: {problem}", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    torch_threads = torch.get_num_threads()
    engine_threads = {
        kind: vllm_cpu_threads(os.environ, len(os.sched_getaffinity(0))) if kind == EngineKind.VLLM
        else torch_threads for kind in args.engines
    }
    sweeps = ScalingSweeps(args.candidates, args.history_tokens, args.fixed_history, args.fixed_candidates)
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

    torch_options = TorchOptions(max_batch_tokens=args.max_batch_tokens, max_row_tokens=args.max_row_tokens,
                                 attention=args.attention)
    positions = checkpoint_positions(sweeps.longest_history + settings.suffix_tokens)
    with tempfile.TemporaryDirectory(prefix="brew-scaling-") as scratch:
        model_dir = write_checkpoint(args.checkpoint_dir or Path(scratch), positions, args.seed, args.model_shape)
        shape = DecoderShape.from_config(json.loads((model_dir / "config.json").read_text()))
        label_ids = label_ids_for(shape.vocab_size, args.seed)
        results: list[ScalingResult] = []
        for kind in args.engines:  # one engine at a time: each closes before the next starts
            results += await measure_engine(kind, model_dir, shape, label_ids, settings,
                                            peaks[engine_threads[kind]], device=args.device,
                                            torch_options=torch_options)

    args.out.mkdir(parents=True, exist_ok=True)
    report = scaling_json(results, settings, shape, positions, engine_threads, peaks, label_ids, device_label,
                          {"max_batch_tokens": args.max_batch_tokens, "max_row_tokens": args.max_row_tokens,
                           "attention": args.attention or "sdpa"})
    (args.out / "scaling.json").write_text(json.dumps(report, indent=2) + "\n")
    plot_scaling(results, sweeps, args.out)
    print(format_report(results, sweeps, engine_threads, peaks, device_label))
    return 0


def scaling_command(args: argparse.Namespace) -> int:
    """Measure every engine on both sweeps; write scaling.json and the plots
    under args.out and print the tables."""
    return asyncio.run(_measure_and_report(args))
