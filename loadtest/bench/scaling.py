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
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from brew.types import ScoringGroup
from loadtest.bench.flops import DecoderShape, naive_group_flops, shared_group_flops

FORMAT = "brew.loadtest.scaling/1"
SUFFIX_TOKENS = 24
FIRST_ID = 3  # ids 0-2 are the demo tokenizer's special tokens: random ids avoid them
ENGINES = ("vllm", "torch", "naive")
# Keeps a naive call to a few seconds on 2 CPU cores (8 x 4,096 tokens took 3 s).
DEFAULT_TOKEN_CAPS = {"naive": 40_000}


@dataclass(frozen=True, order=True)
class Point:
    """One measured shape: a group of `candidates` behind `history_tokens` of prefix."""

    candidates: int
    history_tokens: int

    def prompt_tokens(self, suffix_tokens: int) -> int:
        """Tokens of all the group's prompts: what an engine without sharing runs."""
        return self.candidates * (self.history_tokens + suffix_tokens)


@dataclass(frozen=True)
class Sweeps:
    """The two sweeps; a point in both (e.g. 32 candidates at 512 tokens) is measured once."""

    candidates: tuple[int, ...] = (1, 4, 16, 64, 256)
    history: tuple[int, ...] = (64, 256, 1024, 4096)
    fixed_history: int = 512
    fixed_candidates: int = 32

    def __post_init__(self) -> None:
        if not self.candidates or not self.history:
            raise ValueError("each sweep needs at least one value")
        if min(self.candidates) < 1 or self.fixed_candidates < 1:
            raise ValueError("candidate counts must be at least 1")
        if min(self.history) < 1 or self.fixed_history < 1:
            raise ValueError("history lengths must be at least 1 token")

    def candidates_points(self) -> list[Point]:
        return [Point(c, self.fixed_history) for c in sorted(set(self.candidates))]

    def history_points(self) -> list[Point]:
        return [Point(self.fixed_candidates, h) for h in sorted(set(self.history))]

    def points(self) -> list[Point]:
        """Every distinct point, cheapest first."""
        return sorted(set(self.candidates_points()) | set(self.history_points()),
                      key=lambda p: (p.prompt_tokens(0), p))

    @property
    def longest_history(self) -> int:
        return max(p.history_tokens for p in self.points())


def label_ids_for(vocab_size: int, seed: int) -> tuple[int, int]:
    """Two distinct single-token labels, fixed for the whole run."""
    first, second = random.Random(f"labels:{seed}").sample(range(FIRST_ID, vocab_size), 2)
    return first, second


def make_group(point: Point, *, vocab_size: int, suffix_tokens: int, label_ids: tuple[int, ...], seed: int,
               call: int) -> ScoringGroup:
    """The group for one call at `point`: random ids, seeded by (seed, point, call),
    so every call has its own prefix and every engine scores the same groups."""
    if vocab_size <= FIRST_ID or suffix_tokens < 1:
        raise ValueError("need a vocabulary beyond the special tokens and suffixes of at least 1 token")
    rng = random.Random(f"{seed}:{point.candidates}:{point.history_tokens}:{call}")

    def ids(n: int) -> tuple[int, ...]:
        return tuple(rng.randrange(FIRST_ID, vocab_size) for _ in range(n))

    return ScoringGroup(
        prefix_ids=ids(point.history_tokens),
        suffix_ids=tuple(ids(suffix_tokens) for _ in range(point.candidates)),
        label_ids=tuple(label_ids),
    )


def checkpoint_positions(longest_prompt: int, minimum: int = 1024) -> int:
    """max_position_embeddings for the random checkpoint: the next power of two
    that holds the longest prompt (and never less than the demo's 1024)."""
    positions = minimum
    while positions < longest_prompt:
        positions *= 2
    return positions


@dataclass(frozen=True)
class PointResult:
    """One engine at one point: wall seconds of each timed call, or why it was skipped."""

    engine: str
    point: Point
    needed_flops: int  # with prefix sharing (loadtest.bench.flops.shared_group_flops)
    naive_flops: int  # every prompt from scratch
    peak_flops: float  # measured matmul FLOP/s on the threads this engine computes on
    seconds: tuple[float, ...] = ()
    cached_share: float | None = None  # prompt tokens the engine reported as not recomputed
    skipped: str | None = None

    @property
    def median_s(self) -> float | None:
        return statistics.median(self.seconds) if self.seconds else None

    @property
    def s_per_candidate(self) -> float | None:
        median = self.median_s
        return None if median is None else median / self.point.candidates

    @property
    def candidates_per_s(self) -> float | None:
        median = self.median_s
        return None if not median else self.point.candidates / median

    @property
    def flop_share(self) -> float | None:
        """Needed FLOPs per second reached, as a share of the measured matmul FLOP/s."""
        median = self.median_s
        return None if not median or self.peak_flops <= 0 else self.needed_flops / median / self.peak_flops

    def to_json(self) -> dict[str, object]:
        return {
            "engine": self.engine,
            "candidates": self.point.candidates,
            "history_tokens": self.point.history_tokens,
            "skipped": self.skipped,
            "seconds": list(self.seconds),
            "median_s": self.median_s,
            "s_per_candidate": self.s_per_candidate,
            "candidates_per_s": self.candidates_per_s,
            "needed_flops": self.needed_flops,
            "naive_flops": self.naive_flops,
            "peak_flops": self.peak_flops,
            "flop_share": self.flop_share,
            "cached_share": self.cached_share,
        }


