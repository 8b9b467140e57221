"""The one interface every scoring engine implements.

An engine turns scoring groups (token ids) into label-token log-probabilities.
It knows nothing of tasks, templates or text: token ids cross this boundary,
never strings, so every engine sees exactly the same prompts.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from brew.types import GroupResult, ScoringGroup


@runtime_checkable
class ScoringEngine(Protocol):
    """Async scoring of many groups at once.

    `score` returns one GroupResult per group, in order. Cancelling the
    awaiting task aborts the engine work that has not finished. Nothing in an
    implementation may block the event loop.
    """

    @property
    def model_name(self) -> str: ...

    @property
    def max_model_len(self) -> int: ...

    async def score(self, groups: Sequence[ScoringGroup]) -> list[GroupResult]: ...

    async def close(self) -> None: ...
