"""A ScoreCandidatesRequest in the proto's JSON mapping, read straight into domain types.

The HTTP API's native endpoint gets requests as JSON. protobuf's own reader
(`json_format.ParseDict`) walks every field in Python, and measured about
2.5 ms for a 16-candidate request with a 20-item history: more than the
rest of the server spends on it. `request_from_json` reads the plain form
directly (lowerCamelCase or the proto's own field names, strings where the
proto has strings, timestamps as `YYYY-MM-DDTHH:MM:SS[.fraction]Z`) into
the same domain request `brew.wire.request_from_proto` builds, and hands
anything else to protobuf's reader, whose errors name the field: the
answer, or the error, is always the one protobuf's reading gives
(tests/unit/test_wire_json.py checks both on generated requests).

The member's digest (the context cache's key) is a hash of its profile and
history as written in the JSON, not of its id: equal text means equal
content, so a hit is always right; two spellings of one member (or one
member over gRPC and over JSON) only cost a miss.
"""

from __future__ import annotations

import calendar
import hashlib
import json
import re
from collections.abc import Mapping
from typing import Any

from google.protobuf import json_format

from brew.errors import InvalidRequestError
from brew.types import Interaction, Item, Member, ScoreRequest, TaskRequest
from brew.v1 import ranking_pb2 as pb
from brew.wire import request_from_proto

# Each field under its JSON name and its proto name; anything else is protobuf's to judge.
REQUEST_KEYS = {"requestId": "request_id", "request_id": "request_id", "member": "member", "tasks": "tasks"}
MEMBER_KEYS = {"memberId": "member_id", "member_id": "member_id", "profile": "profile", "history": "history"}
INTERACTION_KEYS = {"action": "action", "item": "item", "time": "time"}
ITEM_KEYS = {"itemId": "item_id", "item_id": "item_id", "entityType": "entity_type", "entity_type": "entity_type",
             "fields": "fields"}
TASK_KEYS = {"task": "task", "candidates": "candidates"}
# A UTC timestamp with at most nanoseconds; offsets and other forms go to protobuf's reader.
PLAIN_TIME = re.compile(r"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.(\d{1,9}))?Z")


class _NotPlain(Exception):
    """The JSON is not in the plain form read here: protobuf's reader decides."""


def request_from_json(body: Any) -> ScoreRequest:
    """The domain request of a parsed JSON body; InvalidRequestError naming
    the problem if it is not a ScoreCandidatesRequest."""
    try:
        return _plain_request(body)
    except _NotPlain:
        pass
    try:
        message = json_format.ParseDict(body, pb.ScoreCandidatesRequest())
    except (json_format.ParseError, ValueError, TypeError, AttributeError) as error:
        raise InvalidRequestError(f"request JSON does not match brew.v1.ScoreCandidatesRequest: {error}") from None
    return request_from_proto(message)


def _fields(value: Any, names: Mapping[str, str]) -> dict[str, Any]:
    """A JSON object's fields by proto name; _NotPlain for another type, an
    unknown key, a field spelled twice or a null."""
    if type(value) is not dict:
        raise _NotPlain
    fields = {}
    for key, field in value.items():
        name = names.get(key)
        if name is None or name in fields or field is None:
            raise _NotPlain
        fields[name] = field
    return fields


def _text(value: Any) -> str:
    if type(value) is not str:
        raise _NotPlain
    return value


def _texts(value: Any) -> dict[str, str]:
    if type(value) is not dict or not all(type(v) is str for v in value.values()):
        raise _NotPlain
    return value


def _list(value: Any) -> list[Any]:
    if type(value) is not list:
        raise _NotPlain
    return value


def _seconds(value: Any) -> float:
    """A plain UTC timestamp as protobuf reads it: whole seconds + nanos / 1e9."""
    found = PLAIN_TIME.fullmatch(_text(value))
    if found is None:
        raise _NotPlain
    year, month, day, hour, minute, second = (int(part) for part in found.groups()[:6])
    if not (1 <= year and 1 <= month <= 12 and 1 <= day <= calendar.monthrange(year, month)[1]
            and hour < 24 and minute < 60 and second < 60):
        raise _NotPlain
    nanos = int((found[7] or "").ljust(9, "0"))
    return calendar.timegm((year, month, day, hour, minute, second)) + nanos / 1e9


def _item(value: Any) -> Item:
    fields = _fields(value, ITEM_KEYS)
    return Item(item_id=_text(fields.get("item_id", "")), entity_type=_text(fields.get("entity_type", "")),
                fields=dict(_texts(fields.get("fields", {}))))


def _interaction(value: Any) -> Interaction:
    fields = _fields(value, INTERACTION_KEYS)
    return Interaction(action=_text(fields.get("action", "")), item=_item(fields.get("item", {})),
                       timestamp=_seconds(fields["time"]) if "time" in fields else 0.0)


def _plain_request(body: Any) -> ScoreRequest:
    request = _fields(body, REQUEST_KEYS)
    if "member" not in request or not request.get("tasks"):
        raise _NotPlain  # brew.wire names what is missing
    member = _fields(request["member"], MEMBER_KEYS)
    profile = _texts(member.get("profile", {}))
    history_json = _list(member.get("history", []))
    history = tuple(_interaction(interaction) for interaction in history_json)
    tasks = []
    for value in _list(request["tasks"]):
        task = _fields(value, TASK_KEYS)
        tasks.append(TaskRequest(task=_text(task.get("task", "")),
                                 candidates=tuple(_item(item) for item in _list(task.get("candidates", [])))))
    decoded = Member(member_id=_text(member.get("member_id", "")), profile=dict(profile), history=history)
    digest = hashlib.blake2b(json.dumps([profile, history_json], sort_keys=True, ensure_ascii=False).encode(
        "utf-8", "surrogatepass"), digest_size=16, person=b"brew.v1.json").digest()
    object.__setattr__(decoded, "digest", digest)  # frozen; set once, here (see Member.digest)
    return ScoreRequest(request_id=_text(request.get("request_id", "")), member=decoded, tasks=tuple(tasks))
