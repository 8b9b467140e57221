"""Scaling curves: cost per candidate as candidates and history grow.

`python -m loadtest.bench.scaling --out DIR` scores synthetic groups straight
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

This is a CPU benchmark (engines are started on CPU). `--threads` sets
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
from collections.abc import Sequence
from pathlib import Path

from loadtest.bench.scaling_points import (
    DEFAULT_TOKEN_CAPS, ENGINES, SUFFIX_TOKENS, ScalingSettings, ScalingSweeps, label_ids_for,
)


async def _measure_and_report(args: argparse.Namespace) -> int:
    import torch

    from loadtest.bench.flops import DecoderShape, measure_matmul_flops
    from loadtest.bench.scaling_checkpoint import checkpoint_positions, write_checkpoint
    from loadtest.bench.scaling_measure import measure_engine, vllm_cpu_threads
    from loadtest.bench.scaling_plots import plot_scaling
    from loadtest.bench.scaling_report import format_report, scaling_json
    from loadtest.bench.scaling_results import ScalingResult

    if args.threads:
        torch.set_num_threads(args.threads)
    torch_threads = torch.get_num_threads()
    engine_threads = {kind: vllm_cpu_threads(os.environ, len(os.sched_getaffinity(0))) if kind == "vllm"
                      else torch_threads for kind in args.engines}
    sweeps = ScalingSweeps(args.candidates, args.history_tokens, args.fixed_history, args.fixed_candidates)
    settings = ScalingSettings(sweeps, args.repeats, args.seed, args.suffix_tokens, args.max_prompt_tokens)
    peaks = {}
    for threads in sorted(set(engine_threads.values())):
        print(f"measuring fp32 matmul FLOP/s on {threads} thread(s)", file=sys.stderr, flush=True)
        peaks[threads] = measure_matmul_flops(threads)

    positions = checkpoint_positions(sweeps.longest_history + settings.suffix_tokens)
    with tempfile.TemporaryDirectory(prefix="brew-scaling-") as scratch:
        model_dir = write_checkpoint(args.checkpoint_dir or Path(scratch), positions, args.seed)
        shape = DecoderShape.from_config(json.loads((model_dir / "config.json").read_text()))
        label_ids = label_ids_for(shape.vocab_size, args.seed)
        results: list[ScalingResult] = []
        for kind in args.engines:  # one engine at a time: each closes before the next starts
            results += await measure_engine(kind, model_dir, shape, label_ids, settings,
                                            peaks[engine_threads[kind]])

    args.out.mkdir(parents=True, exist_ok=True)
    report = scaling_json(results, settings, shape, positions, engine_threads, peaks, label_ids)
    (args.out / "scaling.json").write_text(json.dumps(report, indent=2) + "\n")
    plot_scaling(results, sweeps, args.out)
    print(format_report(results, sweeps, engine_threads, peaks))
    return 0


def scaling_command(args: argparse.Namespace) -> int:
    """Measure every engine on both sweeps; write scaling.json and the plots
    under args.out and print the tables."""
    return asyncio.run(_measure_and_report(args))


def _int_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated whole numbers, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected whole numbers >= 1, got {text!r}")
    return values


def _engines(text: str) -> tuple[str, ...]:
    engines = tuple(part.strip() for part in text.split(",") if part.strip())
    unknown = set(engines) - set(ENGINES)
    if not engines or unknown:
        raise argparse.ArgumentTypeError(f"expected engines from {', '.join(ENGINES)}, got {text!r}")
    return engines


def parse_caps(text: str) -> dict[str, int]:
    """`naive=40000,torch=0`: prompt-token caps per engine; 0 means no cap."""
    caps = dict(DEFAULT_TOKEN_CAPS)
    for part in filter(None, (p.strip() for p in text.split(","))):
        engine, _, value = part.partition("=")
        if engine not in ENGINES or not value.isdigit():
            raise argparse.ArgumentTypeError(f"expected ENGINE=TOKENS with ENGINE in {', '.join(ENGINES)}, "
                                             f"got {part!r}")
        caps[engine] = int(value)
    return {engine: cap for engine, cap in caps.items() if cap > 0}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m loadtest.bench.scaling", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="directory for scaling.json and the plots")
    parser.add_argument("--engines", type=_engines, default=ENGINES, help="comma-separated (default: all)")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per point, after one warm-up")
    parser.add_argument("--candidates", type=_int_list, default=ScalingSweeps.candidates,
                        help="candidates sweep")
    parser.add_argument("--history-tokens", type=_int_list, default=ScalingSweeps.history,
                        help="history sweep")
    parser.add_argument("--fixed-history", type=int, default=ScalingSweeps.fixed_history,
                        help="history tokens of the candidates sweep")
    parser.add_argument("--fixed-candidates", type=int, default=ScalingSweeps.fixed_candidates,
                        help="candidates of the history sweep")
    parser.add_argument("--suffix-tokens", type=int, default=SUFFIX_TOKENS,
                        help="tokens per candidate suffix")
    parser.add_argument("--max-prompt-tokens", type=parse_caps, default=dict(DEFAULT_TOKEN_CAPS),
                        metavar="ENGINE=N,...", help="skip points with more prompt tokens than this "
                        "(candidates x (history + suffix)); 0 lifts a cap (default: naive=40000)")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's own choice)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--checkpoint-dir", type=Path,
                        help="where to write the random checkpoint (default: a temporary directory)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.repeats < 1 or args.suffix_tokens < 1:
        build_parser().error("--repeats and --suffix-tokens must be at least 1")
    return scaling_command(args)


if __name__ == "__main__":  # the guard vLLM's spawned engine process needs
    sys.exit(main())
