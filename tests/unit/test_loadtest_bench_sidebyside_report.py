"""The side-by-side report: medians with their spread, ratios, saturation,
fixed-fraction p99s and the host cost of each process."""

from __future__ import annotations

from dataclasses import replace

from loadtest.bench.sidebyside.report import markdown_table, spread_cell
from loadtest.bench.sidebyside.results import ComputeLimit, Spread, SystemResult

LIMIT = ComputeLimit(2e6, 8e6, matmul_flops_per_s=1e10, threads=2)


def result(system: str, capacity: list[float], p99: list[float | None], rate: float | None = 8.0) -> SystemResult:
    return SystemResult(system=system, capacity_rate=rate, capacity_candidates_per_s=capacity,
                        capacity_p99_ms=p99, fixed_rate=2.0, fixed_candidates_per_s=[32.0, 32.0, 32.0],
                        fixed_p99_ms=[50.0, 70.0, 60.0], fixed_errors=[{}, {"DEADLINE_EXCEEDED": 1}, {}])


def tables(markdown: str) -> list[dict[str, list[list[str]]]]:
    """Each table's body rows, by their first cell (several rows may share it)."""
    parsed: list[dict[str, list[list[str]]]] = []
    for block in markdown.split("\n\n"):
        rows = [line for line in block.splitlines() if line.startswith("| ") and "---" not in line][1:]
        if rows:
            parsed.append({})
            for line in rows:
                cells = [cell.strip() for cell in line.split("|")[1:-1]]
                parsed[-1].setdefault(cells[0], []).append(cells[1:])
    return parsed


def test_spread_cells():
    assert spread_cell([300.0, 100.0, None, 200.0]) == "200.0 (100.0–300.0)"
    assert spread_cell([5.0, 5.0]) == "5.0" and spread_cell([None]) == "-" and spread_cell([]) == "-"
    assert Spread.of([3.0, 1.0, 2.0]) == Spread(1.0, 2.0, 3.0, 3)


def test_the_capacity_table_reports_medians_spreads_and_ratios_to_vllms_endpoint():
    brew = replace(result("brew-vllm", [300.0, 100.0, 200.0], [400.0, None, 300.0]), capacity_windows=3,
                   capacity_good_windows=2, saturation_candidates_per_s=[400.0, 420.0, 380.0],
                   saturation_p99_ms=[900.0, 950.0, 1000.0])
    table = markdown_table([brew, result("vllm-openai", [100.0, 90.0, 110.0], [450.0, 460.0, 470.0]),
                            result("naive", [], [], rate=None)], candidates=(16, 16), limit=LIMIT)
    capacity, load = tables(table)[:2]
    # 200 candidates/s x 2 MFLOP = 0.4 GFLOP/s of a 10 GFLOP/s peak.
    assert capacity["brew-vllm"] == [["8.00", "2 of 3", "200.0 (100.0–300.0)", "350.0 (300.0–400.0)", "2.00",
                                      "4.00 (2.00–6.00)", "400.0 (380.0–420.0)", "950.0 (900.0–1000.0)"]]
    assert capacity["vllm-openai"][0][4] == "1.00"
    assert capacity["naive"][0][:5] == ["-", "-", "-", "-", "-"]
    assert load["brew-vllm"] == [["60.0 (50.0–70.0)", "1"]]  # no fractions measured: the fixed rate only
    assert len(tables(table)) == 2 and "CPU" not in table  # no host cost measured: no table for it
    assert "16 candidates per request" in table and "2.00 MFLOP with the prefix shared" in table


def test_fixed_fraction_p99s_and_host_cost_per_process():
    cpu = [{"server": 0.002, "VLLM::EngineCore": 0.004, "load generator": 0.001},
           {"server": 0.003, "load generator": 0.001}]
    brew = replace(result("brew-vllm", [200.0], [300.0]), fractions=[0.5, 0.9],
                   fraction_rates=[[5.0, 6.0], [9.0, 10.8]], fraction_p99_ms=[[100.0, 120.0], [300.0, 500.0]],
                   saturation_callers=64, fixed_cpu_s_per_candidate=cpu, capacity_cpu_s_per_candidate=[{}])
    table = markdown_table([brew], candidates=(8, 32))
    assert "8–32 candidates per request" in table
    _, load, host = tables(table)
    assert "p99 at 50% of saturation (ms) | p99 at 90% of saturation (ms) | p99 at 2 req/s (ms)" in table
    assert load["brew-vllm"] == [["110.0 (100.0–120.0)", "400.0 (300.0–500.0)", "60.0 (50.0–70.0)", "1"]]
    rows = {cells[0]: cells[1:] for cells in host["brew-vllm"]}
    assert list(rows) == ["server", "server's child `VLLM::EngineCore`", "load generator", "all processes"]
    assert rows["server"] == ["-", "2.500 (2.000–3.000)"]  # the capacity run scored nothing
    assert rows["server's child `VLLM::EngineCore`"][1] == "2.000 (0.000–4.000)"  # absent: spent nothing
    assert rows["all processes"][1] == "5.500 (4.000–7.000)"
    assert "64 closed-loop callers" in table and "CPU: user + system time from /proc" in table
    # Systems with different capacities get different callers: each is named.
    mis = replace(brew, system="brew-torch-mis", saturation_callers=40)
    assert "Saturation: closed-loop callers 64 for brew-vllm, 40 for brew-torch-mis;" in markdown_table(
        [brew, mis], candidates=(16, 16))
