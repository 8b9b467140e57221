"""The scaling measurement's pure part: the threads vLLM's CPU worker computes on."""

from __future__ import annotations

import pytest

from loadtest.bench.scaling_measure import vllm_cpu_threads


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
