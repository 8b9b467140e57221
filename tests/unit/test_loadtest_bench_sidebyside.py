"""The side-by-side pieces that need no server: the /generative_scoring body
carries Brew's exact ids with the positive label first, non-gRPC failures are
recorded by status, and the report's medians and ratios are right."""

from __future__ import annotations

import pytest

from brew.types import Item, Member, TaskRequest
from brew.v1 import ranking_pb2 as pb
from brew.verbalize import Verbalizer
from loadtest.runner import ScoringFailed, call_status
from loadtest.bench.sidebyside import ComputeLimit, Endpoints, SystemResult, markdown_table, server_command
from loadtest.bench.vllm_http import scoring_payload

MEMBER = Member(
    member_id="m1",
    profile={"title": "ML Engineer", "seniority": "mid", "company": "Acme", "location": "Berlin",
             "school": "TU Berlin", "skills": "python, pytorch"},
    history=(),
)
JOBS = tuple(
    Item(f"j{i}", "job", {"title": title, "seniority": "mid", "company": "Initech", "location": "Berlin",
                          "remote": "no", "skills": "python, sql"})
    for i, title in enumerate(["ML Engineer", "Sales Manager"], start=1)
)


def test_the_payload_carries_brews_ids_with_the_positive_label_first(shipped_tasks, demo_tokenizer):
    prepared = Verbalizer(shipped_tasks, demo_tokenizer, 1024).prepare(MEMBER, TaskRequest("job_apply", JOBS))
    payload = scoring_payload(prepared, "brew-demo")
    group = prepared.group
    assert payload["query"] == list(group.prefix_ids)
    assert payload["items"] == [list(s) for s in group.suffix_ids]
    positive = group.label_ids[prepared.task.positive_index]
    assert payload["label_token_ids"][0] == positive
    assert sorted(payload["label_token_ids"]) == sorted(group.label_ids)
    assert payload["apply_softmax"] is True and payload["add_special_tokens"] is False


class FailingScorer:
    async def score(self, request: pb.ScoreCandidatesRequest, timeout: float) -> None:
        raise ScoringFailed("HTTP_503", "overloaded")


@pytest.mark.asyncio
async def test_a_non_grpc_failure_is_recorded_by_its_status():
    assert await call_status(FailingScorer(), pb.ScoreCandidatesRequest(), timeout_s=1.0) == "HTTP_503"


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


def test_vllms_server_runs_with_brews_vllm_settings(tmp_path):
    command = server_command("vllm-openai", Endpoints(8000, 9000), tmp_path / "brew-demo")
    flags = " ".join(command)
    for setting in ("--dtype float32", "--enforce-eager", "--enable-prefix-caching", "--block-size 32",
                    "--served-model-name brew-demo", "--port 8000"):
        assert setting in flags
    assert "--engine torch" in " ".join(server_command("brew-torch", Endpoints(8000, 9000), tmp_path))
