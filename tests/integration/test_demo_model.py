"""The bundled demo model, end to end, on the torch and vLLM engines.

Checks what a user of `brew score` and `brew eval` relies on: sensible scores
on the example request, held-out positives ranked above negatives, the three
engines agreeing within 1e-4 in fp32, and the CLI's answers to bad input.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import pytest_asyncio

from brew import defaults
from brew.demo.evaluate import evaluate_engine, heldout_groups
from brew.engines import EngineKind
from brew.runtime import build_ranker
from brew.wire import parse_request_json, request_from_proto

pytestmark = pytest.mark.integration

PARITY_TOLERANCE = 1e-4


def example_request():
    return request_from_proto(parse_request_json(defaults.EXAMPLE_REQUEST.read_text()))


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def torch_ranker():
    ranker = await build_ranker(defaults.DEMO_MODEL_DIR, defaults.PROMPTS_DIR, EngineKind.TORCH)
    yield ranker
    await ranker.engine.close()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def naive_ranker():
    ranker = await build_ranker(defaults.DEMO_MODEL_DIR, defaults.PROMPTS_DIR, EngineKind.NAIVE)
    yield ranker
    await ranker.engine.close()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def vllm_ranker():
    ranker = await build_ranker(defaults.DEMO_MODEL_DIR, defaults.PROMPTS_DIR, EngineKind.VLLM)
    yield ranker
    await ranker.engine.close()


def scores_by_item(response) -> dict[str, float]:
    return {c.item_id: c.score for result in response.results for c in result.candidates}


@pytest.mark.asyncio(loop_scope="module")
async def test_example_request_scores_are_sensible(torch_ranker):
    response = await torch_ranker.score(example_request())
    assert [r.task for r in response.results] == ["job_apply", "feed_engagement", "pymk_connect"]
    for result in response.results:
        for candidate in result.candidates:
            assert 0.0 < candidate.score < 1.0
            assert math.isclose(sum(candidate.label_probs), 1.0, abs_tol=1e-9)
    scores = scores_by_item(response)
    # A mid ML job in the member's city, near what they applied to, beats a
    # junior sales job abroad; an AI video by a colleague beats a branding poll;
    # a colleague from the same company and school beats a stranger.
    assert scores["job-101"] > scores["job-103"]
    assert scores["post-201"] > scores["post-202"]
    assert scores["member-301"] > scores["member-302"]


# Floors per task, set below what the shipped model measures on this held-out
# set (960 candidates per task: job 0.82 / 102%, feed 0.75 / 83%, pymk 0.76 / 87%;
# docs/architecture.md, "The demo model", has the larger set): a retrained model that falls
# under them has lost what the shipped one learned.
FLOORS = {  # task: (model AUC, share of the truth's lift over chance)
    "job_apply": (0.77, 0.85),
    "feed_engagement": (0.70, 0.70),
    "pymk_connect": (0.70, 0.70),
}


@pytest.mark.asyncio(loop_scope="module")
async def test_model_ranks_heldout_positives_above_negatives(torch_ranker):
    reports = await evaluate_engine(
        torch_ranker.engine, torch_ranker.verbalizer, list(FLOORS), members=120, candidates=8,
    )
    for report in reports:
        min_auc, min_lift = FLOORS[report.task]
        assert report.model_auc > min_auc, report
        assert report.lift_share > min_lift, report


async def _label_logprobs(ranker, groups):
    results = await ranker.engine.score(groups)
    return [c.label_logprobs for r in results for c in r.candidates]


def _max_gap(left, right) -> float:
    return max(abs(a - b) for xs, ys in zip(left, right, strict=True) for a, b in zip(xs, ys, strict=True))


@pytest.mark.asyncio(loop_scope="module")
async def test_torch_engine_matches_plain_forward_passes(torch_ranker, naive_ranker):
    groups = [p.group for p in torch_ranker.prepare(example_request())]
    groups += [g.prepared.group for g in heldout_groups(torch_ranker.verbalizer, "job_apply", 6, 12)]
    gap = _max_gap(await _label_logprobs(torch_ranker, groups), await _label_logprobs(naive_ranker, groups))
    assert gap < PARITY_TOLERANCE


@pytest.mark.vllm
@pytest.mark.asyncio(loop_scope="module")
async def test_vllm_engine_matches_plain_forward_passes(vllm_ranker, naive_ranker):
    groups = [p.group for p in vllm_ranker.prepare(example_request())]
    groups += [g.prepared.group for g in heldout_groups(vllm_ranker.verbalizer, "feed_engagement", 6, 12)]
    gap = _max_gap(await _label_logprobs(vllm_ranker, groups), await _label_logprobs(naive_ranker, groups))
    assert gap < PARITY_TOLERANCE


@pytest.mark.vllm
@pytest.mark.asyncio(loop_scope="module")
async def test_vllm_serves_repeated_prefixes_from_its_cache(vllm_ranker, torch_ranker):
    request = example_request()
    await vllm_ranker.score(request)
    again = await vllm_ranker.score(request)
    for result in again.results:
        assert result.cached_prompt_tokens > 0
    reference = await torch_ranker.score(request)
    for item, score in scores_by_item(again).items():
        assert score == pytest.approx(scores_by_item(reference)[item], abs=PARITY_TOLERANCE)


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "brew.cli", *args],
        capture_output=True, text=True, timeout=600, env={**os.environ, "TOKENIZERS_PARALLELISM": "false"},
    )


def test_cli_score_prints_the_response_json_with_the_torch_engine():
    completed = run_cli("score", "--request", str(defaults.EXAMPLE_REQUEST), "--engine", "torch")
    assert completed.returncode == 0, completed.stderr
    response = json.loads(completed.stdout)
    assert response["requestId"] == "example-1"
    assert [len(r["scores"]) for r in response["results"]] == [3, 2, 2]


@pytest.mark.vllm
def test_cli_score_prints_the_response_json_with_the_vllm_engine():
    completed = run_cli("score", "--request", str(defaults.EXAMPLE_REQUEST), "--engine", "vllm")
    assert completed.returncode == 0, completed.stderr
    response = json.loads(completed.stdout)  # vLLM's logs must not reach stdout
    assert [len(r["scores"]) for r in response["results"]] == [3, 2, 2]


def _broken_request(tmp_path: Path, edit) -> Path:
    request = json.loads(defaults.EXAMPLE_REQUEST.read_text())
    edit(request)
    path = tmp_path / "request.json"
    path.write_text(json.dumps(request))
    return path


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda r: r["tasks"][0].update(task="job_aply"), "tasks[0]: unknown task 'job_aply'; known tasks: "),
        (lambda r: r["tasks"][1].update(candidates=[]), "task feed_engagement (tasks[1]): candidates is empty"),
        (lambda r: r["member"]["profile"].pop("school"),
         "task job_apply (tasks[0]), member m-42: the template _member.jinja line 2 (included from "
         "job_apply.jinja line 3) reads field 'school', which the member's profile does not have"),
        (lambda r: r["tasks"][0]["candidates"][0]["fields"].pop("title"),
         "task job_apply (tasks[0]), candidate job-101: the template job_apply.jinja line 11 reads field "
         "'title', which the candidate does not have"),
    ],
    ids=["unknown-task", "empty-candidates", "missing-profile-field", "missing-candidate-field"],
)
def test_cli_rejects_bad_input_with_a_message_naming_the_problem(tmp_path, edit, message):
    completed = run_cli("score", "--request", str(_broken_request(tmp_path, edit)), "--engine", "torch")
    assert completed.returncode == 2
    assert message in completed.stderr
    assert "Traceback" not in completed.stderr
