"""`python -m loadtest.bench.gpu STEP ...`: the GPU proof's own steps (.ci/gpu runs them)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from brew.engines.options import DEFAULT_MAX_BATCH_TOKENS
from loadtest.flags import int_list, positive_float, positive_int


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m loadtest.bench.gpu", description=__doc__)
    steps = parser.add_subparsers(dest="step", required=True)

    checkpoint = steps.add_parser("checkpoint", help="write the random Qwen3-0.6B-configuration checkpoint")
    checkpoint.add_argument("--out", type=Path, required=True, help="the checkpoint directory to write")
    checkpoint.add_argument("--shape", choices=("qwen3-0.6b", "tiny"), default="qwen3-0.6b",
                            help="qwen3-0.6b (default) or tiny (the smoke run's)")
    checkpoint.add_argument("--device", default="cpu",
                            help="where the random weights are drawn (default: cpu)")

    engine = steps.add_parser("engine",
                              help="the engine in-process at growing batch sizes, with the share of peak")
    engine.add_argument("--model", type=Path, required=True, help="checkpoint directory")
    engine.add_argument("--device", default="cuda", help="torch device (default: cuda)")
    engine.add_argument("--dtype", default="bfloat16", help="the weights' dtype (default: bfloat16)")
    engine.add_argument("--multi-item", choices=("on", "off", "auto"), default="on")
    engine.add_argument("--batch-sizes", type=int_list, default=[1, 4, 16, 64, 128], metavar="N1,N2,...",
                        help="requests per batch (default: 1,4,16,64,128)")
    engine.add_argument("--repeats", type=positive_int, default=5, help="timed calls per size (default: 5)")
    engine.add_argument("--max-batch-tokens", type=positive_int, default=DEFAULT_MAX_BATCH_TOKENS,
                        help="[torch] max_batch_tokens: token slots per packed pass (default: %(default)s)")
    engine.add_argument("--out", type=Path, required=True, help="where engine.json and engine.md go")

    breakdown = steps.add_parser("breakdown", help="where a request's time went, through a running server")
    breakdown.add_argument("--target", default="127.0.0.1:50051", help="host:port of the server")
    breakdown.add_argument("--concurrency", type=positive_int, default=32,
                           help="closed-loop callers (default: 32)")
    breakdown.add_argument("--seconds", type=positive_float, default=10.0,
                           help="seconds of load (default: 10)")
    breakdown.add_argument("--timeout", type=positive_float, default=10.0, help="per-request deadline, s")
    breakdown.add_argument("--name", default="breakdown",
                           help="file name of the results (default: breakdown)")
    breakdown.add_argument("--out", type=Path, required=True, help="where NAME.json and NAME.md go")

    report = steps.add_parser("report", help="one Markdown page from a run directory of .ci/gpu")
    report.add_argument("--run", type=Path, required=True, help="the run directory")
    report.add_argument("--out", type=Path, required=True, help="the Markdown file to write")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.step == "checkpoint":
        from loadtest.bench.gpu.checkpoint import write_qwen3_checkpoint

        print(write_qwen3_checkpoint(args.out, args.shape, device=args.device))
        return 0
    if args.step == "engine":
        from loadtest.bench.gpu import engine

        return engine.run(args.model, args.device, args.dtype, args.batch_sizes, args.repeats, args.out,
                          args.multi_item, args.max_batch_tokens)
    if args.step == "report":
        from loadtest.bench.gpu import report

        return report.run(args.run, args.out)
    from loadtest.bench.gpu import breakdown

    return breakdown.run(args.target, args.concurrency, args.seconds, args.timeout, args.out, args.name)


if __name__ == "__main__":
    sys.exit(main())
