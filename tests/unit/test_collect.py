"""The pure batch-collection function, with plain numbers."""

from __future__ import annotations

from serving.collect import Queued, collect_batch


def queue(*entries: tuple[str, int, float | None]) -> list[Queued[str]]:
    return [Queued(payload, candidates, deadline) for payload, candidates, deadline in entries]


def names(entries: list[Queued[str]]) -> list[str]:
    return [entry.payload for entry in entries]


def test_requests_are_taken_in_arrival_order_up_to_the_limit():
    entries = queue(("a", 3, None), ("b", 4, None), ("c", 2, None))
    collected = collect_batch(entries, max_candidates=8, now=0.0)
    assert names(collected.batch) == ["a", "b"] and collected.batch_candidates == 7
    assert names(collected.remaining) == ["c"] and collected.expired == []


def test_a_batch_can_be_filled_exactly():
    entries = queue(("a", 4, None), ("b", 4, None), ("c", 1, None))
    collected = collect_batch(entries, max_candidates=8, now=0.0)
    assert names(collected.batch) == ["a", "b"] and collected.batch_candidates == 8
    assert names(collected.remaining) == ["c"]


def test_no_overtaking_a_small_request_waits_behind_one_that_does_not_fit():
    entries = queue(("a", 6, None), ("big", 5, None), ("small", 1, None))
    collected = collect_batch(entries, max_candidates=8, now=0.0)
    assert names(collected.batch) == ["a"]
    assert names(collected.remaining) == ["big", "small"]


def test_a_request_larger_than_the_limit_goes_alone_at_the_head():
    collected = collect_batch(queue(("huge", 20, None), ("b", 1, None)), max_candidates=8, now=0.0)
    assert names(collected.batch) == ["huge"] and collected.batch_candidates == 20
    assert names(collected.remaining) == ["b"]


def test_expired_requests_are_taken_out_wherever_they_are():
    collected = collect_batch(
        queue(("old", 2, 9.0), ("a", 3, 12.0), ("due-now", 1, 10.0), ("b", 6, None), ("late", 1, 5.0)),
        max_candidates=8,
        now=10.0,
    )
    assert names(collected.expired) == ["old", "due-now", "late"]  # a deadline equal to now has passed
    assert names(collected.batch) == ["a"]
    assert names(collected.remaining) == ["b"]


def test_an_expired_head_does_not_block_the_batch():
    collected = collect_batch(queue(("gone", 8, 1.0), ("a", 8, 5.0)), max_candidates=8, now=2.0)
    assert names(collected.batch) == ["a"] and names(collected.expired) == ["gone"]


def test_every_request_lands_in_exactly_one_list_in_order():
    entries = queue(*((f"r{n}", n % 5 + 1, float(n) if n % 3 == 0 else None) for n in range(30)))
    collected = collect_batch(entries, max_candidates=10, now=7.5)
    together = collected.batch + collected.expired + collected.remaining
    assert sorted(names(together)) == sorted(names(entries)) and len(together) == 30
    order = {entry.payload: index for index, entry in enumerate(entries)}
    for part in (collected.batch, collected.expired, collected.remaining):
        assert [order[e.payload] for e in part] == sorted(order[e.payload] for e in part)
    assert collected.batch_candidates <= 10


def test_an_empty_queue_gives_an_empty_batch():
    collected = collect_batch([], max_candidates=8, now=0.0)
    assert collected.batch == collected.expired == collected.remaining == []
    assert collected.batch_candidates == 0


def test_a_request_whose_deadline_falls_within_the_batch_s_engine_time_is_taken_out():
    entries = queue(("tight", 2, 10.05), ("a", 3, 10.5), ("b", 2, None))
    collected = collect_batch(entries, max_candidates=8, now=10.0, time_needed=0.1)
    assert names(collected.expired) == ["tight"]  # it would finish after its deadline: no engine work
    assert names(collected.batch) == ["a", "b"]
