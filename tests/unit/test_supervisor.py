"""The engine supervisor with fake engines, a fake clock and a recording
sleep: failures seen idle or reported by a batch, restarts with backoff,
late news ignored, a crash loop given up on. Milliseconds."""

from __future__ import annotations

import asyncio

import pytest
from waiting import eventually_async

from serving.config import SupervisorConfig
from serving.lifecycle import Lifecycle, Phase
from serving.supervisor import CrashLoopError, EngineSupervisor

pytestmark = pytest.mark.asyncio

QUICK = SupervisorConfig(probe_interval_seconds=0.005, probe_timeout_seconds=0.05,
                         initial_backoff_seconds=1.0, max_backoff_seconds=4.0, max_failures=4,
                         failure_window_seconds=60.0)


class FakeEngine:
    def __init__(self, name: str) -> None:
        self.name = name
        self.broken: BaseException | None = None
        self.hung = False
        self.checks = 0

    async def check_health(self) -> None:
        self.checks += 1
        if self.hung:
            await asyncio.Event().wait()
        if self.broken is not None:
            raise self.broken


class Harness:
    """A lifecycle, the engine serving now, and what a restart brings next
    (an engine, or the error the restart fails with)."""

    def __init__(self, *replacements: FakeEngine | BaseException, config: SupervisorConfig = QUICK) -> None:
        self.lifecycle = Lifecycle()
        self.phases: list[Phase] = []
        self.lifecycle.subscribe(self.phases.append)
        self.engine = FakeEngine("first")
        self.replacements = list(replacements)
        self.retired: list[str] = []
        self.restarts: list[bool] = []
        self.sleeps: list[float] = []
        self.now = 0.0
        self.supervisor = EngineSupervisor(
            self.lifecycle, config, current_engine=lambda: self.engine, retire=self.retire,
            restart=self.restart, on_restart=self.restarts.append, clock=lambda: self.now, sleep=self.sleep,
        )
        self.lifecycle.to_serving()

    async def retire(self) -> None:
        self.retired.append(self.engine.name)

    async def restart(self) -> None:
        replacement = self.replacements.pop(0)
        if isinstance(replacement, BaseException):
            raise replacement
        self.engine = replacement

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)

    async def until(self, condition, timeout: float = 2.0) -> None:  # type: ignore[no-untyped-def]
        await eventually_async(condition, timeout=timeout, interval=0.001)


async def stopped(running: asyncio.Task[None]) -> None:
    running.cancel()
    await asyncio.gather(running, return_exceptions=True)


async def test_a_dead_engine_is_seen_while_idle_and_replaced():
    harness = Harness(FakeEngine("second"))
    running = asyncio.create_task(harness.supervisor.run())
    await harness.until(lambda: harness.engine.checks >= 3)
    assert harness.phases == [Phase.LOADING, Phase.SERVING]  # healthy: nothing happens
    harness.engine.broken = RuntimeError("engine core died")
    await harness.until(lambda: harness.engine.name == "second" and harness.lifecycle.serving)
    assert harness.phases[1:] == [Phase.SERVING, Phase.FAILED, Phase.RESTARTING, Phase.SERVING]
    assert harness.retired == ["first"] and harness.restarts == [True]
    assert harness.sleeps == [1.0]  # the first backoff
    await stopped(running)


async def test_a_batch_failure_of_the_current_engine_fails_it_and_old_news_is_ignored():
    second = FakeEngine("second")
    harness = Harness(second)
    first = harness.engine
    running = asyncio.create_task(harness.supervisor.run())
    harness.supervisor.engine_failed(first, RuntimeError("device lost"))
    assert harness.lifecycle.phase is Phase.FAILED  # at once: calls are refused from now on
    assert "device lost" in harness.lifecycle.reason
    await harness.until(lambda: harness.lifecycle.serving)
    harness.supervisor.engine_failed(first, RuntimeError("late failure of the engine replaced"))
    assert harness.lifecycle.serving and harness.engine is second
    await stopped(running)


async def test_a_hung_health_check_fails_the_engine():
    harness = Harness(FakeEngine("second"))
    harness.engine.hung = True
    running = asyncio.create_task(harness.supervisor.run())
    await harness.until(lambda: harness.engine.name == "second" and harness.lifecycle.serving)
    assert Phase.FAILED in harness.phases
    await stopped(running)


async def test_a_replacement_that_fails_its_health_check_is_one_more_failure():
    sick = FakeEngine("sick")
    sick.broken = RuntimeError("still broken")
    harness = Harness(sick, FakeEngine("third"))
    harness.engine.broken = RuntimeError("broken")
    running = asyncio.create_task(harness.supervisor.run())
    await harness.until(lambda: harness.engine.name == "third" and harness.lifecycle.serving)
    assert harness.restarts == [False, True] and harness.sleeps == [1.0, 2.0]
    await stopped(running)


async def test_backoff_doubles_up_to_its_cap_and_a_crash_loop_gives_up():
    harness = Harness(*(OSError(f"cannot load the model ({n})") for n in range(10)))
    harness.engine.broken = RuntimeError("broken")
    with pytest.raises(CrashLoopError, match="engine failed 4 times within 60s"):
        await asyncio.wait_for(harness.supervisor.run(), timeout=2.0)
    assert harness.sleeps == [1.0, 2.0, 4.0]
    assert harness.restarts == [False, False, False]
    assert harness.lifecycle.phase is Phase.FAILED


async def test_failures_spread_wider_than_the_window_are_no_crash_loop():
    config = SupervisorConfig(probe_interval_seconds=0.005, initial_backoff_seconds=1.0,
                              max_backoff_seconds=1.0, max_failures=2, failure_window_seconds=5.0)
    engines = [FakeEngine(f"engine-{n}") for n in range(4)]
    harness = Harness(*engines, config=config)
    running = asyncio.create_task(harness.supervisor.run())
    for engine in engines:
        harness.now += 10.0  # the last failure left the window
        harness.engine.broken = RuntimeError("broken")
        await harness.until(lambda engine=engine: harness.engine is engine and harness.lifecycle.serving)
    assert not running.done()
    await stopped(running)


async def test_draining_ends_the_supervisor():
    harness = Harness()
    running = asyncio.create_task(harness.supervisor.run())
    harness.lifecycle.to_draining()
    await asyncio.wait_for(running, timeout=1.0)
    harness.supervisor.engine_failed(harness.engine, RuntimeError("late"))
    assert harness.lifecycle.phase is Phase.DRAINING
