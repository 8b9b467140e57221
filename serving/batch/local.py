"""The batch pipeline in this process: read ahead, score through the service, hand on outcomes.

    reader (worker thread)      a chunk of rows, parsed to request messages
    window                      at most `window_candidates` read ahead
    ScoringService (in-process) decode + render on worker threads, the
                                dispatcher's engine batches (serving.service)
    sink                        every outcome, in the order they finish

The event loop only reads shapes and hands requests on; the rendering runs
on the service's worker threads while the engine scores the batches before,
and the window keeps enough work queued that the dispatcher forms full
batches, so the engine does not wait on the reader.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Callable, Iterable

from brew.context_cache import ContextCache
from brew.errors import InvalidRequestError
from brew.runtime import build_ranker
from brew.v1 import ranking_pb2 as pb
from serving.batch.columns import Failed, Outcome
from serving.batch.inputs import InputPlan, RawRow, ShardPlan, read_chunk
from serving.batch.rows import parse_row
from serving.batch.scorer import BatchScorer
from serving.config import ServerConfig
from serving.service import local_service
from serving.servicer import request_shape

Parsed = tuple[RawRow, pb.ScoreCandidatesRequest | Failed]


def parse_rows(rows: Iterable[RawRow]) -> list[Parsed]:
    """Each row's request message, or its Failed outcome."""
    parsed: list[Parsed] = []
    for row in rows:
        try:
            parsed.append((row, parse_row(row.payload)))
        except InvalidRequestError as error:
            parsed.append((row, Failed(row.index, row.line, None, error.reason, str(error))))
    return parsed


async def score_locally(plan: InputPlan, shards: Iterable[ShardPlan], config: ServerConfig,
                        window_candidates: int, sink: Callable[[Outcome], None],
                        on_ready: Callable[[], None] = lambda: None) -> None:
    """Score every row of `shards` on one engine (`on_ready` once it is
    started); raises what stopped the job (the sink's TooManyErrors, an
    engine failure)."""
    cache = ContextCache(config.context_cache_entries) if config.context_cache_entries else None
    ranker = await build_ranker(config.model, config.prompts, config.engine, **config.engine_options(),
                                context_cache=cache)
    try:
        async with local_service(ranker, config) as service:
            freeze_startup_objects()
            on_ready()
            await _run(plan, shards, BatchScorer(service, window_candidates), sink)
    finally:
        gc.unfreeze()  # the job is over; the process (a caller of run_job, a test) goes on
        await ranker.engine.close()


def freeze_startup_objects() -> None:
    """What start-up built (modules, the engine) lives as long as the job:
    out of the garbage collector's reach, as `brew serve` does after its
    start-up, so no collection walks it again while millions of rows pass."""
    gc.collect()
    gc.freeze()


async def _run(plan: InputPlan, shards: Iterable[ShardPlan], scorer: BatchScorer,
               sink: Callable[[Outcome], None]) -> None:
    pending: set[asyncio.Task[Outcome]] = set()
    stopped: list[BaseException] = []

    def finished(task: asyncio.Task[Outcome]) -> None:
        pending.discard(task)
        if task.cancelled() or stopped:
            return
        try:
            sink(task.result())
        except BaseException as error:  # the engine's failure, or the sink's TooManyErrors: the job stops
            stopped.append(error)

    try:
        for shard in shards:
            for chunk in shard.chunks:
                parsed = await asyncio.to_thread(lambda: parse_rows(read_chunk(plan.path, plan.format, chunk)))
                for row, message in parsed:
                    if stopped:
                        raise stopped[0]
                    if isinstance(message, Failed):
                        sink(message)
                        continue
                    await scorer.window.acquire(request_shape(message).candidates)
                    task = asyncio.create_task(scorer.score(row.index, row.line, message))
                    pending.add(task)
                    task.add_done_callback(finished)
        while pending and not stopped:
            await asyncio.wait(set(pending), return_when=asyncio.FIRST_COMPLETED)
        if stopped:
            raise stopped[0]
    finally:
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
