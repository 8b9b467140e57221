"""Domain request -> brew.v1 API message, the one direction brew.wire lacks.

The server only ever reads requests (`brew.wire.request_from_proto`); the load
generator is the first caller that builds them from domain types (the
synthetic world's personas and items). The inverse of
`request_from_proto`, so a round trip gives back an equal request (history
timestamps to the nanosecond).
"""

from __future__ import annotations

from brew.types import Interaction, Item, Member, ScoreRequest
from brew.v1 import ranking_pb2 as pb


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
