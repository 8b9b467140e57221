"""Workloads: seeded synthetic requests have the asked-for shape, and replay
files round-trip."""

from __future__ import annotations

import itertools
from collections import Counter
from dataclasses import replace

import pytest

from loadtest.workload import (
    ReplayWorkload,
    SyntheticWorkload,
    WorkloadSpec,
    candidate_count,
    write_requests_jsonl,
)

ENTITY = {"job_apply": "job", "feed_engagement": "post", "pymk_connect": "member"}


def take(spec: WorkloadSpec, count: int):
    return list(itertools.islice(SyntheticWorkload(spec).requests(), count))


def test_the_same_spec_gives_the_same_requests_byte_for_byte():
    spec = WorkloadSpec(tasks={"job_apply": 1, "pymk_connect": 1}, candidates=(2, 6), seed=5)
    first = [r.SerializeToString(deterministic=True) for r in take(spec, 40)]
    again = [r.SerializeToString(deterministic=True) for r in take(spec, 40)]
    other = [r.SerializeToString(deterministic=True) for r in take(replace(spec, seed=6), 40)]
    assert first == again
    assert first != other
    assert len({r.request_id for r in take(spec, 40)}) == 40


def test_task_mix_follows_the_weights():
    requests = take(WorkloadSpec(tasks={"job_apply": 3, "feed_engagement": 1}, candidates=(1, 1)), 800)
    tasks = Counter(task.task for r in requests for task in r.tasks)
    assert all(len(r.tasks) == 1 for r in requests)
    assert set(tasks) == {"job_apply", "feed_engagement"}
    assert tasks["job_apply"] / 800 == pytest.approx(0.75, abs=0.05)
    for request in requests:
        task = request.tasks[0]
        assert {c.entity_type for c in task.candidates} == {ENTITY[task.task]}


def test_candidate_counts_fixed_and_ranged():
    fixed = take(WorkloadSpec(candidates=(16, 16)), 30)
    assert {candidate_count(r) for r in fixed} == {16}
    ranged = take(WorkloadSpec(candidates=(2, 5)), 200)
    assert {candidate_count(r) for r in ranged} == {2, 3, 4, 5}
    ids = [c.item_id for r in ranged for c in r.tasks[0].candidates]
    assert len(ids) == len(set(ids))  # every candidate is a distinct item


def test_history_length_follows_the_range():
    short = take(WorkloadSpec(history=(2, 4), repeat_share=0.0, members=1000), 50)
    long = take(WorkloadSpec(history=(30, 40), repeat_share=0.0, members=1000), 50)
    # The world may add a repeat "viewed" event after a view or an application.
    assert all(2 <= len(r.member.history) <= 8 for r in short)
    assert all(len(r.member.history) >= 30 for r in long)


def repeat_share(requests) -> float:
    seen: set[str] = set()
    repeats = 0
    for request in requests:
        repeats += request.member.member_id in seen
        seen.add(request.member.member_id)
    return repeats / len(requests)


@pytest.mark.parametrize("share", [0.0, 0.3, 0.8])
def test_repeat_share_of_members(share):
    requests = take(WorkloadSpec(members=10_000, repeat_share=share, candidates=(1, 1), history=(1, 2)), 1000)
    assert repeat_share(requests) == pytest.approx(share, abs=0.05)


def test_a_repeated_member_is_sent_identically():
    requests = take(WorkloadSpec(members=3, repeat_share=0.5, candidates=(1, 1)), 60)
    members = {}
    for request in requests:
        members.setdefault(request.member.member_id, request.member)
        assert request.member == members[request.member.member_id]
    assert len(members) == 3  # the pool caps distinct members: every later request repeats
    assert repeat_share(requests) == pytest.approx(57 / 60)


def test_jsonl_replay_round_trip(tmp_path):
    originals = take(WorkloadSpec(tasks={"job_apply": 1, "feed_engagement": 1}, candidates=(1, 3)), 10)
    path = tmp_path / "requests.jsonl"
    assert write_requests_jsonl(originals, path) == 10
    assert len(path.read_text().splitlines()) == 10
    replayed = list(itertools.islice(ReplayWorkload(path).requests(), 21))
    assert replayed[:10] == originals
    # The file cycles; later passes get distinct request ids.
    assert replayed[10].request_id == f"{originals[0].request_id}~1"
    assert replayed[20].request_id == f"{originals[0].request_id}~2"
    replayed[10].request_id = originals[0].request_id
    assert replayed[10] == originals[0]


def test_replay_names_the_bad_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"requestId": "a"}\n\n{"requestId": 5, "nope": 1}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:3"):
        ReplayWorkload(path)
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(ValueError, match="no requests"):
        ReplayWorkload(tmp_path / "empty.jsonl")


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (dict(tasks={"nope": 1}), "has no synthetic candidates"),
        (dict(tasks={}), "tasks is empty"),
        (dict(tasks={"job_apply": 0}), "weights must be positive"),
        (dict(candidates=(0, 3)), "candidates per request"),
        (dict(candidates=(5, 3)), "candidates per request"),
        (dict(members=0), "at least one distinct member"),
        (dict(repeat_share=1.5), "repeat share"),
    ],
)
def test_invalid_workloads_say_what_to_fix(spec, message):
    with pytest.raises(ValueError, match=message):
        WorkloadSpec(**spec)
