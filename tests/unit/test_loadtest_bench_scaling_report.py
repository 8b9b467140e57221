"""The scaling report's tables: one row per engine and point, speed-ups, skips."""

from __future__ import annotations

from scaling_samples import result

from loadtest.bench.scaling.points import ScalingPoint, ScalingSweeps
from loadtest.bench.scaling.report import format_report, format_table


def test_table_rows_speedup_and_skips():
    small, big = ScalingPoint(8, 64), ScalingPoint(256, 4096)
    results = [
        result("naive", small, seconds=(0.8,)),
        result("torch", small, seconds=(0.2,), cached=0.5, cpu_s={"this process": 0.32}),
        result("naive", big, skipped="cap"),
        result("torch", big, seconds=(2.0,)),
    ]
    table = format_table(results, [small, big]).splitlines()
    assert table[0].startswith("| engine | candidates | history |")
    assert len(table) == 2 + 4
    # engines in a fixed order within each point: torch before naive
    assert table[2].startswith("| torch | 8 | 64 | 200.0 | 25.00 | 40.0 |")
    assert "| 50% | 4.0x |" in table[2]
    assert table[2].endswith("| 40.00 | 0.00 |")  # CPU ms/candidate: this process, children
    assert table[3].endswith("| — | — |")  # no CPU measured
    assert table[3].startswith("| naive | 8 | 64 | 800.0 |") and "| 1.0x |" in table[3]
    assert table[5].startswith("| naive | 256 | 4096 | skipped |")
    assert "| — |" in table[4]  # no naive time to compare with


def test_report_has_both_sweeps():
    sweeps = ScalingSweeps(candidates=(1,), history=(64,), fixed_history=64, fixed_candidates=1)
    report = format_report([result("torch", ScalingPoint(1, 64), seconds=(0.1,))], sweeps,
                           engine_threads={"vllm": 1, "torch": 2}, peaks={1: 1e9, 2: 2e9})
    assert "- vllm: 1 thread(s), fp32 matmul 1.0 GFLOP/s" in report
    assert "- torch: 2 thread(s), fp32 matmul 2.0 GFLOP/s" in report
    assert "### Candidates per group (history 64 tokens)" in report
    assert "### History tokens (1 candidates)" in report
    assert report.count("| torch | 1 | 64 |") == 2


def test_a_gpu_report_names_the_device_not_threads():
    sweeps = ScalingSweeps(candidates=(1,), history=(64,), fixed_history=64, fixed_candidates=1)
    report = format_report([result("torch", ScalingPoint(1, 64), seconds=(0.1,))], sweeps,
                           engine_threads={"torch": 2}, peaks={2: 5e13}, device_label="cuda (NVIDIA H200)")
    assert "- torch: cuda (NVIDIA H200), fp32 matmul 50000.0 GFLOP/s" in report
