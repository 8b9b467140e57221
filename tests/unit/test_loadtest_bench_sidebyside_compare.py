"""Two side-by-side runs compared: a capacity that moved more than the
tolerance is named, a system in one run only is listed but not judged, and
the command's exit status says whether every capacity reproduced."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path

import pytest

from loadtest.bench.sidebyside.command import sidebyside_command
from loadtest.bench.sidebyside.compare import compare_runs, gap
from loadtest.bench.sidebyside.results import SystemResult


def result(system: str, capacity: list[float], rate: float | None = 8.0,
           saturation: tuple[float, ...] = (300.0, 310.0)) -> SystemResult:
    return SystemResult(system=system, capacity_rate=rate, capacity_candidates_per_s=capacity,
                        capacity_p99_ms=[400.0] * len(capacity), fixed_rate=2.0,
                        fixed_candidates_per_s=[32.0], fixed_p99_ms=[50.0], fixed_errors=[{}],
                        saturation_candidates_per_s=list(saturation))


def body_rows(markdown: str) -> dict[str, list[str]]:
    rows = [line for line in markdown.splitlines() if line.startswith("| ") and "---" not in line][1:]
    return {cells[0]: cells[1:] for cells in ([c.strip() for c in row.split("|")[1:-1]] for row in rows)}


def test_gap_is_the_larger_over_the_smaller_minus_one():
    assert gap(100.0, 120.0) == pytest.approx(0.2)
    assert gap(120.0, 100.0) == pytest.approx(0.2)
    assert gap(None, 100.0) is None and gap(0.0, 100.0) is None


def test_systems_within_the_tolerance_reproduce_and_one_beyond_it_is_named():
    first = [result("brew-vllm", [180.0, 190.0]), result("vllm-openai", [100.0, 96.0])]
    second = [result("brew-vllm", [200.0, 204.0]), result("vllm-openai", [70.0, 74.0])]
    comparison = compare_runs(first, second, tolerance=0.2, names=("a", "b"))
    rows = body_rows(comparison.markdown)
    assert rows["brew-vllm"][2:6] == ["185.0", "202.0", "9%", "305.0"]
    assert rows["brew-vllm"][-1] == "yes" and rows["vllm-openai"][-1] == "no"
    assert rows["vllm-openai"][4] == "36%"  # 98 against 72
    assert comparison.systems_outside == ("vllm-openai",) and not comparison.reproduced


def test_a_run_without_capacity_does_not_reproduce_and_a_lone_system_is_not_judged():
    first = [result("brew-torch", [], rate=None), result("naive", [27.0])]
    second = [result("brew-torch", [150.0]), result("brew-torch-mis", [200.0])]
    comparison = compare_runs(first, second)
    assert comparison.systems_judged == 1 and comparison.systems_outside == ("brew-torch",)
    assert "In one run only, not compared: brew-torch-mis, naive." in comparison.markdown
    assert not compare_runs([result("naive", [27.0])], [result("brew-vllm", [1.0])]).reproduced


def save(out: Path, results: list[SystemResult]) -> Path:
    out.mkdir()
    (out / "sidebyside.json").write_text(json.dumps({"settings": {}, "results": [asdict(r) for r in results]}))
    return out


@pytest.mark.parametrize(("later_capacity", "status"), [([110.0], 0), ([130.0], 1)])
def test_the_command_writes_compare_md_and_exits_on_the_verdict(tmp_path, capsys, later_capacity, status):
    earlier = save(tmp_path / "run-a", [result("brew-vllm", [100.0])])
    later = save(tmp_path / "run-b", [result("brew-vllm", later_capacity)])
    args = argparse.Namespace(systems="brew-vllm", out=later, compare=earlier, tolerance=0.2)
    assert sidebyside_command(args) == status
    written = (later / "compare.md").read_text(encoding="utf-8")
    assert written == capsys.readouterr().out
    assert ("every capacity reproduced" in written) == (status == 0)
    assert "capacity req/s, run-a | run-b" in written
