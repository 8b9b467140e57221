"""brew.wire_json reads a request's JSON into exactly the domain request
protobuf's own reading gives (brew.wire), and refuses exactly what protobuf
refuses, with protobuf's message: checked on generated requests, written in
both spellings, and on JSON that is not in the plain form. No model."""

from __future__ import annotations

import json

import pytest
from google.protobuf import json_format
from google.protobuf.timestamp_pb2 import Timestamp
from hypothesis import given, settings
from hypothesis import strategies as st

from brew import defaults
from brew.context_cache import member_digest
from brew.errors import InvalidRequestError
from brew.v1 import ranking_pb2 as pb
from brew.wire import request_from_proto
from brew.wire_json import request_from_json

texts = st.text(max_size=12)
fields = st.dictionaries(texts, texts, max_size=3)
items = st.builds(pb.Item, item_id=texts, entity_type=texts, fields=fields)
# Every second of protobuf's range, with any nanoseconds.
times = st.builds(Timestamp, seconds=st.integers(-62135596800, 253402300799), nanos=st.integers(0, 999_999_999))
interactions = st.builds(pb.Interaction, action=texts, item=items, time=times)
members = st.builds(pb.Member, member_id=texts, profile=fields, history=st.lists(interactions, max_size=4))
tasks = st.builds(pb.TaskCandidates, task=texts, candidates=st.lists(items, max_size=3))
requests = st.builds(pb.ScoreCandidatesRequest, request_id=texts, member=members,
                     tasks=st.lists(tasks, min_size=1, max_size=3))


def by_protobuf(body):  # type: ignore[no-untyped-def]
    return request_from_proto(json_format.ParseDict(body, pb.ScoreCandidatesRequest()))


@settings(max_examples=300)
@given(request=requests, proto_names=st.booleans())
def test_a_request_reads_as_protobuf_reads_it(request, proto_names):
    body = json.loads(json_format.MessageToJson(request, preserving_proto_field_name=proto_names))
    assert request_from_json(body) == by_protobuf(body)


def test_the_example_request_and_its_history(tmp_path):
    body = json.loads(defaults.EXAMPLE_REQUEST.read_text(encoding="utf-8"))
    read = request_from_json(body)
    assert read == by_protobuf(body)
    assert [i.timestamp for i in read.member.history] == [i.timestamp for i in by_protobuf(body).member.history]


def test_the_digest_keys_profile_and_history_not_the_member_id():
    body = json.loads(defaults.EXAMPLE_REQUEST.read_text(encoding="utf-8"))
    other = json.loads(json.dumps(body))
    other["member"]["memberId"] = "someone-else"
    assert member_digest(request_from_json(body).member) == member_digest(request_from_json(other).member)
    other["member"]["profile"]["title"] = "chef"
    assert member_digest(request_from_json(body).member) != member_digest(request_from_json(other).member)


@pytest.mark.parametrize("member", [
    {"history": [{"time": "2026-10-02T09:15:00+02:00"}]},  # an offset
    {"history": [{"time": "2026-10-02T09:15:00.5Z", "item": None}]},  # a null
    {"history": [{"action": "viewed", "time": "2026-02-29T00:00:00Z"}]},  # no such day
    {"profile": {"title": 7}},  # not a string
    {"profile": {}, "extra": 1},  # an unknown field
])
def test_json_not_in_the_plain_form_is_protobufs_to_judge(member):
    body = {"member": member, "tasks": [{"task": "job_apply", "candidates": [{"itemId": "j"}]}]}
    try:
        expected = by_protobuf(body)
    except json_format.ParseError as error:
        with pytest.raises(InvalidRequestError, match="does not match brew.v1.ScoreCandidatesRequest") as raised:
            request_from_json(body)
        assert str(error) in str(raised.value)
        return
    assert request_from_json(body) == expected


@pytest.mark.parametrize(("body", "message"), [
    ({"tasks": [{"task": "t"}]}, "member is missing"),
    ({"member": {}, "tasks": []}, "tasks is empty"),
    ([1, 2], "does not match"),
])
def test_what_brew_wire_refuses_is_refused_the_same(body, message):
    with pytest.raises(InvalidRequestError, match=message):
        request_from_json(body)
