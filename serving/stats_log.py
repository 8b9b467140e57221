"""A periodic throughput line in the server log, as vLLM logs its engine stats.

    brew stats: 412.0 candidates/s, 51630 prompt tokens/s, 3.1 requests/s,
    mean batch 38.5 candidates, queue 12 candidates, in flight 64, cache hits 71.2%

Rates are over the last interval, from ServiceMetrics.totals. Nothing is
logged while the server is idle, so an idle server's log stays quiet.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from serving.metrics import ServiceMetrics, Totals

log = logging.getLogger("brew.stats")


@dataclass(frozen=True)
class Throughput:
    candidates_per_second: float
    prompt_tokens_per_second: float
    requests_per_second: float
    mean_batch_candidates: float
    cache_hit_share: float

    @classmethod
    def between(cls, before: Totals, after: Totals, seconds: float) -> Throughput:
        seconds = max(seconds, 1e-9)
        batches = after.batches - before.batches
        prompt_tokens = after.prompt_tokens - before.prompt_tokens
        return cls(
            candidates_per_second=(after.candidates - before.candidates) / seconds,
            prompt_tokens_per_second=prompt_tokens / seconds,
            requests_per_second=(after.requests - before.requests) / seconds,
            mean_batch_candidates=(after.batch_candidates - before.batch_candidates) / batches if batches else 0.0,
            cache_hit_share=(after.cached_tokens - before.cached_tokens) / prompt_tokens if prompt_tokens else 0.0,
        )


def format_line(rates: Throughput, queued: int, inflight: int) -> str:
    return (
        f"brew stats: {rates.candidates_per_second:.1f} candidates/s, "
        f"{rates.prompt_tokens_per_second:.0f} prompt tokens/s, {rates.requests_per_second:.1f} requests/s, "
        f"mean batch {rates.mean_batch_candidates:.1f} candidates, queue {queued} candidates, "
        f"in flight {inflight} candidates, cache hits {rates.cache_hit_share:.1%}"
    )


class ThroughputLogger:
    """Logs one line per interval while there is traffic."""

    def __init__(
        self,
        metrics: ServiceMetrics,
        interval_seconds: float,
        queued: Callable[[], int],
        inflight: Callable[[], int],
    ) -> None:
        self._metrics = metrics
        self._interval = interval_seconds
        self._queued = queued
        self._inflight = inflight
        self._stopped = asyncio.Event()

    def stop(self) -> None:
        self._stopped.set()

    async def run(self) -> None:
        before, then = self._metrics.snapshot(), time.monotonic()
        while not self._stopped.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._interval):
                    await self._stopped.wait()
            after, now = self._metrics.snapshot(), time.monotonic()
            queued, inflight = self._queued(), self._inflight()
            if after != before or queued or inflight:
                log.info(format_line(Throughput.between(before, after, now - then), queued, inflight))
            before, then = after, now
