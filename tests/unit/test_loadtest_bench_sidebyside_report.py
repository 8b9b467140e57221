"""The side-by-side report's medians and ratios."""

from __future__ import annotations

from loadtest.bench.sidebyside_report import markdown_table
from loadtest.bench.sidebyside_results import ComputeLimit, SystemResult


def result(system: str, capacity: list[float], p99: list[float | None], rate: float | None = 8.0) -> SystemResult:
    return SystemResult(system=system, capacity_rate=rate, capacity_candidates_per_s=capacity,
                        capacity_p99_ms=p99, fixed_rate=2.0, fixed_candidates_per_s=[32.0, 32.0, 32.0],
                        fixed_p99_ms=[50.0, 70.0, 60.0], fixed_errors=[{}, {"DEADLINE_EXCEEDED": 1}, {}])


def test_the_table_reports_medians_and_ratios_to_vllms_endpoint():
    table = markdown_table([
        result("brew-vllm", [300.0, 100.0, 200.0], [400.0, None, 300.0]),
        result("vllm-openai", [100.0, 90.0, 110.0], [450.0, 460.0, 470.0]),
        result("naive", [], [], rate=None),
    ], candidates_per_request=16, limit=ComputeLimit(2e6, 8e6, matmul_flops_per_s=1e10, threads=2))
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
            for line in table.splitlines() if line.startswith("| ") and "---" not in line}
    # 200 candidates/s x 2 MFLOP = 0.4 GFLOP/s of a 10 GFLOP/s peak.
    assert rows["brew-vllm"] == ["8.00", "200.0", "350.0", "2.00", "4.00", "60.0", "1"]
    assert rows["vllm-openai"][3] == "1.00"
    assert rows["naive"][:5] == ["-", "-", "-", "-", "-"]
    assert "16 candidates per request" in table and "2.00 MFLOP with the prefix shared" in table
