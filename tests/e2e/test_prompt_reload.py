"""Hot reload of prompts on a live server (torch engine, real localhost port):
under a few hundred concurrent requests no call fails and every response
comes wholly from one template set (old or new, never a mix); a broken set is
refused with its lint errors and the old one keeps serving; versions show in
ListTasks, responses and /metrics."""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import subprocess

import grpc
import pytest
import pytest_asyncio
from live_server import client_for, running_server, scrape
from serve_process import find_grpcurl, running_serve
from service_wire import example_request
from waiting import eventually_async

from brew import defaults
from serving.client import NO_RETRY, RankingClient

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

REQUESTS = 300
CALLERS = 24


@pytest.fixture(scope="module")
def prompts(tmp_path_factory):
    """A private copy of the shipped prompts, for the tests to edit."""
    directory = tmp_path_factory.mktemp("reload") / "prompts"
    shutil.copytree(defaults.PROMPTS_DIR, directory)
    return directory


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def server(prompts):
    # The callers are patient (120 s deadlines, 24 at once on a slow engine): admitted by their deadline,
    # not refused for the SLO (serving.admission), so a call can fail only for the reload.
    async with running_server(engine="torch", prompts=prompts,
                              batching={"collect_window_ms": 2, "admission_target": "deadline"}) as running:
        yield running


@pytest_asyncio.fixture(loop_scope="module")
async def client(server):
    async with client_for(server) as connected:
        yield connected


def versions_of(response) -> dict[str, str]:
    return {result.task: result.template_version for result in response.results}


def edit(path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


async def test_a_reload_under_load_loses_nothing_and_switches_atomically(server, client, prompts):
    before = versions_of(await client.score(example_request(), timeout=60))
    # Two templates change: a response mixing old and new would show it.
    edit(prompts / "job_apply.jinja", "task:", "task (v2):")
    edit(prompts / "feed_engagement.jinja", "task:", "task (v2):")

    pending = iter(range(REQUESTS))
    responses = []

    async def caller() -> None:
        for index in pending:
            request = example_request()
            request.request_id = f"load-{index}"
            responses.append(versions_of(await client.score(request, timeout=120)))

    load = [asyncio.create_task(caller()) for _ in range(CALLERS)]
    await eventually_async(lambda: len(responses) >= REQUESTS // 3, timeout=120)
    reply = await client.reload_prompts()
    reloaded_at = len(responses)
    await asyncio.gather(*load)  # any failed call raises here

    assert sorted(reply.changed) == ["feed_engagement", "job_apply"]
    assert not reply.added and not reply.removed
    listed_in_reply = {task.name: task.version for task in reply.tasks}
    # The example request's tasks (the prompts directory has others: rerank).
    after = {name: version for name, version in listed_in_reply.items() if name in before}
    assert after["job_apply"] != before["job_apply"] and after["pymk_connect"] == before["pymk_connect"]
    assert len(responses) == REQUESTS
    assert all(r in (before, after) for r in responses), "a response mixed template versions"
    assert before in responses[:reloaded_at] and after in responses[reloaded_at:]
    # Every call that started after the reload answered sees the new set.
    assert versions_of(await client.score(example_request(), timeout=60)) == after
    listed = {task.name: task.version for task in (await client.list_tasks()).tasks}
    assert listed == listed_in_reply
    metrics = scrape(server)
    assert metrics.value("brew_task_info", task="job_apply", version=after["job_apply"]) == 1
    assert metrics.value("brew_prompt_reloads_total", outcome="ok") == 1


async def test_a_broken_reload_is_refused_and_the_old_set_keeps_serving(server, client, prompts):
    serving = versions_of(await client.score(example_request(), timeout=60))
    good = (prompts / "pymk_connect.jinja").read_text(encoding="utf-8")
    (prompts / "pymk_connect.jinja").write_text(good.replace("{% endblock %}", "{% endblok %}", 1),
                                                encoding="utf-8")
    try:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await client.reload_prompts()
    finally:
        (prompts / "pymk_connect.jinja").write_text(good, encoding="utf-8")
    assert refused.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert "pymk_connect.jinja:" in refused.value.details()  # file and line of the error
    assert "previous set keeps serving" in refused.value.details()
    assert versions_of(await client.score(example_request(), timeout=60)) == serving
    assert scrape(server).value("brew_prompt_reloads_total", outcome="failed") == 1


async def test_sighup_reloads_the_prompts_of_brew_serve(tmp_path):
    prompts = tmp_path / "prompts"
    shutil.copytree(defaults.PROMPTS_DIR, prompts)
    with running_serve(tmp_path / "serve", "--prompts", str(prompts)) as served:
        async with RankingClient(served.target, retry=NO_RETRY) as client:
            before = {t.name: t.version for t in (await client.list_tasks()).tasks}
            edit(prompts / "pymk_connect.jinja", "task:", "task (v2):")
            served.process.send_signal(signal.SIGHUP)

            async def versions_once_reloaded() -> dict[str, str] | None:
                now = {t.name: t.version for t in (await client.list_tasks()).tasks}
                return now if now["pymk_connect"] != before["pymk_connect"] else None

            now = await eventually_async(versions_once_reloaded, timeout=60, interval=0.2)
            assert {k: v for k, v in now.items() if k != "pymk_connect"} == {
                k: v for k, v in before.items() if k != "pymk_connect"}
            assert versions_of(await client.score(example_request(), timeout=60))["pymk_connect"] == now["pymk_connect"]
            # Operators without Python: grpcurl finds AdminService by reflection.
            grpcurl = find_grpcurl()
            if grpcurl is not None:
                answer = subprocess.run([grpcurl, "-plaintext", served.target, "brew.v1.AdminService/ReloadPrompts"],
                                        capture_output=True, text=True, timeout=60)
                assert answer.returncode == 0, answer.stderr
                assert {t["name"] for t in json.loads(answer.stdout)["tasks"]} == set(before)
        assert served.process.poll() is None  # SIGHUP reloads; it does not stop the server
    assert "prompts reloaded" in served.stderr()
