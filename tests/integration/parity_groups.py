"""The groups every engine-parity test scores, and how far two engines' scores are apart.

Hand-made shapes on the tiny models' vocabulary: prefixes and suffixes of
different lengths, more candidates than one batch holds, empty suffixes.
Shared by the CPU parity tests (test_engine_parity) and the GPU ones
(test_gpu_parity), which must not need each other's dependencies.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from tiny_model import VOCAB_SIZE

from brew.types import GroupResult, ScoringGroup

PARITY_TOLERANCE = 1e-4
FIRST_REAL_ID = 3  # ids 0-2 are <s>, </s>, <pad>


def random_groups(seed: int) -> list[ScoringGroup]:
    """Hand-made shapes: (prefix length, candidates, labels), suffixes 1-30 tokens."""
    rng = random.Random(seed)

    def ids(length: int) -> tuple[int, ...]:
        return tuple(rng.randrange(FIRST_REAL_ID, VOCAB_SIZE) for _ in range(length))

    def group(prefix_len: int, candidates: int, labels: int) -> ScoringGroup:
        return ScoringGroup(
            prefix_ids=ids(prefix_len),
            suffix_ids=tuple(ids(rng.randint(1, 30)) for _ in range(candidates)),
            label_ids=tuple(rng.sample(range(FIRST_REAL_ID, VOCAB_SIZE), labels)),
        )

    with_empty_suffixes = ScoringGroup(ids(33), ((), ids(5), (), ids(1)), (10, 20))
    return [group(20, 1, 2), group(200, 70, 4), group(77, 9, 2), with_empty_suffixes]


GROUPS = random_groups(seed=0)


def max_gap(left: Sequence[GroupResult], right: Sequence[GroupResult]) -> float:
    return max(
        abs(a - b)
        for group_left, group_right in zip(left, right, strict=True)
        for cand_left, cand_right in zip(group_left.candidates, group_right.candidates, strict=True)
        for a, b in zip(cand_left.label_logprobs, cand_right.label_logprobs, strict=True)
    )
