"""`brew batch` as users run it: real processes on the demo model with the
torch engine, locally and on a local Ray with two scoring actors, and once
on the vLLM engine.

Two hundred generated requests (and a few bad rows) go through a job that
is killed once it has written some shards, then rerun: the output ends
with exactly one row per candidate, and every score equals the scoring
service's for the same request (the serving path `brew serve` and `brew
score` run, in-process here) within TOLERANCE. The same file through
`--ray --actors 2` gives the same rows. Bad rows land in errors.jsonl with
their reasons, once each; `--max-errors` stops a job.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from google.protobuf import json_format
from waiting import eventually

from brew import defaults
from brew.engines import EngineKind
from brew.runtime import build_ranker
from brew.v1 import ranking_pb2 as pb
from brew.wire import request_from_proto
from loadtest.workload import SyntheticWorkload, WorkloadSpec
from serving.batch.job import run_job
from serving.batch.settings import BatchSettings
from serving.config import ServerConfig
from serving.service import local_service
from serving.servicer import request_shape

pytestmark = [pytest.mark.integration]

TOLERANCE = 1e-5  # the same engine and model in and out of the batch job (batches differ)
PARITY_TOLERANCE = 1e-4  # vLLM against the torch reference (tests/integration/test_engine_parity.py)
REQUESTS = 200
SHARD = 20
TORCH = ["--engine", "torch", "--no-progress"]

Key = tuple[int, int, str]  # request_index, task_index, item_id


def _bad_rows() -> dict[int, tuple[str, str]]:
    """request_index -> (the line, what errors.jsonl must say)."""
    member = json.loads(defaults.EXAMPLE_REQUEST.read_text(encoding="utf-8"))["member"]
    over_budget = {"requestId": "long-1", "member": member, "tasks": [{"task": "job_apply", "candidates": [
        {"itemId": "job-long", "entityType": "job",
         "fields": {"title": "engineer " * 200, "seniority": "mid", "location": "x", "remote": "no",
                    "skills": "y", "company": "z"}}]}]}
    over_limit = {"requestId": "wide-1", "member": {"memberId": "m-2"},
                  "tasks": [{"task": "pymk_connect", "candidates": [{"itemId": "x"}]}] * 9}
    return {
        3: ('{"requestId": "broken", ', "does not match brew.v1.ScoreCandidatesRequest"),
        57: (json.dumps({"requestId": "u-1", "member": {"memberId": "m"},
                         "tasks": [{"task": "no_such_task", "candidates": [{"itemId": "x"}]}]}),
             "unknown task 'no_such_task'"),
        120: (json.dumps(over_budget), "over the task's max_candidate_tokens=48"),
        199: (json.dumps(over_limit), "max_tasks_per_request=8"),
    }


@pytest.fixture(scope="module")
def job_input(tmp_path_factory) -> tuple[Path, dict[int, pb.ScoreCandidatesRequest]]:
    """The JSONL file (a blank line included) and its good requests by request_index."""
    spec = WorkloadSpec(tasks={"job_apply": 1.0, "feed_engagement": 1.0, "pymk_connect": 1.0},
                        candidates=(1, 3), history=(0, 12), members=60, seed=34)
    generated = iter(itertools.islice(SyntheticWorkload(spec).requests(), REQUESTS))
    bad = _bad_rows()
    lines, good = [], {}
    for index in range(REQUESTS + len(bad) + 1):
        if index in bad:
            lines.append(bad[index][0])
        elif index == 150:
            lines.append("")
        else:
            request = next(generated)
            good[index] = request
            lines.append(json_format.MessageToJson(request, indent=None))
    path = tmp_path_factory.mktemp("batch-input") / "requests.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path, good


@pytest.fixture(scope="module")
def expected(job_input) -> dict[Key, float]:
    """Every candidate's score from the scoring service in-process: the
    serving path of `brew serve` and `brew score`, on the torch engine."""
    _, good = job_input

    async def score_all() -> dict[Key, float]:
        config = ServerConfig(engine=EngineKind.TORCH)
        ranker = await build_ranker(config.model, config.prompts, config.engine, **config.engine_options())
        try:
            async with local_service(ranker, config) as service:
                responses = await asyncio.gather(*(
                    service.score(request_shape(r), lambda r=r: request_from_proto(r), None) for r in good.values()))
        finally:
            await ranker.engine.close()
        return {(index, t, c.item_id): c.score for index, response in zip(good, responses)
                for t, result in enumerate(response.results) for c in result.candidates}

    return asyncio.run(score_all())


def run_batch(*args: str, **popen) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "brew.cli", "batch", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **popen)


def finished(process: subprocess.Popen[str], timeout: float = 540) -> str:
    return finished_with_log(process, timeout)[0]


def finished_with_log(process: subprocess.Popen[str], timeout: float = 540) -> tuple[str, str]:
    out, err = process.communicate(timeout=timeout)
    assert process.returncode == 0, f"exit {process.returncode}\n{out}\n{err[-4000:]}"
    return out, err


def manifest_of(out: Path) -> dict:
    return json.loads((out / "manifest.json").read_text(encoding="utf-8"))


def written(out: Path) -> int:
    return len(manifest_of(out)["shards"]) if (out / "manifest.json").exists() else 0


def read_output(out: Path) -> pa.Table:
    """The rows of the shards the manifest lists (the job's output, by its own account)."""
    return pa.concat_tables(pq.read_table(out / name) for name in manifest_of(out)["shards"])


def assert_rows_are_the_services(table: pa.Table, expected: dict[Key, float], tolerance: float = TOLERANCE) -> None:
    rows = table.to_pylist()
    keys = [(r["request_index"], r["task_index"], r["item_id"]) for r in rows]
    assert len(keys) == len(set(keys)), "a candidate was written twice"
    assert set(keys) == set(expected), "candidates lost or invented"
    worst = max(abs(r["score"] - expected[key]) for r, key in zip(rows, keys))
    assert worst <= tolerance, worst
    assert all(abs(sum(r["label_probs"]) - 1.0) < 1e-6 and r["score"] in r["label_probs"] for r in rows)
    assert {r["model"] for r in rows} == {"brew-demo"}
    assert [r["request_index"] for r in rows] == sorted(r["request_index"] for r in rows)  # input order


def assert_errors_listed_once(out: Path) -> None:
    records = [json.loads(line) for line in (out / "errors.jsonl").read_text(encoding="utf-8").splitlines()]
    bad = _bad_rows()
    assert sorted(r["request_index"] for r in records) == sorted(bad)
    for record in records:
        assert record["line"] == record["request_index"] + 1
        assert record["reason"] == "invalid_argument"
        assert bad[record["request_index"]][1] in record["message"], record


def test_a_killed_job_resumes_to_exactly_one_row_per_candidate_with_the_services_scores(job_input, expected,
                                                                                       tmp_path):
    path, _ = job_input
    out = tmp_path / "out"
    args = ["--input", str(path), "--output", str(out), "--shard-requests", str(SHARD), *TORCH]
    shards = -(-(REQUESTS + len(_bad_rows()) + 1) // SHARD)
    first = run_batch(*args)
    try:
        done = eventually(lambda: written(out) if written(out) >= 2 else 0, timeout=300)
    finally:
        first.send_signal(signal.SIGKILL)
        first.communicate()
    assert done < shards, "the job finished before it was killed; nothing was resumed"

    summary = finished(run_batch(*args))
    resumed = int(re.search(r"(\d+) resumed", summary).group(1))
    assert done <= resumed < shards, summary
    assert len(manifest_of(out)["shards"]) == shards
    assert_rows_are_the_services(read_output(out), expected)
    assert_errors_listed_once(out)
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith("part-")) == ["errors.jsonl",
                                                                                       "manifest.json"]


def test_on_a_local_ray_with_two_actors_the_rows_are_the_same(job_input, expected, tmp_path):
    path, _ = job_input
    out = tmp_path / "out"
    env = {key: value for key, value in os.environ.items() if key != "RAY_ADDRESS"}
    summary, log = finished_with_log(run_batch(
        "--input", str(path), "--output", str(out), "--shard-requests", str(SHARD), *TORCH,
        "--ray", "--actors", "2", "--ray-cpus", "3", "--actor-batch-requests", "16", env=env))
    assert "(ray)" in summary
    # Ray Data's plan: rendering in tasks of their own, not fused into the scoring actors.
    assert "TaskPoolMapOperator[MapBatches(prepare_chunks)] -> ActorPoolMapOperator[MapBatches(ScoringActor)]" in log
    assert_rows_are_the_services(read_output(out), expected)
    assert_errors_listed_once(out)


def test_brew_score_gives_the_rows_scores(job_input, expected, tmp_path):
    _, good = job_input
    index, request = next(iter(good.items()))
    request_file = tmp_path / "request.json"
    request_file.write_text(json_format.MessageToJson(request), encoding="utf-8")
    completed = subprocess.run([sys.executable, "-m", "brew.cli", "score", "--engine", "torch",
                                "--request", str(request_file)], capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr
    response = json.loads(completed.stdout)
    scores = {(index, t, s["itemId"]): s["score"] for t, r in enumerate(response["results"]) for s in r["scores"]}
    assert scores and all(abs(score - expected[key]) <= TOLERANCE for key, score in scores.items())


def test_a_parquet_input_gives_the_same_rows(job_input, expected, tmp_path):
    path, good = job_input
    lines = path.read_text(encoding="utf-8").splitlines()[:60]
    parquet = tmp_path / "requests.parquet"
    pq.write_table(pa.table({"request": lines}), parquet, row_group_size=25)  # a blank line is an empty row
    out = tmp_path / "out"
    summary = run_job(parquet, out, ServerConfig(engine=EngineKind.TORCH),
                      BatchSettings(shard_requests=SHARD, progress=False))
    assert summary.stopped is None and summary.rows == 60
    assert_rows_are_the_services(read_output(out), {k: v for k, v in expected.items() if k[0] < 60})
    records = [json.loads(line) for line in (out / "errors.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [(r["request_index"], "line" in r) for r in records] == [(3, False), (57, False)]


@pytest.mark.vllm
def test_on_the_vllm_engine_the_scores_are_the_torch_references(job_input, expected, tmp_path):
    path, _ = job_input
    subset = tmp_path / "requests.jsonl"
    subset.write_text("\n".join(path.read_text(encoding="utf-8").splitlines()[:40]) + "\n", encoding="utf-8")
    out = tmp_path / "out"
    finished(run_batch("--input", str(subset), "--output", str(out), "--engine", "vllm", "--no-progress"))
    assert_rows_are_the_services(read_output(out), {k: v for k, v in expected.items() if k[0] < 40},
                                 tolerance=PARITY_TOLERANCE)


def test_max_errors_stops_the_job_and_says_so(tmp_path):
    lines = ["{", "not json", '{"requestId": "x"}', "[]"]
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path / "out"
    process = run_batch("--input", str(path), "--output", str(out), "--max-errors", "1", *TORCH)
    stdout, stderr = process.communicate(timeout=300)
    assert process.returncode == 1, stderr
    assert "stopped: 2 rows failed, over --max-errors 1" in stdout
    assert len((out / "errors.jsonl").read_text(encoding="utf-8").splitlines()) == 2
