"""The cluster benchmark's arms, medians and ratios, from hand-made runs."""

from __future__ import annotations

import pytest

from loadtest.bench.cluster.report import (
    CLUSTER_ROOT,
    Arm,
    ArmRun,
    arm_results,
    arms,
    markdown_report,
    ratios,
    split_cpu,
)
from loadtest.cli import build_parser


def run(replicas: int, header: bool, repeat: int, cps: float, share: float | None,
        spread: dict[str, int] | None = None, errors: dict[str, int] | None = None,
        cpu_ms: tuple[float, float] | None = None) -> ArmRun:
    envoy, replica_ms = cpu_ms or (None, None)
    return ArmRun(replicas, header, repeat, cps, 10.0, 50.0 + repeat, share, spread or {"a": 1}, errors or {},
                  envoy, replica_ms)


def test_arms_run_least_request_only_where_routing_can_differ():
    assert [arm.label for arm in arms([1, 2])] == ["1 replica, affinity", "2 replicas, affinity",
                                                   "2 replicas, least request"]


def test_medians_of_the_repeats_and_the_ratios_the_benchmark_is_for():
    runs = [
        run(1, True, 0, 100.0, 0.50), run(1, True, 1, 120.0, 0.60), run(1, True, 2, 110.0, 0.55),
        run(2, True, 0, 200.0, 0.80, {"a": 6, "b": 4}, cpu_ms=(0.05, 4.0)),
        run(2, True, 1, 190.0, 0.80, {"a": 6, "b": 4}, cpu_ms=(0.07, 5.0)),
        run(2, False, 0, 160.0, 0.40, {"a": 5, "b": 5}, {"UNAVAILABLE": 2}),
    ]
    results = {result.arm: result for result in arm_results(runs)}
    one = results[Arm(1, True)]
    assert (one.candidates_per_s, one.cached_token_share, one.p99_ms) == (110.0, 0.55, 51.0)
    assert results[Arm(2, True)].busiest_replica_share == pytest.approx(0.6)
    assert results[Arm(2, True)].replicas_cpu_ms_per_candidate == pytest.approx(4.5)
    assert results[Arm(2, True)].envoy_cpu_ms_per_candidate == pytest.approx(0.06)
    assert results[Arm(2, False)].errors == 2
    found = ratios(list(results.values()))
    assert found == pytest.approx({
        "2 replicas: candidates/s, affinity / least request": 195 / 160,
        "2 replicas: cache-hit share, affinity / least request": 0.80 / 0.40,
        "candidates/s, 2 replicas / 1 (affinity)": 195 / 110,
    })
    report = markdown_report(list(results.values()), "notes here")
    assert "| 2 | least request | 160.0 | 10.0 | 50.0 | 40.0% | 50.0% | - / - | 2 |" in report
    assert "| 2 | affinity | 195.0 | 10.0 | 50.5 | 80.0% | 60.0% | 4.50 / 0.060 | 0 |" in report
    assert "- candidates/s, 2 replicas / 1 (affinity): 1.77" in report and report.endswith("notes here\n")


def test_a_missing_share_gives_no_ratio():
    results = arm_results([run(2, True, 0, 10.0, None), run(2, False, 0, 0.0, None)])
    assert set(ratios(results).values()) == {None}


def test_the_command_line_defaults_measure_affinity_on_vllm():
    args = build_parser().parse_args(["cluster", "--concurrency", "16", "--duration", "5"])
    assert (args.engine, args.replicas, args.concurrency, args.rate, args.duration) == ("vllm", (1, 2), 16, None, 5.0)
    with pytest.raises(SystemExit):  # closed-loop callers or an open-loop rate: the run's load is named
        build_parser().parse_args(["cluster", "--duration", "5"])


def test_cpu_is_split_between_envoy_and_the_replicas_the_root_left_out():
    spent = {CLUSTER_ROOT: 0.5, "envoy -c /tmp/envoy.yaml --disable-hot-restart": 0.25,
             "brew serve --port 50061": 2.0, "VLLM::EngineCore": 6.0, "envoy-like-name x": 1.0}
    assert split_cpu(spent) == (0.25, 9.0)
