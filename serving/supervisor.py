"""The engine supervisor: a watchdog that notices a dead engine, and the restarts.

    serving ──(health check fails, or a batch fails)──> failed
    failed ──(backoff)──> restarting ──(new engine warm and healthy)──> serving
                               └──(start, warm-up or check fails)──> failed
    max_failures within failure_window_seconds: CrashLoopError, the process exits non-zero

While serving, the watchdog calls the engine's `check_health()` every
`probe_interval_seconds` (a dead vLLM engine core or a broken device is
seen even when no request comes); a check that raises or takes longer than
`probe_timeout_seconds` (a hung engine) fails the engine. So does a batch the
engine failed, reported by its dispatcher through `engine_failed`; news from
an engine that is no longer the current one (late failures of the engine
being replaced) is ignored.

On failure the lifecycle turns FAILED (health NOT_SERVING, calls UNAVAILABLE
at once). After a backoff (`initial_backoff_seconds`, doubled per failure
within the window, at most `max_backoff_seconds`) the supervisor retires
the failed engine (its queued callers get UNAVAILABLE, the engine is closed)
and starts a new one (RESTARTING): the server's `restart` builds it, installs
it with a new dispatcher, warms it up; its health check must pass before the
lifecycle turns SERVING again. A crash loop is left to the process manager
(systemd, Kubernetes): restarting the whole process is its job, and it
knows when to give up.

The server provides what is engine-specific (`current_engine`, `retire`,
`restart`); clock and sleep are injectable, so the loop is tested with fakes.
Waits are bounded with `asyncio.timeout`, not `asyncio.wait_for`: on Python
3.11, wait_for can swallow a cancellation that arrives as the awaited call
finishes, and the server's stop would then wait on the supervisor forever.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable

from brew.engines.base import ScoringEngine
from serving.config import SupervisorConfig
from serving.lifecycle import Lifecycle, Phase

log = logging.getLogger(__name__)

# How often the loop looks again while the server is loading or restarting.
POLL_SECONDS = 0.05


class CrashLoopError(RuntimeError):
    """The engine failed `max_failures` times within the failure window."""


class EngineSupervisor:
    def __init__(
        self,
        lifecycle: Lifecycle,
        config: SupervisorConfig,
        *,
        current_engine: Callable[[], ScoringEngine | None],
        retire: Callable[[], Awaitable[None]],
        restart: Callable[[], Awaitable[None]],
        on_restart: Callable[[bool], None] = lambda ok: None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._lifecycle = lifecycle
        self._config = config
        self._current_engine = current_engine
        self._retire = retire
        self._restart = restart
        self._on_restart = on_restart
        self._clock = clock
        self._sleep = sleep
        self._failures: deque[float] = deque()  # when the engine failed, within the window
        self._woken = asyncio.Event()

    def engine_failed(self, engine: ScoringEngine, error: BaseException) -> None:
        """A batch failed on `engine`: fail the server if it is the engine serving now."""
        if engine is self._current_engine() and self._lifecycle.serving:
            self._lifecycle.to_failed(error)
            self._woken.set()

    async def run(self) -> None:
        """Watch and restart until the server drains; CrashLoopError on a crash loop."""
        while True:
            phase = self._lifecycle.phase
            if phase is Phase.DRAINING:
                return
            if phase is Phase.SERVING:
                await self._watch()
            elif phase is Phase.FAILED:
                await self._recover()
            else:  # loading, or a restart driven from elsewhere
                await self._sleep(POLL_SECONDS)

    async def _watch(self) -> None:
        """One health check, then wait for the next (or for a reported failure)."""
        engine = self._current_engine()
        if engine is not None:
            try:
                async with asyncio.timeout(self._config.probe_timeout_seconds):
                    await engine.check_health()
            except TimeoutError:
                self._fail(engine, f"health check took over {self._config.probe_timeout_seconds:g}s")
                return
            except Exception as error:  # whatever the engine raises means it cannot score
                self._fail(engine, error)
                return
        self._woken.clear()
        if self._lifecycle.serving:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._config.probe_interval_seconds):
                    await self._woken.wait()

    def _fail(self, engine: ScoringEngine, error: BaseException | str) -> None:
        if engine is self._current_engine() and self._lifecycle.serving:
            log.error("engine health check failed: %s", error)
            self._lifecycle.to_failed(error)

    async def _recover(self) -> None:
        """Count the failure; give up on a crash loop, else back off and restart."""
        now = self._clock()
        self._failures.append(now)
        while self._failures and self._failures[0] < now - self._config.failure_window_seconds:
            self._failures.popleft()
        failures = len(self._failures)
        if failures >= self._config.max_failures:
            raise CrashLoopError(
                f"engine failed {failures} times within {self._config.failure_window_seconds:g}s "
                f"(last: {self._lifecycle.reason}); exiting for the process manager to take over"
            )
        config = self._config
        backoff = min(config.max_backoff_seconds, config.initial_backoff_seconds * 2 ** (failures - 1))
        log.warning("%s; restarting the engine in %.1fs (failure %d of at most %d within %gs)",
                    self._lifecycle.reason, backoff, failures, self._config.max_failures,
                    self._config.failure_window_seconds)
        await self._sleep(backoff)
        if self._lifecycle.phase is not Phase.FAILED:
            return  # draining meanwhile
        self._lifecycle.to_restarting()
        try:
            await self._retire()
            await self._restart()
            engine = self._current_engine()
            if engine is None:
                raise RuntimeError("the restart installed no engine")
            async with asyncio.timeout(self._config.probe_timeout_seconds):
                await engine.check_health()
        except Exception as error:  # any failure to come back is one more engine failure
            log.exception("engine restart failed")
            self._on_restart(False)
            self._lifecycle.to_failed(error)
            return
        self._on_restart(True)
        self._lifecycle.to_serving()
        log.info("engine restarted; serving again")
