"""Quantized models served as users serve them: `brew quantize` run as a
command, then `brew serve` on its output as a real process on real ports,
on the vLLM engine (its int8 kernel, proved by the kernel it logs) and on
the torch engine; the torch engine quantizing at load; and the schemes a
server cannot run refused at start with exit 2.

Scores are set against fp32's (the naive engine in-process on the demo
model) within SCORE_BOUND, and vLLM's int8 against the torch engine on the
same checkpoint (the same rounded weights and activations, computed by
other kernels) within ENGINES_BOUND.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from serve_process import run_serve, running_serve
from service_wire import example_request, scores

from brew import defaults
from brew.engines import EngineKind
from brew.runtime import build_ranker
from brew.wire import request_from_proto
from serving.client import NO_RETRY, RankingClient

pytestmark = [pytest.mark.integration]

SCORE_BOUND = 0.03  # |dp| against fp32 (docs/quantization.md: at most 0.010 over 3,000 candidates)
ENGINES_BOUND = 0.01
VLLM_START_SECONDS = 240.0


@pytest.fixture(scope="module")
def quantized_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("quantize") / "demo-int8"
    done = subprocess.run([sys.executable, "-m", "brew.cli", "quantize", "--model", str(defaults.DEMO_MODEL_DIR),
                           "--out", str(out), "--scheme", "int8-w8a8"],
                          capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["scheme"] == "int8-w8a8" and summary["weight_bytes_after"] < summary["weight_bytes_before"]
    return out


@pytest.fixture(scope="module")
def fp32_scores():
    import asyncio

    async def score():
        ranker = await build_ranker(defaults.DEMO_MODEL_DIR, defaults.PROMPTS_DIR, EngineKind.NAIVE)
        try:
            response = await ranker.score(request_from_proto(example_request()))
        finally:
            await ranker.engine.close()
        return {(r.task, c.item_id): c.score for r in response.results for c in r.candidates}

    return asyncio.run(score())


async def served_scores(target: str) -> dict[tuple[str, str], float]:
    async with RankingClient(target, retry=NO_RETRY) as client:
        return scores(await client.score(example_request(), timeout=60.0))


def gap(a: dict[tuple[str, str], float], b: dict[tuple[str, str], float]) -> float:
    assert a.keys() == b.keys()
    return max(abs(a[key] - b[key]) for key in a)


@pytest.fixture(scope="module")
def torch_on_checkpoint(quantized_dir, tmp_path_factory):
    import asyncio

    with running_serve(tmp_path_factory.mktemp("torch-int8"), "--model", str(quantized_dir)) as server:
        yield asyncio.run(served_scores(server.target))


@pytest.mark.vllm
def test_vllm_serves_the_int8_checkpoint_with_its_int8_kernel(quantized_dir, fp32_scores, torch_on_checkpoint,
                                                               tmp_path):
    import asyncio

    with running_serve(tmp_path, "--engine", "vllm", "--model", str(quantized_dir),
                       timeout=VLLM_START_SECONDS) as server:
        served = asyncio.run(served_scores(server.target))
        log = server.stderr() + server.stdout()
    assert "Selected CPUInt8ScaledMMLinearKernel for CompressedTensorsW8A8Int8" in log
    assert 0 < gap(served, fp32_scores) < SCORE_BOUND
    assert gap(served, torch_on_checkpoint) < ENGINES_BOUND


def test_torch_serves_the_int8_checkpoint(torch_on_checkpoint, fp32_scores):
    assert 0 < gap(torch_on_checkpoint, fp32_scores) < SCORE_BOUND


def test_torch_quantizes_at_load(fp32_scores, tmp_path):
    import asyncio

    with running_serve(tmp_path, "--quantization", "int8-dynamic") as server:
        served = asyncio.run(served_scores(server.target))
    assert 0 < gap(served, fp32_scores) < SCORE_BOUND


@pytest.mark.parametrize("args", [["--quantization", "fp8"], ["--engine", "vllm", "--quantization", "int8-weight"]])
def test_a_scheme_the_server_cannot_run_is_refused_at_start(args):
    done = run_serve(args, timeout=60)
    assert done.returncode == 2, done.stderr
    assert "quantization" in done.stderr and ("NVIDIA GPUs only" in done.stderr or "brew quantize" in done.stderr)


@pytest.mark.vllm
def test_vllm_refuses_fp8_on_this_cpu():
    done = run_serve(["--engine", "vllm", "--quantization", "fp8"], timeout=180)
    assert done.returncode == 2, done.stderr[-2000:]
    assert "fp8 on vLLM's CPU build" in done.stderr
