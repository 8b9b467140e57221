"""`brew loadtest sidebyside`: every system measured (or a saved run read
back, or two runs compared), then sidebyside.json, sidebyside.md and
sweeps.png under --out. The benchmark itself: loadtest.bench.sidebyside."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path

from brew import defaults
from loadtest.bench.sidebyside.compare import compare_runs
from loadtest.bench.sidebyside.measure import (
    SideBySideSettings, compute_limit, measure_interleaved, measure_system,
)
from loadtest.bench.sidebyside.plots import plot_sweeps, sweep_points
from loadtest.bench.sidebyside.report import markdown_table
from loadtest.bench.sidebyside.results import SystemResult
from loadtest.bench.sidebyside.systems import CHOICES, needs_quantized_model
from loadtest.workload import WorkloadSpec


def sidebyside_command(args: argparse.Namespace) -> int:
    """Measure args.systems, one after another or interleaved (or, with args.report, read the
    saved results back); write sidebyside.json, sidebyside.md and sweeps.png
    under args.out and print the table."""
    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    unknown = sorted(set(systems) - set(CHOICES))
    if unknown:
        raise SystemExit(f"unknown systems {unknown}; choose from {list(CHOICES)}")
    results_file = args.out / "sidebyside.json"
    if args.compare is not None:
        return _compare_command(args.compare, args.out, args.tolerance)
    if any(needs_quantized_model(s) for s in systems) and not args.report and args.quantized_model is None:
        raise SystemExit(f"systems {[s for s in systems if needs_quantized_model(s)]} serve a brew quantize "
                         "checkpoint: pass --quantized-model DIR")
    if args.report:
        saved = _read_saved(args.out)
        vars(args).update({k: v for k, v in saved["settings"].items() if k not in ("report", "out")})
        args.prompts, args.report = Path(args.prompts), True
    args.model = Path(args.model or defaults.DEMO_MODEL_DIR)
    settings = settings_from(args)
    if args.report:
        results = _results(saved)
    else:
        results = (measure_interleaved(systems, settings) if args.interleave
                   else [measure_system(system, settings) for system in systems])
        args.out.mkdir(parents=True, exist_ok=True)
        results_file.write_text(
            json.dumps({"settings": {**vars(args), "out": str(args.out), "model": str(args.model),
                                     "quantized_model": str(args.quantized_model) if args.quantized_model else None,
                                     "prompts": str(args.prompts)},
                        "results": [asdict(r) for r in results]}, indent=2) + "\n", encoding="utf-8")
    table = markdown_table(results, settings.workload.candidates, compute_limit(settings))
    (args.out / "sidebyside.md").write_text(table, encoding="utf-8")
    plot_sweeps({r.system: sweep_points(args.out / r.system / "sweep.json") for r in results}, settings.slo_s,
                args.out / "sweeps.png")
    print(table)
    return 0


def settings_from(args: argparse.Namespace) -> SideBySideSettings:
    """The run's settings from the command line (or a saved run's, which
    hold lists where the parser gives tuples and lack options added since;
    a run saved before --tasks and ranges of --candidates names one `task`
    and holds one candidate count)."""
    saved_task = getattr(args, "task", None)
    candidates = args.candidates
    if isinstance(candidates, int):
        candidates = (candidates, candidates)
    return SideBySideSettings(
        out=args.out, model=Path(args.model or defaults.DEMO_MODEL_DIR).resolve(), prompts=args.prompts.resolve(),
        workload=WorkloadSpec(tasks={saved_task: 1.0} if saved_task else dict(args.tasks),
                              candidates=tuple(candidates),
                              history=tuple(getattr(args, "history", WorkloadSpec.history)),
                              members=args.members, repeat_share=args.repeat_share),
        slo_s=args.slo_ms / 1000, duration_s=args.duration, start_rate=args.start_rate,
        fixed_rate=args.fixed_rate, repeats=args.repeats, timeout_s=args.timeout, pause_s=args.pause,
        confirm=args.confirm, saturation_callers=args.saturation_callers, fractions=tuple(args.fractions),
        quantized_model=Path(args.quantized_model).resolve() if getattr(args, "quantized_model", None) else None,
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
