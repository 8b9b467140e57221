"""Open-loop arrival schedules: when each request is meant to be sent.

An open-loop load test decides every send time before the run, from an
arrival process, and never waits for earlier answers: that is how independent
users reach a service, and it is what keeps a slow server from quietly slowing
the load down (coordinated omission). The schedule is a tuple of intended
send offsets, in seconds from the start of the run, computed by pure, seeded
functions, so a run can be repeated and the maths tested without a clock.

Three processes, all with mean rate `rate` (arrivals per second):

- fixed:   equal gaps of 1/rate, the first arrival at 0.
- poisson: exponential gaps (coefficient of variation 1), i.e. independent
           arrivals; the first arrival after one gap. Bounded by a duration
           it sends exactly round(rate x duration) arrivals: the Poisson
           process conditioned on its count (its arrival times are then
           sorted uniform draws over the window, the same burstiness), so
           the rate offered is the rate asked. An unconditioned count would
           add its own noise to every throughput figure (at 9 requests/s
           over 15 s its standard deviation is 9% of the count), and two
           runs at the same rate would differ by the load generator's dice.
- gamma:   gamma-distributed gaps with CV^2 = `burstiness`: 1 is Poisson,
           above 1 arrivals come in bursts separated by lulls, below 1 they
           are more regular than Poisson.

A schedule is bounded by `duration` (offsets < duration), by `count` (at most
that many arrivals), or both; at least one is required. Closed-loop load
(a fixed number of callers) has no schedule: see loadtest.runner.
"""

from __future__ import annotations

import enum
import math
import random
from collections.abc import Callable, Iterator


class Arrivals(str, enum.Enum):
    FIXED = "fixed"
    POISSON = "poisson"
    GAMMA = "gamma"

    def __str__(self) -> str:
        return self.value


def fixed_rate(rate: float, *, duration: float | None = None, count: int | None = None) -> tuple[float, ...]:
    """Offsets 0, 1/rate, 2/rate, ...: exactly `rate` per second."""
    _check(rate, duration, count)
    limit = _limit(rate, duration, count)
    # i / rate rather than a running sum: no accumulated rounding error.
    offsets = (index / rate for index in range(limit))
    return tuple(offset for offset in offsets if duration is None or offset < duration)


def poisson(
    rate: float, *, duration: float | None = None, count: int | None = None, seed: int = 0
) -> tuple[float, ...]:
    """A Poisson process: independent exponential gaps with mean 1/rate.

    Over a duration (and no smaller count), exactly round(rate x duration)
    arrivals, placed as a Poisson process given its count places them."""
    _check(rate, duration, count)
    rng = random.Random(seed)
    if duration is not None:
        in_window = round(rate * duration)
        if count is None or count >= in_window:
            return tuple(sorted(rng.uniform(0.0, duration) for _ in range(in_window)))
    return _accumulate(lambda: rng.expovariate(rate), duration, count)


def gamma(
    rate: float,
    burstiness: float,
    *,
    duration: float | None = None,
    count: int | None = None,
    seed: int = 0,
) -> tuple[float, ...]:
    """A gamma renewal process: gaps with mean 1/rate and CV^2 = burstiness.

    Gamma(shape k, scale s) has mean k*s and CV^2 1/k, so k = 1/burstiness and
    s = burstiness/rate.
    """
    _check(rate, duration, count)
    if not burstiness > 0 or not math.isfinite(burstiness):
        raise ValueError(f"burstiness must be a positive number (1 is Poisson), got {burstiness}")
    rng = random.Random(seed)
    shape, scale = 1.0 / burstiness, burstiness / rate
    return _accumulate(lambda: rng.gammavariate(shape, scale), duration, count)


def arrival_offsets(
    arrivals: Arrivals,
    rate: float,
    *,
    duration: float | None = None,
    count: int | None = None,
    burstiness: float = 1.0,
    seed: int = 0,
) -> tuple[float, ...]:
    """The schedule of one arrival process, by name (the CLI's entry point)."""
    if arrivals is Arrivals.FIXED:
        return fixed_rate(rate, duration=duration, count=count)
    if arrivals is Arrivals.POISSON:
        return poisson(rate, duration=duration, count=count, seed=seed)
    return gamma(rate, burstiness, duration=duration, count=count, seed=seed)


def _check(rate: float, duration: float | None, count: int | None) -> None:
    if not rate > 0 or not math.isfinite(rate):
        raise ValueError(f"rate must be a positive number of arrivals per second, got {rate}")
    if duration is None and count is None:
        raise ValueError("a schedule needs a bound: give a duration, a count, or both")
    if duration is not None and not duration > 0:
        raise ValueError(f"duration must be positive seconds, got {duration}")
    if count is not None and count < 0:
        raise ValueError(f"count must be >= 0, got {count}")


def _limit(rate: float, duration: float | None, count: int | None) -> int:
    """An upper bound on the number of fixed-rate arrivals."""
    by_duration = math.ceil(duration * rate) + 1 if duration is not None else None
    if count is None:
        assert by_duration is not None
        return by_duration
    return count if by_duration is None else min(count, by_duration)


def _accumulate(gap: Callable[[], float], duration: float | None, count: int | None) -> tuple[float, ...]:
    return tuple(_running_sum(gap, duration, count))


def _running_sum(gap: Callable[[], float], duration: float | None, count: int | None) -> Iterator[float]:
    """Arrival times of a renewal process: the sum of the gaps so far."""
    clock, emitted = 0.0, 0
    while count is None or emitted < count:
        clock += gap()
        if duration is not None and clock >= duration:
            return
        yield clock
        emitted += 1
