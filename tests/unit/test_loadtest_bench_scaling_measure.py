"""The scaling measurement's pure part: the threads vLLM's CPU worker computes on."""

from __future__ import annotations

import pytest

from loadtest.bench.scaling.measure import threads_by_engine, vllm_cpu_threads


@pytest.mark.parametrize(("environ", "cpus", "threads"), [
    ({}, 2, 1),  # auto: all cores but one reserved for vLLM's scheduler
    ({}, 16, 15),
    ({"VLLM_CPU_NUM_OF_RESERVED_CPU": "0"}, 2, 2),
    ({"VLLM_CPU_OMP_THREADS_BIND": "nobind"}, 2, 2),
    ({"VLLM_CPU_OMP_THREADS_BIND": "0"}, 2, 1),
    ({"VLLM_CPU_OMP_THREADS_BIND": "0-3,6"}, 8, 5),
    ({"VLLM_CPU_OMP_THREADS_BIND": "0-1|2-3"}, 4, 2),  # first tensor-parallel rank
])
def test_vllm_cpu_threads(environ, cpus, threads):
    assert vllm_cpu_threads(environ, cpus) == threads


def test_on_a_gpu_only_the_torch_engines_are_measured(monkeypatch):
    import torch

    from loadtest.bench.scaling.command import gpu_engines_problem

    assert gpu_engines_problem("cpu", ("vllm", "torch")) is None
    assert "leave vllm, vllm-mis and vllm-auto out" in gpu_engines_problem("cuda", ("vllm", "torch"))
    assert "leave vllm" in gpu_engines_problem("cuda", ("vllm-mis",))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert "no GPU" in gpu_engines_problem("cuda:0", ("naive", "torch", "torch-mis"))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert gpu_engines_problem("cuda", ("naive", "torch", "torch-mis")) is None


def test_every_vllm_variant_is_measured_against_vllms_threads():
    threads = threads_by_engine(["vllm", "vllm-mis", "torch", "torch-mis", "torch-auto", "naive"], 2, {}, 4)
    assert threads == {"vllm": 3, "vllm-mis": 3, "torch": 2, "torch-mis": 2, "torch-auto": 2, "naive": 2}
