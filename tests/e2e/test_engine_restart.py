"""The engine supervisor end to end: on the torch engine, a dead engine is
noticed while idle and under calls, the server says NOT_SERVING and refuses
at once, restarts the engine and serves again, all in one process; a
`brew serve` whose engine keeps dying exits non-zero for its process
manager; and vLLM's engine core process killed under a live server is
replaced (one test: two vLLM starts).
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import grpc
import psutil
import pytest
from grpc_health.v1 import health_pb2
from live_server import client_for, running_server, scrape
from serve_process import SERVING_LINE, serve_env
from service_wire import example_request, scores
from waiting import eventually_async

from serving.client import RankingClient
from serving.lifecycle import Phase
from serving.server import EXIT_CRASH_LOOP, BrewServer

pytestmark = [pytest.mark.integration]

QUICK_RESTARTS = {"probe_interval_seconds": 0.1, "initial_backoff_seconds": 0.2, "max_backoff_seconds": 1.0}
BROKEN_SERVE = Path(__file__).with_name("broken_engine_serve.py")


async def broken_check() -> None:
    raise RuntimeError("simulated dead device")


async def broken_batch(prepared):  # type: ignore[no-untyped-def]
    raise RuntimeError("simulated device loss")


@asynccontextmanager
async def supervised(engine: str) -> AsyncIterator[tuple[BrewServer, RankingClient, list[Phase]]]:
    """A server restarting its engine quickly, a client, and the lifecycle phases it goes through."""
    async with running_server(engine=engine, supervisor=QUICK_RESTARTS) as server, \
            client_for(server) as client:
        phases: list[Phase] = []
        server.lifecycle.subscribe(phases.append)
        yield server, client, phases


async def serving_again(server, phases: list[Phase], failures: int, timeout: float = 60.0) -> None:
    """Until the lifecycle has failed `failures` times in all and serves again."""
    await eventually_async(lambda: {"failures": min(phases.count(Phase.FAILED), failures),
                                    "serving": server.lifecycle.serving},
                           equals={"failures": failures, "serving": True}, timeout=timeout, interval=0.02)


async def first_health_other_than_serving(client, timeout: float = 10.0) -> str:
    async def not_serving() -> str | None:
        status = await client.health(timeout=2.0)
        if status == health_pb2.HealthCheckResponse.SERVING:
            return None
        return health_pb2.HealthCheckResponse.ServingStatus.Name(status)

    return await eventually_async(not_serving, timeout=timeout)


@pytest.mark.asyncio
async def test_a_dead_engine_is_restarted_whether_idle_or_failing_calls():
    async with supervised("torch") as (server, client, phases):
        first = server.service.ranker.engine

        # Idle: no call comes, the watchdog's health check notices.
        first.check_health = broken_check
        assert await first_health_other_than_serving(client) == "NOT_SERVING"
        refused_at = time.monotonic()
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await client.score(example_request(), timeout=30)
        assert refused.value.code() is grpc.StatusCode.UNAVAILABLE  # at once, not after a timeout
        assert "simulated dead device" in refused.value.details() and time.monotonic() - refused_at < 1.0
        await serving_again(server, phases, failures=1)
        second = server.service.ranker.engine
        assert second is not first
        assert len(scores(await client.score(example_request(), timeout=30))) == 7

        # Under calls: every batch fails.
        second.run_prepared = broken_batch  # where the dispatcher runs its prepared batches
        with pytest.raises(grpc.aio.AioRpcError) as failed:
            await client.score(example_request(), timeout=30)
        assert failed.value.code() is grpc.StatusCode.UNAVAILABLE
        assert "simulated device loss" in failed.value.details()
        await serving_again(server, phases, failures=2)
        assert server.service.ranker.engine not in (first, second)
        assert len(scores(await client.score(example_request(), timeout=30))) == 7

        assert phases == [Phase.SERVING, Phase.FAILED, Phase.RESTARTING, Phase.SERVING,
                          Phase.FAILED, Phase.RESTARTING, Phase.SERVING]
        assert scrape(server).value("brew_engine_restarts_total", outcome="ok") == 2


def test_brew_serve_exits_non_zero_when_its_engine_keeps_dying(tmp_path):
    config = tmp_path / "server.toml"
    config.write_text("[supervisor]\nprobe_interval_seconds = 0.1\ninitial_backoff_seconds = 0.1\n"
                      "max_failures = 2\nfailure_window_seconds = 600\n")
    completed = subprocess.run(
        [sys.executable, str(BROKEN_SERVE), "serve", "--engine", "torch", "--port", "0",
         "--metrics-port", "0", "--config", str(config)],
        capture_output=True, text=True, timeout=180, stdin=subprocess.DEVNULL, env=serve_env(),
    )
    assert SERVING_LINE.search(completed.stdout), completed.stderr  # it served before the engine died
    assert completed.returncode == EXIT_CRASH_LOOP, completed.stderr
    assert "engine failed 2 times within 600s" in completed.stderr
    assert "restarting the engine in 0.1s" in completed.stderr  # it tried once before giving up


def engine_core_processes() -> list[psutil.Process]:
    """vLLM's engine core processes among this process's descendants (vLLM titles them VLLM::EngineCore)."""
    found = []
    for child in psutil.Process().children(recursive=True):
        try:
            if "EngineCore" in " ".join(child.cmdline()):
                found.append(child)
        except psutil.NoSuchProcess:
            pass
    return found


@pytest.mark.vllm
@pytest.mark.asyncio
async def test_a_killed_vllm_engine_core_is_replaced_and_the_server_serves_again():
    async with supervised("vllm") as (server, client, phases):
        first = server.service.ranker.engine
        (core,) = engine_core_processes()
        core.kill()  # idle: no call is in flight
        await serving_again(server, phases, failures=1, timeout=240)
        assert not core.is_running()
        (replacement,) = engine_core_processes()
        assert replacement.pid != core.pid and server.service.ranker.engine is not first
        assert len(scores(await client.score(example_request(), timeout=60))) == 7
        assert phases == [Phase.SERVING, Phase.FAILED, Phase.RESTARTING, Phase.SERVING]
