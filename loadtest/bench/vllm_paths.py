"""The three ways vLLM scores a group, interleaved in one process: where packing pays on vLLM.

- `vllm`: vLLM's own per-candidate requests (the generating model,
  `multi_item = "off"`);
- `plain`: Brew's pooling model, one plain request per candidate (what
  `multi_item = "auto"` does with a group the packing rule does not pack);
- `packed`: the pooling model, the group in one request.

`plain` and `packed` share one pooling engine, as they do under `auto`;
`vllm` runs on an engine of its own. At each point (candidates, history
tokens) every repeat scores one group on each path in turn, each call a
group with a fresh random prefix (as `brew loadtest scaling` draws them), so
no call is served from another's prefix; the first round is a warm-up.
Candidates are `--suffix-tokens` random ids each, the weights random (the
demo's architecture). Reported: ms per candidate, min / median / max over
the repeats, and each path's median against the packed one's. This is the
measurement behind `[packing]`'s thresholds on vLLM
(docs/architecture.md, "Which groups are packed").

    .venv/bin/python -m loadtest.bench.vllm_paths [--candidates 1,2,4,8,16,32,64] [--history 256,1024] [--repeats 9]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path

from loadtest.bench.scaling.checkpoint import checkpoint_positions, write_checkpoint
from loadtest.bench.scaling.points import SUFFIX_TOKENS, ScalingPoint, label_ids_for, make_group

PATHS = ("vllm", "plain", "packed")


def _vocab_size(model_dir: Path) -> int:
    return int(json.loads((model_dir / "config.json").read_text())["vocab_size"])


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(","))


def _spread(values: list[float]) -> str:
    return f"{min(values):.2f} / {statistics.median(values):.2f} / {max(values):.2f}"


async def measure(model_dir: Path, candidates: tuple[int, ...], history: tuple[int, ...], repeats: int,
                  suffix_tokens: int, seed: int) -> list[tuple[ScalingPoint, dict[str, list[float]]]]:
    """ms per candidate of every path at every point, the paths interleaved."""
    from brew.engines import EngineKind, MultiItemMode, create_engine

    own = await create_engine(EngineKind.VLLM, model_dir, multi_item=MultiItemMode.OFF)
    pooling = await create_engine(EngineKind.VLLM, model_dir, multi_item=MultiItemMode.ON)
    try:
        # the pooling engine seen two ways: every group per candidate, or every group packed
        engines = {"vllm": own, "plain": pooling.viewed_as(MultiItemMode.OFF), "packed": pooling}
        vocab = _vocab_size(model_dir)
        labels = label_ids_for(vocab, seed)
        results = []
        for tokens in history:
            for count in candidates:
                point = ScalingPoint(count, tokens)
                times: dict[str, list[float]] = {path: [] for path in PATHS}
                for round_ in range(repeats + 1):
                    order = PATHS[round_ % len(PATHS):] + PATHS[:round_ % len(PATHS)]
                    for index, path in enumerate(order):
                        group = make_group(point, vocab_size=vocab, suffix_tokens=suffix_tokens, label_ids=labels,
                                           seed=seed, call=round_ * len(PATHS) + index)
                        start = time.perf_counter()
                        await engines[path].score([group])
                        if round_:  # round 0 is the warm-up
                            times[path].append((time.perf_counter() - start) * 1000 / count)
                results.append((point, times))
                print(f"{count} x {tokens}: " + ", ".join(
                    f"{path} {statistics.median(times[path]):.2f}" for path in PATHS), flush=True)
        return results
    finally:
        await own.close()
        await pooling.close()


def report(results: list[tuple[ScalingPoint, dict[str, list[float]]]]) -> str:
    lines = ["| candidates | history tokens | vllm ms/candidate | plain | packed | vllm / packed | plain / packed |",
             "|---:|---:|---|---|---|---:|---:|"]
    for point, times in results:
        packed = statistics.median(times["packed"])
        lines.append(f"| {point.candidates} | {point.history_tokens} | {_spread(times['vllm'])} | "
                     f"{_spread(times['plain'])} | {_spread(times['packed'])} | "
                     f"{statistics.median(times['vllm']) / packed:.2f} | "
                     f"{statistics.median(times['plain']) / packed:.2f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--candidates", type=_ints, default=(1, 2, 4, 8, 16, 32, 64))
    parser.add_argument("--history", type=_ints, default=(256, 1024))
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--suffix-tokens", type=int, default=SUFFIX_TOKENS)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        longest = max(args.history) + max(args.candidates) * (args.suffix_tokens + 2) + 64
        model_dir = write_checkpoint(Path(directory), checkpoint_positions(longest), args.seed)
        results = asyncio.run(measure(model_dir, args.candidates, args.history, args.repeats,
                                      args.suffix_tokens, args.seed))
    print(report(results))


if __name__ == "__main__":
    main()
