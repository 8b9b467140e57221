"""A batch job from start to summary: plan, resume, score (here or on Ray), report.

The job is named by what decides its output: the input file (its path and
size), the shard size, the engine settings and the prompts' tasks. A rerun
of the same job in the same output directory continues after the shards
it finished (serving.batch.shards); any other job there is refused rather
than mixed in.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from brew.tasks import load_tasks
from serving.batch.columns import Outcome, Scored
from serving.batch.inputs import InputPlan, ShardPlan, plan_input
from serving.batch.settings import BatchSettings
from serving.batch.shards import ShardBook, TooManyErrors, open_output
from serving.config import ServerConfig


@dataclass(frozen=True)
class Summary:
    """What a run did; `stopped` says why it ended early, if it did."""

    rows: int  # rows of the whole input
    resumed_rows: int  # rows of shards an earlier run finished
    scored_requests: int
    candidates: int
    errors: int  # bad rows of this run
    shards_written: int
    shards_resumed: int
    seconds: float
    pipeline: str
    ready_seconds: float | None = None  # when the engine was ready (local; Ray's actors start apart)
    stopped: str | None = None

    @property
    def candidates_per_second(self) -> float:
        return self.candidates / self.seconds if self.seconds > 0 else 0.0

    @property
    def scoring_candidates_per_second(self) -> float | None:
        """Candidates/s once the engine was ready: the job without its start-up."""
        if self.ready_seconds is None or self.seconds <= self.ready_seconds:
            return None
        return self.candidates / (self.seconds - self.ready_seconds)

    def text(self) -> str:
        lines = [
            f"rows: {self.rows} in the input, {self.resumed_rows} done before (resumed), "
            f"{self.scored_requests + self.errors} this run",
            f"scored: {self.scored_requests} requests, {self.candidates} candidates",
            f"errors: {self.errors} rows",
            f"shards: {self.shards_written} written, {self.shards_resumed} resumed",
            f"time: {self.seconds:.1f} s, {self.candidates_per_second:.1f} candidates/s ({self.pipeline})",
        ]
        scoring = self.scoring_candidates_per_second
        if scoring is not None:
            lines.append(f"engine ready after {self.ready_seconds:.1f} s; {scoring:.1f} candidates/s since")
        if self.stopped:
            lines.append(f"stopped: {self.stopped}")
        return "\n".join(lines)


def uses_ray(batch: BatchSettings) -> bool:
    return batch.ray or bool(os.environ.get("RAY_ADDRESS"))


def job_identity(plan: InputPlan, config: ServerConfig, batch: BatchSettings) -> dict[str, Any]:
    return {
        "input": str(plan.path.resolve()), "input_bytes": plan.path.stat().st_size, "format": plan.format.value,
        "shard_requests": batch.shard_requests, "engine": config.engine.value, "model": str(config.model.resolve()),
        "dtype": config.dtype, "multi_item": config.multi_item.value, "prompts": str(config.prompts.resolve()),
    }


def task_table(config: ServerConfig) -> dict[str, Any]:
    """Each task's template version and labels (label_probs' order)."""
    return {name: {"version": task.version, "labels": list(task.labels), "positive_label": task.positive_label}
            for name, task in sorted(load_tasks(config.prompts).items())}


class _Progress:
    """The bar: requests done of the input, candidates/s of this run, the ETA."""

    def __init__(self, total: int, initial: int, enabled: bool) -> None:
        self._bar = tqdm(total=total, initial=initial, unit="req", desc="brew batch", disable=not enabled,
                         dynamic_ncols=True, smoothing=0.1)
        self._started = time.perf_counter()
        self.candidates = 0
        self._shown = self._started

    def advance(self, outcome: Outcome) -> None:
        if isinstance(outcome, Scored):
            self.candidates += len(outcome.rows)
        now = time.perf_counter()
        if now - self._shown > 0.5:
            self._shown = now
            self._bar.set_postfix_str(f"{self.candidates / (now - self._started):.1f} candidates/s", refresh=False)
        self._bar.update(1)

    def close(self) -> None:
        self._bar.close()


def run_job(input_path: Path, out_dir: Path, config: ServerConfig, batch: BatchSettings) -> Summary:
    """Score every unfinished shard of the input into `out_dir`. Raises
    OutputError (another job there), OSError, or what stopped the engine."""
    started = time.perf_counter()
    plan = plan_input(input_path, batch.shard_requests, batch.chunk_requests)
    manifest = open_output(out_dir, job_identity(plan, config, batch), task_table(config))
    todo = [shard for shard in plan.shards if shard.index not in manifest.shards]
    resumed = len(plan.shards) - len(todo)
    book = ShardBook(out_dir, manifest, todo, batch.shard_requests, batch.max_errors)
    errors_before = book.errors
    for index in book.empty_shards():
        book.commit(index)
    resumed_rows = manifest.totals()["requests"]
    progress = _Progress(plan.rows, resumed_rows, batch.progress)
    scored = 0

    def sink(outcome: Outcome) -> None:
        nonlocal scored
        progress.advance(outcome)
        scored += isinstance(outcome, Scored)
        finished = book.record(outcome)
        if finished is not None:
            book.commit(finished)

    pipeline = "ray" if uses_ray(batch) else "local"
    stopped = None
    ready: list[float] = []
    try:
        if any(shard.rows for shard in todo):  # a finished job's rerun starts no engine
            _score(pipeline, plan, todo, config, batch, sink, lambda: ready.append(time.perf_counter() - started))
    except TooManyErrors as error:
        stopped = str(error)
        book.flush_errors()
    except BaseException:
        book.flush_errors()
        raise
    finally:
        progress.close()
    return Summary(rows=plan.rows, resumed_rows=resumed_rows, scored_requests=scored,
                   candidates=progress.candidates, errors=book.errors - errors_before,
                   shards_written=len(book.committed), shards_resumed=resumed,
                   seconds=time.perf_counter() - started, pipeline=pipeline,
                   ready_seconds=ready[0] if ready else None, stopped=stopped)


def _score(pipeline: str, plan: InputPlan, todo: list[ShardPlan], config: ServerConfig, batch: BatchSettings,
           sink: Callable[[Outcome], None], on_ready: Callable[[], None]) -> None:
    if pipeline == "ray":
        from serving.batch.on_ray import score_on_ray

        score_on_ray(plan, todo, config, batch, sink)
        return
    from serving.batch.local import score_locally

    window = batch.window_candidates or config.batching.max_queue_candidates
    asyncio.run(score_locally(plan, todo, config, window, sink, on_ready))
