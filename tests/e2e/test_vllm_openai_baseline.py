"""The side-by-side baseline is a fair one: vLLM's own OpenAI server, started
as BENCHMARKS.md starts it, fed by loadtest.bench.vllm_http, scores the same
candidates as Brew with the same probabilities. A benchmark that compared
different work would measure nothing."""

from __future__ import annotations

import math

import pytest
from service_wire import example_request

from brew import defaults
from brew.engines import EngineKind
from brew.runtime import build_ranker
from brew.wire import request_from_proto
from loadtest.runner import ScoringFailed
from loadtest.bench.sidebyside.systems import Endpoints, free_ports, running, server_command
from loadtest.bench.vllm_http import VllmScoringScorer

pytestmark = [pytest.mark.integration, pytest.mark.vllm, pytest.mark.asyncio(loop_scope="module")]


async def test_vllm_generative_scoring_gives_brews_scores(tmp_path):
    request = example_request()
    reference = await build_ranker(defaults.DEMO_MODEL_DIR, defaults.PROMPTS_DIR, EngineKind.TORCH)
    try:
        expected = await reference.score(request_from_proto(request))
    finally:
        await reference.engine.close()

    endpoints = Endpoints(*free_ports(2))
    model = defaults.DEMO_MODEL_DIR.resolve()
    with running(server_command("vllm-openai", endpoints, model, defaults.PROMPTS_DIR), tmp_path / "vllm.log"):
        async with VllmScoringScorer.for_model(f"http://{endpoints.address}", model,
                                               defaults.PROMPTS_DIR) as scorer:
            await scorer.wait_until_ready(300)
            scores = await scorer.score(request, timeout=60)
            # A deadline the server cannot meet is recorded, not raised as something else.
            with pytest.raises(ScoringFailed) as late:
                await scorer.score(request, timeout=1e-6)
    assert late.value.status == "DEADLINE_EXCEEDED"

    assert [len(task) for task in scores] == [len(t.candidates) for t in expected.results]
    for task_scores, result in zip(scores, expected.results, strict=True):
        for got, candidate in zip(task_scores, result.candidates, strict=True):
            assert math.isclose(got, candidate.score, abs_tol=1e-4), (result.task, got, candidate.score)
