"""The gRPC service end to end on the torch engine: a real server on a real
localhost port, called through the client. Covers the answers, batching
across callers, every self-protection rule, health, ListTasks and /metrics.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys

import grpc
import pytest
import pytest_asyncio
from grpc_health.v1 import health_pb2
from live_server import client_for, running_server, scrape
from service_wire import example_request, job_request, scores
from waiting import eventually_async

from brew import defaults
from brew.errors import BrewError
from brew.v1 import ranking_pb2 as pb

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

TOLERANCE = 1e-5  # the same engine and model in and out of the server
PARITY_TOLERANCE = 1e-4  # multi-item against the per-group path: every speed-up keeps scores within it


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def server():
    async with running_server(
        engine="torch", slo_ms=250,
        # Its callers are patient (answers and batching, not admission: test_overload.py
        # covers admission by the SLO), so they are admitted by their deadlines.
        batching={"collect_window_ms": 20, "max_inflight_batches": 1, "max_queue_candidates": 512,
                  "admission_target": "deadline"},
        limits={"max_candidates_per_request": 64, "max_tasks_per_request": 3, "max_history_items": 40},
        max_message_bytes=32 * 1024,
    ) as running:
        yield running


@pytest_asyncio.fixture(loop_scope="module")
async def client(server):
    async with client_for(server) as connected:
        yield connected


async def expect_error(call, code: grpc.StatusCode) -> str:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call
    assert raised.value.code() is code, raised.value.details()
    return raised.value.details()


async def test_scores_equal_those_of_brew_score(client):
    completed = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "brew.cli", "score", "--engine", "torch", "--request", str(defaults.EXAMPLE_REQUEST)],
        capture_output=True, text=True, timeout=300, env={**os.environ, "TOKENIZERS_PARALLELISM": "false"},
    )
    assert completed.returncode == 0, completed.stderr
    cli = {(r["task"], s["itemId"]): s["score"] for r in json.loads(completed.stdout)["results"] for s in r["scores"]}
    served = scores(await client.score(example_request()))
    assert served.keys() == cli.keys()
    for key, score in served.items():
        assert score == pytest.approx(cli[key], abs=TOLERANCE), key


async def test_response_carries_model_timings_and_token_counts(client):
    response = await client.score(example_request())
    assert response.request_id == "example-1"
    assert response.model == "brew-demo"
    assert [r.task for r in response.results] == ["job_apply", "feed_engagement", "pymk_connect"]
    assert [s.item_id for s in response.results[0].scores] == ["job-101", "job-102", "job-103"]
    for result in response.results:
        assert result.template_version
        assert 0 < result.tokens.prefix_tokens < result.tokens.prompt_tokens
        # The torch engine computes each prefix once: every later candidate reuses it.
        assert result.tokens.cached_prompt_tokens == result.tokens.prefix_tokens * (len(result.scores) - 1)
    timing = response.timing
    assert 0 < timing.engine_seconds <= timing.total_seconds
    assert timing.queue_seconds >= 0


async def test_concurrent_callers_share_engine_batches(server, client):
    before = scrape(server)
    responses = await asyncio.gather(*(client.score(example_request(), timeout=120) for _ in range(12)))
    after = scrape(server)
    assert all(len(scores(r)) == 7 for r in responses)
    batches = after.value("brew_batch_candidates_count") - before.value("brew_batch_candidates_count")
    batched = after.value("brew_batch_candidates_sum") - before.value("brew_batch_candidates_sum")
    assert batched == 12 * 7
    assert batches < 12  # callers were served together, not one batch each


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda r: setattr(r.tasks[0], "task", "job_aply"), "tasks[0]: unknown task 'job_aply'; known tasks: "),
        (lambda r: r.tasks[1].ClearField("candidates"), "task feed_engagement (tasks[1]): candidates is empty"),
        (lambda r: r.member.profile.pop("school"),
         "task job_apply (tasks[0]), member m-42: the template _member.jinja line 2 (included from "
         "job_apply.jinja line 3) reads field 'school', which the member's profile does not have (its fields: "
         "company, location, seniority, skills, title)"),
        (lambda r: r.tasks[0].candidates[0].fields.pop("title"),
         "task job_apply (tasks[0]), candidate job-101: the template job_apply.jinja line 11 reads field 'title', "
         "which the candidate does not have (its fields: company, location, remote, seniority, skills)"),
    ],
    ids=["unknown-task", "empty-candidates", "missing-profile-field", "missing-candidate-field"],
)
async def test_bad_input_is_invalid_argument_naming_the_problem(server, client, edit, message):
    request = example_request()
    edit(request)
    details = await expect_error(client.score(request), grpc.StatusCode.INVALID_ARGUMENT)
    assert message in details
    assert len(scores(await client.score(example_request()))) == 7  # still serving everyone else


@pytest.mark.parametrize(
    ("request_factory", "limit"),
    [
        (lambda: job_request(65), "max_candidates_per_request=64"),
        (lambda: _with_tasks(4), "max_tasks_per_request=3"),
        (lambda: _with_history(41), "max_history_items=40"),
        (lambda: _with_padding(40 * 1024), "max_message_bytes=32768"),
    ],
    ids=["candidates", "tasks", "history", "message-size"],
)
async def test_requests_over_a_limit_are_invalid_argument_naming_it(client, request_factory, limit):
    details = await expect_error(client.score(request_factory()), grpc.StatusCode.INVALID_ARGUMENT)
    assert limit in details


def _with_tasks(count: int) -> pb.ScoreCandidatesRequest:
    request = example_request()
    while len(request.tasks) < count:
        request.tasks.append(request.tasks[0])
    return request


def _with_history(count: int) -> pb.ScoreCandidatesRequest:
    request = example_request()
    while len(request.member.history) < count:
        request.member.history.append(request.member.history[0])
    return request


def _with_padding(size: int) -> pb.ScoreCandidatesRequest:
    request = example_request()
    request.member.profile["about"] = "x" * size
    return request


async def test_a_request_past_its_deadline_is_stopped_and_the_server_goes_on(server, client):
    before = scrape(server)
    await expect_error(client.score(job_request(64), timeout=0.05), grpc.StatusCode.DEADLINE_EXCEEDED)

    def stopped_and_ok() -> tuple[float, float]:
        """Calls counted since `before`: stopped (the server saw the deadline
        pass, or the caller's cancellation, whichever came first) and OK."""
        after = scrape(server)

        def delta(status: str) -> float:
            name = "brew_requests_total"
            return after.value(name, status=status) - before.value(name, status=status)

        return delta("DEADLINE_EXCEEDED") + delta("CANCELLED"), delta("OK")

    await eventually_async(stopped_and_ok, equals=(1, 0))
    assert len(scores(await client.score(example_request()))) == 7


@pytest.mark.parametrize("method", ["ScoreCandidates", "ListTasks"])
async def test_bytes_that_are_not_a_request_are_invalid_argument(server, method):
    before = scrape(server)
    target = f"{server.config.host}:{server.endpoints.grpc_port}"
    async with grpc.aio.insecure_channel(target) as channel:
        call = channel.unary_unary(f"/brew.v1.RankingService/{method}", request_serializer=None,
                                   response_deserializer=None)
        details = await expect_error(call(b"\xff\xff\xff not a protobuf message", timeout=10),
                                     grpc.StatusCode.INVALID_ARGUMENT)
    assert "the request is not a valid brew.v1." in details and "Wire format was corrupt" in details
    if method == "ScoreCandidates":
        after = scrape(server)
        assert after.value("brew_requests_total", status="INVALID_ARGUMENT") == \
            before.value("brew_requests_total", status="INVALID_ARGUMENT") + 1


async def test_health_serving_and_list_tasks(client):
    assert await client.health() == health_pb2.HealthCheckResponse.SERVING
    assert await client.health("brew.v1.RankingService") == health_pb2.HealthCheckResponse.SERVING
    listed = await client.list_tasks()
    assert listed.model == "brew-demo"
    by_name = {t.name: t for t in listed.tasks}
    assert set(by_name) == {"job_apply", "feed_engagement", "pymk_connect", "rerank"}
    assert list(by_name["job_apply"].labels) == [" applied", " viewed", " dismissed", " none"]
    assert by_name["job_apply"].positive_label == " applied"
    assert all(len(t.version) == 12 for t in listed.tasks)


async def test_metrics_parse_and_move_without_member_ids(server, client):
    before = scrape(server)
    await client.score(example_request())
    with pytest.raises(grpc.aio.AioRpcError):
        bad = example_request()
        bad.tasks[0].task = "no_such_task"
        await client.score(bad)
    after = scrape(server)
    assert after.value("brew_requests_total", status="OK") == before.value("brew_requests_total", status="OK") + 1
    assert after.value("brew_candidates_total", task="job_apply", status="OK") == \
        before.value("brew_candidates_total", task="job_apply", status="OK") + 3
    assert after.value("brew_rejections_total", reason="invalid_argument") == \
        before.value("brew_rejections_total", reason="invalid_argument") + 1
    assert after.value("brew_prompt_tokens_total") > before.value("brew_prompt_tokens_total")
    assert after.value("brew_cached_prompt_tokens_total") > before.value("brew_cached_prompt_tokens_total")
    assert after.value("brew_request_seconds_bucket", le="0.25") > 0  # the SLO bucket exists
    assert after.value("grpc_server_handled_total", grpc_method="ScoreCandidates", grpc_code="OK") == \
        before.value("grpc_server_handled_total", grpc_method="ScoreCandidates", grpc_code="OK") + 1
    assert after.value("grpc_server_handled_total", grpc_method="ScoreCandidates", grpc_code="INVALID_ARGUMENT") >= 1
    assert after.value("brew_task_requests_total", task="unknown", status="INVALID_ARGUMENT") >= 1
    assert "no_such_task" not in after.text  # caller input never becomes a label value
    assert "m-42" not in after.text


async def test_a_full_queue_answers_resource_exhausted_and_keeps_serving():
    async with running_server(
        engine="torch",
        batching={"max_queue_candidates": 16, "max_batch_candidates": 8, "max_inflight_batches": 1},
        limits={"max_candidates_per_request": 16},
    ) as small, client_for(small) as client:
        outcomes = await asyncio.gather(*(client.score(example_request(), timeout=120) for _ in range(20)),
                                        return_exceptions=True)
        refused = [o for o in outcomes if isinstance(o, grpc.aio.AioRpcError)]
        served = [o for o in outcomes if isinstance(o, pb.ScoreCandidatesResponse)]
        assert refused and served and len(refused) + len(served) == 20
        assert all(o.code() is grpc.StatusCode.RESOURCE_EXHAUSTED and "queue full" in o.details() for o in refused)
        assert all(len(scores(r)) == 7 for r in served)  # what was admitted is served in full
        assert scrape(small).value("brew_rejections_total", reason="queue_full") == len(refused)
        assert len(scores(await client.score(example_request()))) == 7


async def test_an_engine_failure_turns_health_not_serving_and_calls_unavailable():
    # The supervisor's first restart is a minute away: the failed state lasts the whole test.
    async with running_server(engine="torch", supervisor={"initial_backoff_seconds": 60.0,
                                                          "max_backoff_seconds": 60.0}) as failing, \
            client_for(failing) as client:
        assert failing.service.ranker is not None

        async def broken(prepared):
            raise RuntimeError("simulated device loss")

        # The engine dies under the running server: its batches run in run_prepared
        # (the dispatcher prepares them ahead; score_batch goes through it too).
        failing.service.ranker.engine.run_prepared = broken
        details = await asyncio.wait_for(
            expect_error(client.score(example_request()), grpc.StatusCode.UNAVAILABLE), timeout=10
        )
        assert "simulated device loss" in details
        await eventually_async(client.health, equals=health_pb2.HealthCheckResponse.NOT_SERVING)
        details = await asyncio.wait_for(
            expect_error(client.score(example_request()), grpc.StatusCode.UNAVAILABLE), timeout=10
        )
        assert "engine failed" in details


async def test_a_label_that_is_not_one_token_fails_start_naming_it(tmp_path):
    prompts = tmp_path / "prompts"
    shutil.copytree(defaults.PROMPTS_DIR, prompts)
    config = prompts / "feed_engagement.toml"
    config.write_text(config.read_text().replace('" Yes", " No"', '" Yes indeed", " No"')
                      .replace('positive = " Yes"', 'positive = " Yes indeed"'))
    with pytest.raises(BrewError, match="Yes indeed"):
        async with running_server(engine="torch", prompts=prompts):
            pass


async def test_multi_item_serves_the_scores_of_the_per_group_path_and_reports_its_passes(client):
    per_group = scores(await client.score(example_request()))
    completed = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "brew.cli", "score", "--engine", "torch", "--multi-item", "on",
         "--request", str(defaults.EXAMPLE_REQUEST)],
        capture_output=True, text=True, timeout=300, env={**os.environ, "TOKENIZERS_PARALLELISM": "false"},
    )
    assert completed.returncode == 0, completed.stderr
    cli = {(r["task"], s["itemId"]): s["score"] for r in json.loads(completed.stdout)["results"] for s in r["scores"]}
    async with running_server(engine="torch", multi_item="on") as packed, client_for(packed) as packed_client:
        before = scrape(packed)
        served = scores(await packed_client.score(example_request()))
        after = scrape(packed)
    assert served.keys() == per_group.keys() == cli.keys()
    for key, score in served.items():
        assert score == pytest.approx(per_group[key], abs=PARITY_TOLERANCE), key  # another computation
        assert score == pytest.approx(cli[key], abs=TOLERANCE), key  # the same one
    assert after.value("brew_forward_tokens_count") == before.value("brew_forward_tokens_count") + 1  # one pass
    assert after.value("brew_groups_total", path="packed") == before.value("brew_groups_total", path="packed") + 3
    assert after.value("brew_groups_total", path="per_candidate") == before.value(
        "brew_groups_total", path="per_candidate")
    assert after.value("brew_forward_token_slots_total", kind="real") > before.value(
        "brew_forward_token_slots_total", kind="real")


async def test_a_repeat_member_is_served_from_the_context_cache(server, client):
    first = await client.score(example_request())
    before = scrape(server)
    again = await client.score(example_request())
    after = scrape(server)
    assert scores(again) == scores(first)
    hits = after.value("brew_context_cache_events_total", event="hit") - before.value(
        "brew_context_cache_events_total", event="hit")
    assert hits == 3  # one context per task, none rendered again