def point_flops(shape: DecoderShape, point: Point, suffix_tokens: int) -> tuple[int, int]:
    """(needed with sharing, needed without) for a group at `point`."""
    suffixes = [suffix_tokens] * point.candidates
    return (shared_group_flops(shape, point.history_tokens, suffixes),
            naive_group_flops(shape, point.history_tokens, suffixes))


def _fmt(value: float | None, spec: str) -> str:
    return "—" if value is None else format(value, spec)


def format_table(results: Sequence[PointResult], points: Sequence[Point]) -> str:
    """A markdown table of `points`, one row per engine and point, in the given
    point order; "vs naive" is the naive engine's time over this engine's at
    the same point, where both were measured."""
    naive = {r.point: r.median_s for r in results if r.engine == "naive"}
    engines = [e for e in ENGINES if any(r.engine == e for r in results)]
    engines += sorted({r.engine for r in results} - set(engines))
    by_key = {(r.engine, r.point): r for r in results}
    lines = [
        "| engine | candidates | history | ms/call | ms/candidate | candidates/s | % of matmul peak "
        "| cached | vs naive | FLOPs saved by sharing |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for point in points:
        for engine in engines:
            result = by_key.get((engine, point))
            if result is None:
                continue
            saved = f"{result.naive_flops / result.needed_flops:.1f}x"
            head = f"| {engine} | {point.candidates} | {point.history_tokens} |"
            if result.skipped:
                lines.append(f"{head} skipped | — | — | — | — | — | {saved} |")
                continue
            share, cached, naive_s = result.flop_share, result.cached_share, naive.get(point)
            lines.append(
                f"{head} {result.median_s * 1000:.1f} | {result.s_per_candidate * 1000:.2f} "
                f"| {result.candidates_per_s:.1f} | {_fmt(None if share is None else share * 100, '.1f')} "
                f"| {'—' if cached is None else f'{cached * 100:.0f}%'} "
                f"| {'—' if naive_s is None else f'{naive_s / result.median_s:.1f}x'} | {saved} |"
            )
    return "\n".join(lines)


def format_report(results: Sequence[PointResult], sweeps: Sweeps, engine_threads: Mapping[str, int],
                  peaks: Mapping[int, float]) -> str:
    """Both sweeps' tables, each under a heading that names the fixed axis,
    after the matmul FLOP/s each engine's share is taken against."""
    peak_lines = [f"- {engine}: {threads} thread(s), fp32 matmul {peaks[threads] / 1e9:.1f} GFLOP/s"
                  for engine, threads in engine_threads.items()]
    return "\n\n".join([
        "Share of peak is taken against:\n" + "\n".join(peak_lines),
        f"### Candidates per group (history {sweeps.fixed_history} tokens)",
        format_table(results, sweeps.candidates_points()),
        f"### History tokens ({sweeps.fixed_candidates} candidates)",
        format_table(results, sweeps.history_points()),
    ])


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


@dataclass(frozen=True)
class Settings:
    """Everything a measurement depends on besides the engine."""

    sweeps: Sweeps
    repeats: int = 5
    seed: int = 0
    suffix_tokens: int = SUFFIX_TOKENS
    token_caps: Mapping[str, int] = field(default_factory=lambda: dict(DEFAULT_TOKEN_CAPS))

    def skip_reason(self, engine: str, point: Point) -> str | None:
        cap = self.token_caps.get(engine)
        tokens = point.prompt_tokens(self.suffix_tokens)
        return None if cap is None or tokens <= cap else f"{tokens} prompt tokens > cap {cap}"


async def measure_engine(kind: str, model_dir: Path, shape: DecoderShape, label_ids: tuple[int, int],
                         settings: Settings, peak_flops: float) -> list[PointResult]:
    """Start one engine, measure every point on it, close it."""
    from brew.engines import create_engine

    engine = await create_engine(kind, model_dir)
    results = []
    try:
        for point in settings.sweeps.points():
            needed, naive = point_flops(shape, point, settings.suffix_tokens)
            reason = settings.skip_reason(kind, point)
            if reason:
                results.append(PointResult(kind, point, needed, naive, peak_flops, skipped=reason))
                continue
            seconds, prompt, cached = [], 0, 0
            for call in range(settings.repeats + 1):  # call 0 is the warm-up
                group = make_group(point, vocab_size=shape.vocab_size, suffix_tokens=settings.suffix_tokens,
                                   label_ids=label_ids, seed=settings.seed, call=call)
                start = time.perf_counter()
                [result] = await engine.score([group])
                elapsed = time.perf_counter() - start
                if call:
                    seconds.append(elapsed)
                    prompt += sum(c.prompt_tokens for c in result.candidates)
                    cached += sum(c.cached_tokens for c in result.candidates)
            measured = PointResult(kind, point, needed, naive, peak_flops, tuple(seconds),
                                   cached / prompt if prompt else None)
            results.append(measured)
            print(f"{kind} {point.candidates} x {point.history_tokens}: "
                  f"{measured.s_per_candidate * 1000:.2f} ms/candidate", file=sys.stderr, flush=True)
    finally:
        await engine.close()
    return results


def write_checkpoint(directory: Path, max_positions: int, seed: int) -> Path:
    """A random-weight checkpoint with the demo's architecture and tokenizer,
    with room for `max_positions` tokens."""
    import torch
    from transformers import PreTrainedTokenizerFast

    from brew import defaults
    from brew.demo.checkpoint import ModelShape, build_model

    tokenizer = PreTrainedTokenizerFast.from_pretrained(defaults.DEMO_MODEL_DIR)
    torch.manual_seed(seed)
    model = build_model(tokenizer, ModelShape(max_position_embeddings=max_positions))
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


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
    parser.add_argument("--candidates", type=_int_list, default=Sweeps.candidates, help="candidates sweep")
    parser.add_argument("--history-tokens", type=_int_list, default=Sweeps.history, help="history sweep")
    parser.add_argument("--fixed-history", type=int, default=Sweeps.fixed_history,
                        help="history tokens of the candidates sweep")
    parser.add_argument("--fixed-candidates", type=int, default=Sweeps.fixed_candidates,
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


def _run_json(results: Iterable[PointResult], settings: Settings, shape: DecoderShape, positions: int,
              engine_threads: Mapping[str, int], peaks: Mapping[int, float],
              label_ids: tuple[int, int]) -> dict[str, object]:
    sweeps = settings.sweeps
    return {
        "format": FORMAT,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": len(os.sched_getaffinity(0)), "engine_threads": dict(engine_threads),
                    "matmul_flops_by_threads": {str(t): f for t, f in sorted(peaks.items())},
                    "vllm_cpu_omp_threads_bind": os.environ.get("VLLM_CPU_OMP_THREADS_BIND", "auto")},
        "model": {**vars(shape), "max_position_embeddings": positions, "weights": "random"},
        "settings": {"repeats": settings.repeats, "seed": settings.seed,
                     "suffix_tokens": settings.suffix_tokens,
                     "label_ids": list(label_ids), "token_caps": dict(settings.token_caps),
                     "candidates": list(sweeps.candidates), "fixed_history": sweeps.fixed_history,
                     "history_tokens": list(sweeps.history), "fixed_candidates": sweeps.fixed_candidates},
        "results": [r.to_json() for r in results],
    }


async def run(args: argparse.Namespace) -> int:
    import torch

    from loadtest.bench.flops import measure_matmul_flops
    from loadtest.bench.scaling_plots import plot_scaling

    if args.threads:
        torch.set_num_threads(args.threads)
    torch_threads = torch.get_num_threads()
    engine_threads = {kind: vllm_cpu_threads(os.environ, len(os.sched_getaffinity(0))) if kind == "vllm"
                      else torch_threads for kind in args.engines}
    sweeps = Sweeps(args.candidates, args.history_tokens, args.fixed_history, args.fixed_candidates)
    settings = Settings(sweeps, args.repeats, args.seed, args.suffix_tokens, args.max_prompt_tokens)
    peaks = {}
    for threads in sorted(set(engine_threads.values())):
        print(f"measuring fp32 matmul FLOP/s on {threads} thread(s)", file=sys.stderr, flush=True)
        peaks[threads] = measure_matmul_flops(threads)

    positions = checkpoint_positions(sweeps.longest_history + settings.suffix_tokens)
    with tempfile.TemporaryDirectory(prefix="brew-scaling-") as scratch:
        model_dir = write_checkpoint(args.checkpoint_dir or Path(scratch), positions, args.seed)
        shape = DecoderShape.from_config(json.loads((model_dir / "config.json").read_text()))
        label_ids = label_ids_for(shape.vocab_size, args.seed)
        results: list[PointResult] = []
        for kind in args.engines:  # one engine at a time: each closes before the next starts
            results += await measure_engine(kind, model_dir, shape, label_ids, settings,
                                            peaks[engine_threads[kind]])

    args.out.mkdir(parents=True, exist_ok=True)
    report = _run_json(results, settings, shape, positions, engine_threads, peaks, label_ids)
    (args.out / "scaling.json").write_text(json.dumps(report, indent=2) + "\n")
    plot_scaling(results, sweeps, args.out)
    print(format_report(results, sweeps, engine_threads, peaks))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.repeats < 1 or args.suffix_tokens < 1:
        build_parser().error("--repeats and --suffix-tokens must be at least 1")
    return asyncio.run(run(args))


if __name__ == "__main__":  # the guard vLLM's spawned engine process needs
    sys.exit(main())
