"""The GPU proof's report: one Markdown page from a run directory of .ci/gpu.

Reads what the steps wrote (the machine, the parity tests' last line, each
capacity sweep's sweep.json, the engine sweep's engine.md, each breakdown's
.md) and puts them in .ci/gpu's order, with the goal beside the
capacity: >= 4,000 candidates/s per GPU at p99 < 500 ms. A missing piece
is said to be missing, never left out silently.
"""

from __future__ import annotations

import json
from pathlib import Path

GOAL_CANDIDATES_PER_S = 4000
SERVER_RUNS = (("mis", "multi-item on"), ("off", "multi-item off"))


def _text(path: Path, missing: str) -> str:
    if not path.is_file():
        return f"({missing}: {path.name} not written)"
    return path.read_text(encoding="utf-8").strip()


def _capacity_line(run: Path, name: str, label: str) -> str:
    sweep = run / f"capacity-{name}" / "sweep.json"
    if not sweep.is_file():
        return f"| {label} | (no sweep.json: the step failed or timed out) | | |"
    capacity = json.loads(sweep.read_text(encoding="utf-8")).get("capacity")
    if capacity is None:
        return f"| {label} | no rate met the SLO | | |"
    share = capacity["candidates_per_s"] / GOAL_CANDIDATES_PER_S
    return (f"| {label} | {capacity['candidates_per_s']:,.0f} | {capacity['p99_ms']:.0f} | "
            f"{share:.0%} |")


def report(run: Path) -> str:
    parity = _text(run / "tests.txt", "the parity step").splitlines()
    sections = [
        "# GPU proof: the whole server on the published workload",
        "## Machine\n\n```\n" + _text(run / "machine.txt", "the machine step") + "\n```",
        "## 1. GPU parity tests\n\n```\n" + (parity[-1] if parity else "(empty)") + "\n```",
        "## 2. Checkpoint\n\n```\n" + _text(run / "checkpoint.txt", "the checkpoint step") + "\n```",
        "## 3-5. Capacity at p99 < SLO, the published workload\n\n"
        "| server | candidates/s | p99 ms | of the 4,000 goal |\n|---|---:|---:|---:|\n"
        + "\n".join(_capacity_line(run, name, label) for name, label in SERVER_RUNS),
        "## 6. The engine alone, in-process\n\n" + _text(run / "engine" / "engine.md", "the engine step"),
        "## 7. Where the time went\n\n" + "\n\n".join(
            f"### {label}\n\n" + _text(run / "breakdown" / f"{name}.md", "the breakdown")
            for name, label in SERVER_RUNS),
    ]
    return "\n\n".join(sections) + "\n"


def run(directory: Path, out: Path) -> int:
    text = report(directory)
    out.write_text(text, encoding="utf-8")
    print(text)
    return 0
