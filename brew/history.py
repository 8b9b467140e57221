"""History policies: small pure functions over a member's interactions.

The 360Brew paper found these levers matter at inference time: recency order,
per-item and total token budgets (drop the oldest first), dedupe of repeated
items by action priority, and downsampling of a dominant low-signal action such
as impressions. Each lever is one function here; `HistoryPolicy` chains them.
Determinism matters beyond tests: the same history must give the same prompt,
or the engine's prefix cache misses.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field

from brew.types import Interaction


@dataclass(frozen=True)
class Downsample:
    """Keep about `keep_rate` of the interactions with `action`, chosen by a
    stable hash of (item id, timestamp) so the choice never changes between
    requests."""

    action: str
    keep_rate: float

    def __post_init__(self) -> None:
        if not 0.0 <= self.keep_rate <= 1.0:
            raise ValueError(f"downsample keep_rate must be in [0, 1], got {self.keep_rate}")


@dataclass(frozen=True)
class HistoryPolicy:
    """How a task turns a raw history into the items its prompt shows.

    `action_priority` lists actions from strongest to weakest; it drives dedupe
    (an item seen several times keeps its strongest action). Budgets are in
    tokens of the model's tokenizer: `max_item_tokens` truncates one rendered
    item, `max_tokens` bounds the whole history (oldest dropped first).
    """

    max_item_tokens: int = 32
    max_tokens: int = 256
    max_items: int = 50
    action_priority: tuple[str, ...] = ()
    downsample: tuple[Downsample, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        for name in ("max_item_tokens", "max_tokens", "max_items"):
            if getattr(self, name) < 0:
                raise ValueError(f"history {name} must be >= 0, got {getattr(self, name)}")

    def select(self, history: Sequence[Interaction]) -> list[Interaction]:
        """Dedupe, downsample and order a history; token budgets come later,
        once items are rendered (`fit_token_budget`)."""
        return list(self.explain(history).kept)

    def explain(self, history: Sequence[Interaction]) -> HistorySelection:
        """`select`, with the reason each left-out interaction was left out.

        `select` is this function's `kept`, so a report built from it (such
        as `brew prompts render`) cannot drift from what is served."""
        dropped: list[DroppedInteraction] = []
        kept = dedupe_by_action_priority(history, self.action_priority)
        dropped += _left_out(history, kept, "duplicate item: a stronger or later action on it is kept")
        for rule in self.downsample:
            sampled = downsample_action(kept, rule)
            dropped += _left_out(kept, sampled, f"downsampled: {rule.action} keep_rate={rule.keep_rate}")
            kept = sampled
        ordered = order_chronologically(kept)
        kept = most_recent(ordered, self.max_items)
        dropped += _left_out(ordered, kept, f"older than the max_items={self.max_items} most recent")
        return HistorySelection(kept=tuple(kept), dropped=tuple(dropped))


@dataclass(frozen=True)
class DroppedInteraction:
    """An interaction the policy left out before any token budget, and why."""

    interaction: Interaction
    reason: str


@dataclass(frozen=True)
class HistorySelection:
    """The outcome of a policy's selection: the interactions it keeps, oldest
    first, and the ones it left out with their reasons."""

    kept: tuple[Interaction, ...]
    dropped: tuple[DroppedInteraction, ...]


def _left_out(before: Sequence[Interaction], after: Sequence[Interaction], reason: str) -> list[DroppedInteraction]:
    remaining = {id(interaction) for interaction in after}
    return [DroppedInteraction(i, reason) for i in before if id(i) not in remaining]


def order_chronologically(history: Sequence[Interaction]) -> list[Interaction]:
    """Oldest first, most recent last (closest to the candidate in the prompt).
    Ties keep their given order."""
    return sorted(history, key=lambda interaction: interaction.timestamp)


def most_recent(history: Sequence[Interaction], max_items: int) -> list[Interaction]:
    """The last `max_items` of a chronologically ordered history."""
    return list(history[-max_items:]) if max_items > 0 else []


def _priority_rank(action: str, priority: Sequence[str]) -> int:
    """Lower is stronger; actions not listed rank below all listed ones."""
    return priority.index(action) if action in priority else len(priority)


def dedupe_by_action_priority(
    history: Sequence[Interaction], priority: Sequence[str]
) -> list[Interaction]:
    """Keep one interaction per item: the strongest action, latest on ties.

    A member who viewed, then applied to, a job shows only "applied"; the
    prompt spends its budget on distinct items. Output keeps input order.
    """
    best: dict[str, Interaction] = {}
    for interaction in history:
        item_id = interaction.item.item_id
        current = best.get(item_id)
        if current is None or _is_better(interaction, current, priority):
            best[item_id] = interaction
    chosen = {id(interaction) for interaction in best.values()}
    return [interaction for interaction in history if id(interaction) in chosen]


def _is_better(candidate: Interaction, current: Interaction, priority: Sequence[str]) -> bool:
    rank_candidate = _priority_rank(candidate.action, priority)
    rank_current = _priority_rank(current.action, priority)
    if rank_candidate != rank_current:
        return rank_candidate < rank_current
    return candidate.timestamp >= current.timestamp


def stable_fraction(*parts: object) -> float:
    """A number in [0, 1) that depends only on `parts`: a deterministic coin."""
    digest = hashlib.blake2b("\x1f".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def downsample_action(history: Sequence[Interaction], rule: Downsample) -> list[Interaction]:
    """Drop about (1 - keep_rate) of `rule.action`, the same ones every time."""
    return [
        interaction
        for interaction in history
        if interaction.action != rule.action
        or stable_fraction(interaction.item.item_id, interaction.timestamp) < rule.keep_rate
    ]


def truncate_tokens(ids: Sequence[int], max_tokens: int) -> list[int]:
    """The first `max_tokens` ids: a long description keeps its beginning."""
    return list(ids[:max_tokens])


def fit_token_budget(token_counts: Sequence[int], max_tokens: int) -> int:
    """How many of the oldest items to drop so the rest fit in `max_tokens`.

    `token_counts` are per item, oldest first. Returns the index of the first
    item kept: the most recent items are the last to go.
    """
    total = sum(token_counts)
    start = 0
    while total > max_tokens and start < len(token_counts):
        total -= token_counts[start]
        start += 1
    return start
