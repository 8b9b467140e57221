"""The one interface every scoring engine implements.

An engine turns scoring groups (token ids) into label-token log-probabilities.
It knows nothing of tasks, templates or text: token ids cross this boundary,
never strings, so every engine sees exactly the same prompts.

The serving dispatcher hands an engine a whole batch: the work of several
callers (`CallerWork`, each one or more groups) in one `score_batch` call, so
an engine that can pack callers together (one forward pass for many members)
sees them all at once. Each caller keeps its own fate: its own result or
failure, and `abandon()` when it leaves (deadline, cancellation), which stops
that caller's work and no one else's.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from brew.types import GroupResult, ScoringGroup

if TYPE_CHECKING:
    from brew.engines.multi_item_rule import GroupPath
    from brew.engines.packing import PackingStats

# What an engine answers per caller: its results, one per group, or its failure.
CallerOutcome = list[GroupResult] | BaseException


class CallerWork:
    """One caller's share of an engine batch.

    `abandon()` marks the caller gone: an engine skips work not yet started
    for it and cancels work in flight (hooks registered with `on_abandon`).
    `deliver(outcome)` lets an engine hand a caller its outcome as soon as it
    is known, before the rest of the batch finishes; `on_delivered` is where
    the dispatcher listens.
    """

    __slots__ = ("groups", "_abandoned", "_abandon_hooks", "_delivered", "on_delivered")

    def __init__(self, groups: Sequence[ScoringGroup],
                 on_delivered: Callable[[CallerOutcome], None] | None = None) -> None:
        self.groups = tuple(groups)
        self._abandoned = False
        self._abandon_hooks: list[Callable[[], object]] = []
        self._delivered = False
        self.on_delivered = on_delivered

    @property
    def candidates(self) -> int:
        return sum(group.num_candidates for group in self.groups)

    @property
    def abandoned(self) -> bool:
        return self._abandoned

    def abandon(self) -> None:
        if self._abandoned:
            return
        self._abandoned = True
        for hook in self._abandon_hooks:
            hook()
        self._abandon_hooks.clear()

    def on_abandon(self, hook: Callable[[], object]) -> None:
        """Run `hook` when the caller leaves (at once if it already has)."""
        if self._abandoned:
            hook()
        else:
            self._abandon_hooks.append(hook)

    def deliver(self, outcome: CallerOutcome) -> None:
        """Hand the caller its outcome early; only the first delivery counts."""
        if self._delivered:
            return
        self._delivered = True
        if self.on_delivered is not None:
            self.on_delivered(outcome)


@runtime_checkable
class ScoringEngine(Protocol):
    """Async scoring of many callers' groups at once.

    `score_batch` returns one outcome per caller, in order: the caller's
    GroupResults (one per group, in order) or the exception that failed it.
    Raising from `score_batch` itself fails every caller of the batch.
    `score` is the one-caller form (evaluation, tests, `Ranker.score`).
    Cancelling the awaiting task aborts the engine work that has not
    finished. `check_health` raises if the engine can no longer score (its
    process died, its device failed); it is cheap, and the server's watchdog
    calls it every second or so, idle or busy. Nothing in an implementation
    may block the event loop.
    """

    @property
    def model_name(self) -> str: ...

    @property
    def max_model_len(self) -> int: ...

    async def score_batch(self, batch: Sequence[CallerWork]) -> list[CallerOutcome]: ...

    async def score(self, groups: Sequence[ScoringGroup]) -> list[GroupResult]: ...

    async def check_health(self) -> None: ...

    async def close(self) -> None: ...


@runtime_checkable
class PreparesBatches(Protocol):
    """An engine whose batch has host work worth doing ahead (the torch
    engine: its plan and pass inputs, pinned on CUDA). The dispatcher calls
    `prepare_batch` for batch k+1 while batch k is in `run_prepared`, and
    runs prepared batches one at a time, in order (serving.dispatcher), so
    the device does not wait for the host between batches.
    `score_batch(b)` is `run_prepared(await prepare_batch(b))`; the outcome
    rules are score_batch's."""

    async def prepare_batch(self, batch: Sequence[CallerWork]) -> Any: ...

    async def run_prepared(self, prepared: Any) -> list[CallerOutcome]: ...


@runtime_checkable
class ReportsForwardPasses(Protocol):
    """An engine that packs forward passes (torch multi-item) and reports what
    each cost: the server sets `on_forward` to its metrics hook."""

    on_forward: Callable[[PackingStats], None] | None


@runtime_checkable
class ReportsGroupPaths(Protocol):
    """An engine that packs some groups and scores others per candidate
    (brew.engines.multi_item_rule): it calls `on_group_path`, which the
    server sets to its metrics hook, once per group with the path taken."""

    on_group_path: Callable[[GroupPath], None] | None


async def score_one_caller(engine: ScoringEngine, groups: Sequence[ScoringGroup]) -> list[GroupResult]:
    """`score` in terms of `score_batch`: a batch of one caller."""
    (outcome,) = await engine.score_batch([CallerWork(groups)])
    if isinstance(outcome, BaseException):
        raise outcome
    return outcome


async def score_callers_concurrently(
    score: Callable[[Sequence[ScoringGroup]], Awaitable[list[GroupResult]]], batch: Sequence[CallerWork]
) -> list[CallerOutcome]:
    """`score_batch` for an engine that batches concurrent calls itself (vLLM
    schedules them into the same steps) or runs them one after another: one
    task per caller, all started in the same event-loop tick. A caller that
    leaves has its task cancelled (aborting its engine work); each outcome is
    delivered the moment its task ends."""

    def start(work: CallerWork) -> asyncio.Task[list[GroupResult]]:
        task = asyncio.ensure_future(score(work.groups))
        work.on_abandon(task.cancel)
        task.add_done_callback(lambda done: work.deliver(_outcome(done)))
        return task

    tasks = [start(work) for work in batch]
    await asyncio.gather(*tasks, return_exceptions=True)
    return [_outcome(task) for task in tasks]


def _outcome(task: asyncio.Task[list[GroupResult]]) -> CallerOutcome:
    if task.cancelled():
        return asyncio.CancelledError("the caller left")
    error = task.exception()
    return error if error is not None else task.result()
