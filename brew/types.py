"""Domain types shared by every layer.

They are frozen dataclasses with no behaviour beyond validation-free data:
proto conversion lives at the edge (`brew.wire`), scoring maths in
`brew.scoring`. Mappings are stored as given; callers treat them as read-only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Item:
    """Something a member can interact with or be shown: a job, a post, a member."""

    item_id: str
    entity_type: str
    fields: Mapping[str, str]


@dataclass(frozen=True)
class Interaction:
    """One past action of a member on an item, at a Unix time in seconds."""

    action: str
    item: Item
    timestamp: float


@dataclass(frozen=True)
class Member:
    """The member being ranked for: profile fields and interaction history.

    `digest` identifies the profile and history for the context cache
    (brew.context_cache.member_digest) when whoever built the member could
    compute it cheaper than the cache can (brew.wire: from the request's
    bytes). It is never an argument and `dataclasses.replace` does not copy
    it (`init=False`): a changed copy of a member cannot carry a stale one.
    """

    member_id: str
    profile: Mapping[str, str]
    history: Sequence[Interaction] = ()
    digest: bytes | None = field(default=None, init=False, repr=False, compare=False)


@dataclass(frozen=True)
class TaskRequest:
    """One task to score for the member, with its candidates in caller order."""

    task: str
    candidates: tuple[Item, ...]


@dataclass(frozen=True)
class ScoreRequest:
    """A whole request: one member, one or more tasks."""

    request_id: str
    member: Member
    tasks: tuple[TaskRequest, ...]


@dataclass(frozen=True)
class ScoringGroup:
    """The unit handed to an engine: one shared prefix, N candidate suffixes.

    The prompt of candidate i is `prefix_ids + suffix_ids[i]`; every candidate
    starts with exactly the same ids, so an engine can compute the prefix once.
    The score is read at the last position of each prompt, over `label_ids`.
    """

    prefix_ids: tuple[int, ...]
    suffix_ids: tuple[tuple[int, ...], ...]
    label_ids: tuple[int, ...]

    @property
    def num_candidates(self) -> int:
        return len(self.suffix_ids)

    def prompt_ids(self, index: int) -> tuple[int, ...]:
        """The full prompt of one candidate, as the model reads it."""
        return self.prefix_ids + self.suffix_ids[index]


@dataclass(frozen=True)
class CandidateLogprobs:
    """What an engine returns per candidate.

    `label_logprobs` are full-vocabulary log-probabilities (fp32 log-softmax
    over the whole vocabulary) of the label tokens, in the group's label order.
    `cached_tokens` counts prompt tokens the engine did not recompute.
    """

    label_logprobs: tuple[float, ...]
    prompt_tokens: int
    cached_tokens: int


@dataclass(frozen=True)
class GroupResult:
    """One engine result per candidate of a scoring group, in candidate order."""

    candidates: tuple[CandidateLogprobs, ...]


@dataclass(frozen=True)
class CandidateScore:
    """The score of one candidate for one task."""

    item_id: str
    score: float
    label_probs: tuple[float, ...]
    label_logprobs: tuple[float, ...]


@dataclass(frozen=True)
class TaskScores:
    """All scores of one task, in the order the candidates were given."""

    task: str
    template_version: str
    labels: tuple[str, ...]
    positive_label: str
    candidates: tuple[CandidateScore, ...]
    prefix_tokens: int
    prompt_tokens: int
    cached_prompt_tokens: int


@dataclass(frozen=True)
class ScoreResponse:
    """The answer to a ScoreRequest: one TaskScores per requested task, in order,
    with every server timing: waiting for an engine batch (queue), rendering
    and tokenizing (prepare), the engine batch (engine), and the whole call
    in the server (total)."""

    request_id: str
    model: str
    results: tuple[TaskScores, ...]
    prepare_seconds: float = 0.0
    engine_seconds: float = 0.0
    queue_seconds: float = 0.0
    total_seconds: float = 0.0
