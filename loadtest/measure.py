"""The two measurements every sweep is written against, as callables.

An open-loop run at a rate, or a closed-loop run with a number of callers,
each answered by its Summary. The capacity search (loadtest.capacity), the
saturation runs (loadtest.saturation) and the overload sweep
(loadtest.overload) take them as arguments, so their logic is tested with
plain functions and no server; loadtest.commands.Steps and the side-by-side
benchmark's runs are the real ones.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from loadtest.summary import Summary

Measure = Callable[[float], Awaitable[Summary]]  # requests/s -> the summary of an open-loop run
ClosedLoop = Callable[[int], Awaitable[Summary]]  # callers -> the summary of a closed-loop run
