"""The profile's sample counting: py-spy's raw stacks, parts by the innermost matching frame, the report."""

from __future__ import annotations

import json

from loadtest.bench.profile import (
    OTHER,
    ProcessProfile,
    parse_raw,
    part_of,
    read_profiles,
    report,
    shares,
    throughput_line,
)

MIS = "/x/brew/engines/vllm_multi_item"
RUNNER = "/v/vllm/v1/worker/gpu_model_runner.py"
RAW = f"""\
execute_model ({RUNNER}:10);forward (/v/vllm/model_executor/models/llama.py:5);attend ({MIS}/kernel.py:130) 6
execute_model ({RUNNER}:10);forward (/v/vllm/model_executor/models/llama.py:5);onednn_mm (/v/vllm/_custom_ops.py:9) 3
execute_model ({RUNNER}:10);GPUModelRunner._pool ({RUNNER}:3210);compute_logits (/v/vllm/model_executor/layers/logits_processor.py:1) 1
worker_busy_loop (/v/vllm/v1/executor/multiproc_executor.py:3);MessageQueue.acquire_read (/v/vllm/distributed/device_communicators/shm_broadcast.py:840);sched_yield (/v/vllm/utils/x.py:1) 4
<module> (/somewhere/else.py:1) 2
not a stack line
"""


def test_raw_stacks_are_parsed_outermost_first_with_their_counts():
    stacks = parse_raw(RAW)
    assert sum(stacks.values()) == 16
    top = max(stacks, key=stacks.get)
    assert top[0] == ("execute_model", RUNNER) and top[-1] == ("attend", f"{MIS}/kernel.py")


def test_a_sample_belongs_to_its_innermost_recognised_frame_unless_an_enclosing_part_holds_it():
    parts = [part_of(stack) for stack in parse_raw(RAW)]
    assert parts == ["multi-item attention: attend", "matmuls (linear layers)",
                     "read-out: pooler (logits, log-softmax, label columns)",
                     "waiting for the other process (shared-memory queue polling)", OTHER]


def test_shares_sum_to_one_and_the_report_gives_ms_per_candidate_from_the_process_cost():
    counted = shares(parse_raw(RAW))
    assert abs(sum(counted.values()) - 1) < 1e-9 and list(counted)[0] == "multi-item attention: attend"
    text = report([ProcessProfile("VLLM::Worker", 16, 2.0, counted)])
    assert "**VLLM::Worker** (16 samples, 2.000 ms CPU per candidate)" in text
    assert "| multi-item attention: attend | 37.5% | 0.750 |" in text


def test_a_run_directory_is_read_back_with_its_processes_costs_and_throughput(tmp_path):
    (tmp_path / "load").mkdir()
    (tmp_path / "py-spy-7.txt").write_text(RAW, encoding="utf-8")
    (tmp_path / "processes.json").write_text(json.dumps({"7": "VLLM::Worker", "8": "server"}), encoding="utf-8")
    (tmp_path / "load" / "host_cost.json").write_text(
        json.dumps({"cpu_s_per_candidate": {"VLLM::Worker": 0.002}}), encoding="utf-8")
    (tmp_path / "load" / "summary.json").write_text(json.dumps(
        {"throughput": {"candidates_per_s": 123.4}, "latency_ms": {"from_sent": {"p99": 56.7}}}), encoding="utf-8")
    worker, server = read_profiles(tmp_path)
    assert (worker.label, worker.samples, worker.cpu_ms_per_candidate) == ("VLLM::Worker", 16, 2.0)
    assert (server.samples, server.cpu_ms_per_candidate, server.shares) == (0, None, {})
    assert throughput_line(tmp_path).startswith("load: 123.4 candidates/s scored OK, p99 56.7 ms")
