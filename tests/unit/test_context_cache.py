"""The context cache never changes what a request is scored on: the same
groups with and without it, on the example and on seeded synthetic traffic
with repeat members; a changed field is a miss; the bound holds; a reload
starts empty."""

from __future__ import annotations

import dataclasses
import itertools

import pytest

from brew import defaults
from brew.context_cache import ContextCache, member_digest
from brew.types import ScoreRequest
from brew.v1 import ranking_pb2 as pb
from brew.verbalize import Verbalizer
from brew.wire import parse_request_json, request_from_proto
from loadtest.workload import SyntheticWorkload, WorkloadSpec
from serving.reload import checked_verbalizer


@pytest.fixture
def example() -> ScoreRequest:
    return request_from_proto(parse_request_json(defaults.EXAMPLE_REQUEST.read_text(encoding="utf-8")))


def groups_of(verbalizer: Verbalizer, request: ScoreRequest):
    return [verbalizer.prepare(request.member, task).group for task in request.tasks]


def test_cached_contexts_give_the_groups_of_fresh_rendering(shipped_tasks, demo_tokenizer, example):
    events: list[str] = []
    plain = Verbalizer(shipped_tasks, demo_tokenizer, 1024)
    cached = Verbalizer(shipped_tasks, demo_tokenizer, 1024, context_cache=ContextCache(64, events.append))
    spec = WorkloadSpec(tasks={"job_apply": 2, "feed_engagement": 1, "pymk_connect": 1}, candidates=(1, 8),
                        members=20, repeat_share=0.5, seed=11)
    synthetic = [request_from_proto(r) for r in itertools.islice(SyntheticWorkload(spec).requests(), 60)]
    for request in [example, example, *synthetic]:
        assert groups_of(cached, request) == groups_of(plain, request)
    assert events.count("hit") > 10 and events.count("miss") > 10  # repeat members were served from it


def test_the_member_id_is_not_part_of_the_key_but_every_field_read_is(shipped_tasks, demo_tokenizer, example):
    member = dataclasses.replace(example.member)  # a domain member: its digest from its fields
    assert member.digest is None
    cache: ContextCache = ContextCache(16)
    verbalizer = Verbalizer(shipped_tasks, demo_tokenizer, 1024, context_cache=cache)
    verbalizer.prepare(member, example.tasks[0])
    renamed = dataclasses.replace(member, member_id="someone-else")
    verbalizer.prepare(renamed, example.tasks[0])
    assert (cache.hits, cache.misses) == (1, 1)
    moved = dataclasses.replace(member, profile={**member.profile, "location": "Lisbon"})
    fresh = verbalizer.prepare(moved, example.tasks[0])
    assert cache.misses == 2 and "Lisbon" in fresh.context.text
    older = dataclasses.replace(member, history=member.history[:-1])
    assert member_digest(older) != member_digest(member)


def _changed(message: pb.ScoreCandidatesRequest, change) -> pb.ScoreCandidatesRequest:
    copy = pb.ScoreCandidatesRequest()
    copy.CopyFrom(message)
    change(copy.member)
    return copy


WIRE_CHANGES = {
    "profile field": lambda m: m.profile.__setitem__("location", "Lisbon"),
    "profile field added": lambda m: m.profile.__setitem__("hobby", "chess"),
    "history item dropped": lambda m: m.history.pop(),
    "action": lambda m: setattr(m.history[0], "action", "dismissed"),
    "time (one nanosecond)": lambda m: setattr(m.history[0].time, "nanos", m.history[0].time.nanos + 1),
    "item id": lambda m: setattr(m.history[0].item, "item_id", "other"),
    "item entity type": lambda m: setattr(m.history[0].item, "entity_type", "post"),
    "item field": lambda m: m.history[0].item.fields.__setitem__("title", "Astronaut"),
}


def test_members_from_the_wire_are_keyed_by_their_bytes_without_the_id(shipped_tasks, demo_tokenizer):
    message = parse_request_json(defaults.EXAMPLE_REQUEST.read_text(encoding="utf-8"))
    cache: ContextCache = ContextCache(64)
    verbalizer = Verbalizer(shipped_tasks, demo_tokenizer, 1024, context_cache=cache)
    member = request_from_proto(message).member
    assert member.digest is not None and member_digest(member) == member.digest
    verbalizer.prepare(member, request_from_proto(message).tasks[0])
    renamed = request_from_proto(_changed(message, lambda m: setattr(m, "member_id", "someone-else")))
    verbalizer.prepare(renamed.member, renamed.tasks[0])
    assert (cache.hits, cache.misses) == (1, 1)
    digests = {member.digest}
    for name, change in WIRE_CHANGES.items():
        changed = request_from_proto(_changed(message, change))
        assert changed.member.digest not in digests, name
        digests.add(changed.member.digest)
        plain = Verbalizer(shipped_tasks, demo_tokenizer, 1024)
        task = changed.tasks[0]
        assert verbalizer.prepare(changed.member, task).group == plain.prepare(changed.member, task).group, name
    assert cache.misses == 1 + len(WIRE_CHANGES)


def test_a_changed_copy_of_a_wire_member_does_not_keep_its_digest(example):
    assert example.member.digest is not None
    for copy in (dataclasses.replace(example.member, profile={}), dataclasses.replace(example.member, history=())):
        assert copy.digest is None and member_digest(copy) != example.member.digest


def test_a_wire_history_decodes_once_and_equals_its_interactions(example):
    history = example.member.history
    decoded = tuple(history)
    assert history == decoded and decoded == history and len(history) == len(decoded)
    assert all(a is b for a, b in zip(history, decoded)) and history[-1] is decoded[-1]
    assert history[:2] == decoded[:2]
    assert history != decoded[:-1] and history != "text"


def test_the_cache_keeps_at_most_its_entries_least_recently_used_out_first():
    cache: ContextCache = ContextCache(2)
    for key in ("a", "b", "a", "c"):  # "b" is the least recently used when "c" arrives
        cache.get_or_make((key,), lambda key=key: key.upper())
    assert len(cache) == 2 and cache.evictions == 1
    cache.get_or_make(("a",), lambda: pytest.fail("a was evicted"))
    assert cache.get_or_make(("b",), lambda: "B again") == "B again"


def test_a_reload_starts_with_an_empty_cache_of_the_same_size(shipped_tasks, demo_tokenizer, example):
    events: list[str] = []
    current = Verbalizer(shipped_tasks, demo_tokenizer, 1024, context_cache=ContextCache(32, events.append))
    current.prepare(example.member, example.tasks[0])
    reloaded = checked_verbalizer(defaults.PROMPTS_DIR, current)
    assert reloaded.context_cache is not current.context_cache
    assert reloaded.context_cache.entries == 32 and len(reloaded.context_cache) == 0
    reloaded.prepare(example.member, example.tasks[0])
    assert events == ["miss", "miss"]  # the reloaded set rendered afresh, reporting to the same place
