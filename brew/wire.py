"""The edge between the brew.v1 API messages and the domain types.

Every conversion lives here and only here (no `to_pb()` on domain types):
the gRPC servicer and the CLI both read requests through `request_from_proto`
and write responses through `response_to_proto`. The request JSON files are
the proto's canonical JSON mapping, so one file works with `brew score`,
grpcurl and the load generator.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from typing import overload

from google.protobuf import json_format

from brew.errors import InvalidRequestError
from brew.tasks import Task, TaskRegistry
from brew.types import Interaction, Item, Member, ScoreRequest, ScoreResponse, TaskRequest
from brew.v1 import ranking_pb2 as pb


def parse_request_json(text: str) -> pb.ScoreCandidatesRequest:
    """A ScoreCandidatesRequest from its JSON mapping (camelCase or snake_case)."""
    try:
        return json_format.Parse(text, pb.ScoreCandidatesRequest())
    except json_format.ParseError as error:
        raise InvalidRequestError(f"request JSON does not match brew.v1.ScoreCandidatesRequest: {error}") from error


def message_to_json(message) -> str:  # type: ignore[no-untyped-def]
    """Any API message as indented JSON in the proto's mapping."""
    return json_format.MessageToJson(message, indent=2)


def item_from_proto(item: pb.Item) -> Item:
    return Item(item_id=item.item_id, entity_type=item.entity_type, fields=dict(item.fields))


def interaction_from_proto(interaction: pb.Interaction) -> Interaction:
    return Interaction(
        action=interaction.action,
        item=item_from_proto(interaction.item),
        timestamp=interaction.time.seconds + interaction.time.nanos / 1e9,
    )


class WireHistory(Sequence[Interaction]):
    """A member's history as it came in the request, decoded on first use.

    A repeat member's context comes from the context cache, keyed by the
    member's wire digest, and never reads the history; decoding it costs
    more than the rest of the request's conversion (BENCHMARKS.md). Decoded
    once, so every reader sees the same Interaction objects; equal to any
    sequence of the same interactions."""

    __slots__ = ("_messages", "_decoded")

    def __init__(self, messages: Sequence[pb.Interaction]) -> None:
        self._messages = messages
        self._decoded: tuple[Interaction, ...] | None = None

    def _interactions(self) -> tuple[Interaction, ...]:
        if self._decoded is None:
            self._decoded = tuple(interaction_from_proto(message) for message in self._messages)
        return self._decoded

    def __len__(self) -> int:
        return len(self._messages)

    @overload
    def __getitem__(self, index: int) -> Interaction: ...
    @overload
    def __getitem__(self, index: slice) -> tuple[Interaction, ...]: ...
    def __getitem__(self, index: int | slice) -> Interaction | tuple[Interaction, ...]:
        return self._interactions()[index]

    def __iter__(self) -> Iterator[Interaction]:
        return iter(self._interactions())

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Sequence) and not isinstance(other, str) and self._interactions() == tuple(other)

    __hash__ = None  # type: ignore[assignment]  # like the list it stands for

    def __repr__(self) -> str:
        return repr(self._interactions())


def wire_digest(member: pb.Member) -> bytes:
    """The context cache's key for a member (brew.context_cache), from its
    message: a hash of its deterministic serialization without the member
    id, so of exactly its profile and history. One serialization in C, a
    fifth of hashing the decoded fields. Keyed apart from the decoded
    members' digests (`person`), so the two never meet."""
    anonymous = pb.Member()
    anonymous.CopyFrom(member)
    anonymous.ClearField("member_id")
    return hashlib.blake2b(anonymous.SerializeToString(deterministic=True), digest_size=16,
                           person=b"brew.v1.Member").digest()


def member_from_proto(member: pb.Member) -> Member:
    """The domain member, its history decoded on first use, its digest
    from the wire (see Member.digest)."""
    decoded = Member(member_id=member.member_id, profile=dict(member.profile), history=WireHistory(member.history))
    object.__setattr__(decoded, "digest", wire_digest(member))  # frozen; set once, here
    return decoded


def request_from_proto(request: pb.ScoreCandidatesRequest) -> ScoreRequest:
    """Domain request from the API message; structural checks only (tasks and
    templates are checked when verbalized)."""
    if not request.HasField("member"):
        raise InvalidRequestError("member is missing; every request scores for one member")
    if not request.tasks:
        raise InvalidRequestError("tasks is empty; name at least one task with its candidates")
    member = member_from_proto(request.member)
    tasks = tuple(
        TaskRequest(task=task.task, candidates=tuple(item_from_proto(c) for c in task.candidates))
        for task in request.tasks
    )
    return ScoreRequest(request_id=request.request_id, member=member, tasks=tasks)


def response_to_proto(response: ScoreResponse) -> pb.ScoreCandidatesResponse:
    results = [
        pb.TaskScores(
            task=result.task,
            template_version=result.template_version,
            labels=list(result.labels),
            positive_label=result.positive_label,
            scores=[
                pb.CandidateScore(
                    item_id=c.item_id,
                    score=c.score,
                    label_probs=list(c.label_probs),
                    label_logprobs=list(c.label_logprobs),
                )
                for c in result.candidates
            ],
            tokens=pb.TokenCounts(
                prefix_tokens=result.prefix_tokens,
                prompt_tokens=result.prompt_tokens,
                cached_prompt_tokens=result.cached_prompt_tokens,
            ),
        )
        for result in response.results
    ]
    return pb.ScoreCandidatesResponse(
        request_id=response.request_id,
        results=results,
        model=response.model,
        timing=pb.ServerTiming(
            queue_seconds=response.queue_seconds,
            prepare_seconds=response.prepare_seconds,
            engine_seconds=response.engine_seconds,
            total_seconds=response.total_seconds,
        ),
    )


def task_info(task: Task) -> pb.TaskInfo:
    return pb.TaskInfo(
        name=task.name,
        description=task.description,
        version=task.version,
        labels=list(task.labels),
        positive_label=task.positive_label,
    )


def list_tasks_response(tasks: TaskRegistry, model: str) -> pb.ListTasksResponse:
    return pb.ListTasksResponse(tasks=[task_info(t) for t in tasks.values()], model=model)


# --- domain request -> API message ----------------------------------------------------
# The server only reads requests; the load generator builds them from domain
# types (the synthetic world's personas and items). The inverse of
# `request_from_proto`: a round trip gives back an equal request (history
# timestamps to the nanosecond).

def item_to_proto(item: Item) -> pb.Item:
    return pb.Item(item_id=item.item_id, entity_type=item.entity_type, fields=dict(item.fields))


def interaction_to_proto(interaction: Interaction) -> pb.Interaction:
    message = pb.Interaction(action=interaction.action, item=item_to_proto(interaction.item))
    nanos = round(interaction.timestamp * 1e9)
    message.time.seconds, message.time.nanos = divmod(nanos, 1_000_000_000)
    return message


def member_to_proto(member: Member) -> pb.Member:
    return pb.Member(
        member_id=member.member_id,
        profile=dict(member.profile),
        history=[interaction_to_proto(interaction) for interaction in member.history],
    )


def request_to_proto(request: ScoreRequest) -> pb.ScoreCandidatesRequest:
    return pb.ScoreCandidatesRequest(
        request_id=request.request_id,
        member=member_to_proto(request.member),
        tasks=[
            pb.TaskCandidates(task=task.task, candidates=[item_to_proto(c) for c in task.candidates])
            for task in request.tasks
        ],
    )
