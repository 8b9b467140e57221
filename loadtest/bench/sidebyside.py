"""Side-by-side: the same model and workload through each serving system, on
the same machine, measured by the same load generator: one system after
another, or with `--interleave` all started at once and their runs taking
turns (loadtest.bench.sidebyside_measure), so that a machine that drifts
over the run slows every system alike.

    brew loadtest sidebyside --out runs/sidebyside [--systems brew-vllm,vllm-openai,...] [--interleave]

Systems (each started here as a subprocess, loaded, then stopped):

    brew-vllm     `brew serve --engine vllm`   (batched, shared prefixes, vLLM)
    brew-torch    `brew serve --engine torch`  (batched, prefix KV reused, transformers)
    vllm-openai   vLLM's own OpenAI server, POST /generative_scoring
                  (loadtest.bench.vllm_http: same token ids, one call per task)
    naive         `brew serve --engine naive`  (one transformers forward per candidate)

For each system: start it and wait until it is ready; a warm-up run at
saturation (closed-loop, WARMUP_CONCURRENCY callers) that is thrown away; a
capacity search (loadtest.capacity: double until p99 breaks the SLO, then
bisect; a bad window and the capacity found are confirmed by the majority
of up to 1 + `--confirm` windows); then `--repeats` runs at the capacity
rate found, `--repeats` of the saturation throughput (loadtest.saturation:
a closed-loop run, then open-loop runs at `--fractions` of it) and
`--repeats` at one fixed rate common to all systems, each with a fresh seed
(fresh members, so no repeat rides on the previous one's prefix cache).
Around each run's load the CPU time of the server process, each of its
descendants and the load generator is read from /proc (loadtest.host_cost).
The report gives every figure as the median and the range of its repeats,
the ratios against vllm-openai and the CPU per candidate of each process,
and is written as sidebyside.json, sidebyside.md and sweeps.png (every
system's sweep on one chart) under --out, next to every run's own files.
`--compare EARLIER_OUT` measures nothing: it compares two runs' capacities
(loadtest.bench.sidebyside_compare) and writes compare.md.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path

from loadtest.bench.sidebyside_compare import compare_runs
from loadtest.bench.sidebyside_measure import (
    SideBySideSettings, compute_limit, measure_interleaved, measure_system,
)
from loadtest.bench.sidebyside_plots import plot_sweeps, sweep_points
from loadtest.bench.sidebyside_report import markdown_table
from loadtest.bench.sidebyside_results import SystemResult
from loadtest.bench.sidebyside_systems import SYSTEMS
from loadtest.workload import WorkloadSpec


def sidebyside_command(args: argparse.Namespace) -> int:
    """Measure args.systems, one after another or interleaved (or, with args.report, read the
    saved results back); write sidebyside.json, sidebyside.md and sweeps.png
    under args.out and print the table."""
    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    unknown = sorted(set(systems) - set(SYSTEMS))
    if unknown:
        raise SystemExit(f"unknown systems {unknown}; choose from {list(SYSTEMS)}")
    results_file = args.out / "sidebyside.json"
    if args.compare is not None:
        return _compare_command(args.compare, args.out, args.tolerance)
    if args.report:
        saved = _read_saved(args.out)
        vars(args).update({k: v for k, v in saved["settings"].items() if k not in ("report", "out")})
        args.model, args.prompts, args.report = Path(args.model), Path(args.prompts), True
    settings = settings_from(args)
    if args.report:
        results = _results(saved)
    else:
        results = (measure_interleaved(systems, settings) if args.interleave
                   else [measure_system(system, settings) for system in systems])
        args.out.mkdir(parents=True, exist_ok=True)
        results_file.write_text(
            json.dumps({"settings": {**vars(args), "out": str(args.out), "model": str(args.model),
                                     "prompts": str(args.prompts)},
                        "results": [asdict(r) for r in results]}, indent=2) + "\n", encoding="utf-8")
    table = markdown_table(results, args.candidates, compute_limit(settings))
    (args.out / "sidebyside.md").write_text(table, encoding="utf-8")
    plot_sweeps({r.system: sweep_points(args.out / r.system / "sweep.json") for r in results}, settings.slo_s,
                args.out / "sweeps.png")
    print(table)
    return 0


def settings_from(args: argparse.Namespace) -> SideBySideSettings:
    """The run's settings from the command line (or a saved run's, which
    hold lists where the parser gives tuples, and lack options added since)."""
    return SideBySideSettings(
        out=args.out, model=args.model.resolve(), prompts=args.prompts.resolve(),
        workload=WorkloadSpec(tasks={args.task: 1.0}, candidates=(args.candidates, args.candidates),
                              history=tuple(getattr(args, "history", WorkloadSpec.history))),
        slo_s=args.slo_ms / 1000, duration_s=args.duration, start_rate=args.start_rate,
        fixed_rate=args.fixed_rate, repeats=args.repeats, timeout_s=args.timeout, pause_s=args.pause,
        confirm=args.confirm, saturation_callers=args.saturation_callers, fractions=tuple(args.fractions),
    )


def _read_saved(out: Path) -> dict:
    """A run's sidebyside.json: its settings and its results."""
    return json.loads((out / "sidebyside.json").read_text(encoding="utf-8"))


def _results(saved: dict) -> list[SystemResult]:
    return [SystemResult(**r) for r in saved["results"]]


def _compare_command(earlier: Path, later: Path, tolerance: float) -> int:
    """Compare two saved runs; print and write compare.md under `later`;
    0 if every system's capacity reproduced within `tolerance`, else 1."""
    comparison = compare_runs(_results(_read_saved(earlier)), _results(_read_saved(later)), tolerance,
                              names=(earlier.name, later.name))
    verdict = ("every capacity reproduced" if comparison.reproduced
               else f"not reproduced: {', '.join(comparison.systems_outside) or 'no system in both runs'}")
    text = f"{comparison.markdown}\n{verdict} (tolerance {100 * tolerance:.0f}%)\n"
    (later / "compare.md").write_text(text, encoding="utf-8")
    print(text, end="")
    return 0 if comparison.reproduced else 1
