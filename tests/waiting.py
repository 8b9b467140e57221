"""Waiting for a condition in tests: poll it until it holds or a deadline
passes, never a fixed sleep before an exact assertion.

A test that sleeps "long enough" and then checks a counter fails on a busy
machine and wastes time on an idle one. `eventually` (and `eventually_async`
inside a running event loop) calls a probe until its value holds, returns
that value, and on the deadline fails with the last value it saw:

    await eventually_async(lambda: counted(scrape(server)), equals=1)

Any module of tests/ imports it as `from waiting import ...` (pytest puts
tests/ on sys.path for tests/conftest.py).
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")

TIMEOUT_SECONDS = 10.0  # generous: a shared, busy machine is slow, not broken
INTERVAL_SECONDS = 0.01

_ANY = object()  # no `equals` given: a truthy value holds
_NOTHING = object()  # the probe has not returned yet


def _holds(value: object, equals: object) -> bool:
    return bool(value) if equals is _ANY else value == equals


def _failure(timeout: float, last: object, equals: object) -> AssertionError:
    wanted = "a true value" if equals is _ANY else repr(equals)
    shown = "none (the probe never returned)" if last is _NOTHING else repr(last)
    return AssertionError(f"not within {timeout:g} s: wanted {wanted}, last value seen {shown}")


def eventually(probe: Callable[[], T], *, equals: Any = _ANY, timeout: float = TIMEOUT_SECONDS,
               interval: float = INTERVAL_SECONDS) -> T:
    """Call `probe` every `interval` seconds until its value is truthy (or
    `== equals`, if given) and return that value; AssertionError with the
    last value after `timeout` seconds. Blocks the thread: in a coroutine,
    use `eventually_async`."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if _holds(value, equals):
            return value
        if time.monotonic() >= deadline:
            raise _failure(timeout, value, equals)
        time.sleep(interval)


async def eventually_async(probe: Callable[[], T | Awaitable[T]], *, equals: Any = _ANY,
                           timeout: float = TIMEOUT_SECONDS, interval: float = INTERVAL_SECONDS) -> T:
    """`eventually` for a running event loop: the loop runs between probes,
    the probe may be a coroutine function, and `timeout` bounds a probe that
    hangs too."""
    last: object = _NOTHING
    try:
        async with asyncio.timeout(timeout) as scope:
            while True:
                value = probe()
                if inspect.isawaitable(value):
                    value = await value
                if _holds(value, equals):
                    return value  # type: ignore[return-value]
                last = value
                await asyncio.sleep(interval)
    except TimeoutError:
        if not scope.expired():
            raise  # the probe's own TimeoutError
        raise _failure(timeout, last, equals) from None
