"""What the scaling benchmark measures: the points of its two sweeps, the
settings of a measurement, and the group scored at each call.

A point is one group shape: `candidates` behind `history_tokens` of shared
prefix. Every call at a point scores a group of its own, seeded by (seed,
point, call), so no call can reuse another call's cached prefix and every
engine scores the same groups (see loadtest.bench.scaling for why).
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, field

from brew.engines import EngineKind, engine_variants
from brew.types import ScoringGroup

SUFFIX_TOKENS = 24
# Where scaling's [packing] flags land in its parsed options ("packing.max_row_tokens", ...).
PACKING_PREFIX = "packing."
FIRST_ID = 3  # ids 0-2 are the demo tokenizer's special tokens: random ids avoid them
SCALING_ENGINES = tuple(engine_variants())  # vllm, torch, torch-mis, naive
# Keeps a naive call to a few seconds on 2 CPU cores (8 x 4,096 tokens took 3 s).
DEFAULT_TOKEN_CAPS = {EngineKind.NAIVE.value: 40_000}


@dataclass(frozen=True, order=True)
class ScalingPoint:
    """One measured shape: a group of `candidates` behind `history_tokens` of prefix."""

    candidates: int
    history_tokens: int

    def prompt_tokens(self, suffix_tokens: int) -> int:
        """Tokens of all the group's prompts: what an engine without sharing runs."""
        return self.candidates * (self.history_tokens + suffix_tokens)


@dataclass(frozen=True)
class ScalingSweeps:
    """The two sweeps; a point in both (e.g. 32 candidates at 512 tokens) is measured once."""

    candidates: tuple[int, ...] = (1, 4, 16, 64, 256)
    history: tuple[int, ...] = (64, 256, 1024, 4096)
    fixed_history: int = 512
    fixed_candidates: int = 32

    def __post_init__(self) -> None:
        if not self.candidates or not self.history:
            raise ValueError("each sweep needs at least one value")
        if min(self.candidates) < 1 or self.fixed_candidates < 1:
            raise ValueError("candidate counts must be at least 1")
        if min(self.history) < 1 or self.fixed_history < 1:
            raise ValueError("history lengths must be at least 1 token")

    def candidates_points(self) -> list[ScalingPoint]:
        return [ScalingPoint(c, self.fixed_history) for c in sorted(set(self.candidates))]

    def history_points(self) -> list[ScalingPoint]:
        return [ScalingPoint(self.fixed_candidates, h) for h in sorted(set(self.history))]

    def points(self) -> list[ScalingPoint]:
        """Every distinct point, cheapest first."""
        return sorted(set(self.candidates_points()) | set(self.history_points()),
                      key=lambda p: (p.prompt_tokens(0), p))

    @property
    def longest_history(self) -> int:
        return max(p.history_tokens for p in self.points())


@dataclass(frozen=True)
class ScalingSettings:
    """Everything a measurement depends on besides the engine."""

    sweeps: ScalingSweeps
    repeats: int = 5
    seed: int = 0
    suffix_tokens: int = SUFFIX_TOKENS
    token_caps: Mapping[str, int] = field(default_factory=lambda: dict(DEFAULT_TOKEN_CAPS))

    def skip_reason(self, engine: str, point: ScalingPoint) -> str | None:
        cap = self.token_caps.get(engine)
        tokens = point.prompt_tokens(self.suffix_tokens)
        return None if cap is None or tokens <= cap else f"{tokens} prompt tokens > cap {cap}"


def label_ids_for(vocab_size: int, seed: int) -> tuple[int, int]:
    """Two distinct single-token labels, fixed for the whole run."""
    first, second = random.Random(f"labels:{seed}").sample(range(FIRST_ID, vocab_size), 2)
    return first, second


def make_group(point: ScalingPoint, *, vocab_size: int, suffix_tokens: int, label_ids: tuple[int, ...],
               seed: int, call: int) -> ScoringGroup:
    """The group for one call at `point`: random ids, seeded by (seed, point, call),
    so every call has its own prefix and every engine scores the same groups."""
    if vocab_size <= FIRST_ID or suffix_tokens < 1:
        raise ValueError("need a vocabulary beyond the special tokens and suffixes of at least 1 token")
    rng = random.Random(f"{seed}:{point.candidates}:{point.history_tokens}:{call}")

    def ids(n: int) -> tuple[int, ...]:
        return tuple(rng.randrange(FIRST_ID, vocab_size) for _ in range(n))

    return ScoringGroup(
        prefix_ids=ids(point.history_tokens),
        suffix_ids=tuple(ids(suffix_tokens) for _ in range(point.candidates)),
        label_ids=tuple(label_ids),
    )
