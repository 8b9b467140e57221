"""The tests' waiting helper: it returns the value that held, and on its
deadline fails naming the last value it saw."""

from __future__ import annotations

import asyncio
import itertools

import pytest
from waiting import eventually, eventually_async


def test_it_returns_the_first_value_that_holds():
    counter = itertools.count()
    assert eventually(lambda: next(counter) >= 3 and "ready", interval=0) == "ready"
    assert eventually(counter.__next__, equals=7, interval=0) == 7


def test_on_its_deadline_it_names_the_last_value_seen():
    with pytest.raises(AssertionError, match=r"not within 0.05 s: wanted 2, last value seen 1"):
        eventually(lambda: 1, equals=2, timeout=0.05)
    with pytest.raises(AssertionError, match=r"wanted a true value, last value seen \[\]"):
        eventually(list, timeout=0.05)


@pytest.mark.asyncio
async def test_the_async_form_lets_the_loop_run_and_awaits_a_coroutine_probe():
    seen: list[int] = []

    async def append_later() -> None:
        for n in range(3):
            await asyncio.sleep(0)
            seen.append(n)

    async def length() -> int:
        return len(seen)

    appending = asyncio.ensure_future(append_later())
    assert await eventually_async(length, equals=3, interval=0) == 3
    await appending


@pytest.mark.asyncio
async def test_the_async_deadline_bounds_a_probe_that_hangs():
    async def hang() -> None:
        await asyncio.Event().wait()

    with pytest.raises(AssertionError, match="last value seen none"):
        await eventually_async(hang, timeout=0.05)
    with pytest.raises(AssertionError, match="last value seen 0"):
        await eventually_async(lambda: 0, equals=1, timeout=0.05)


@pytest.mark.asyncio
async def test_a_timeout_raised_by_the_probe_itself_is_not_taken_for_the_deadline():
    def probe() -> None:
        raise TimeoutError("the probe's own")

    with pytest.raises(TimeoutError, match="the probe's own"):
        await eventually_async(probe)
