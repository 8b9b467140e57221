"""History policies, one pure function at a time, then chained by HistoryPolicy."""

from __future__ import annotations

import pytest

from brew.history import (
    Downsample,
    HistoryPolicy,
    dedupe_by_action_priority,
    downsample_action,
    fit_token_budget,
    most_recent,
    order_chronologically,
    stable_fraction,
    truncate_tokens,
)
from brew.types import Interaction, Item

PRIORITY = ("applied", "viewed", "impression")


def event(item_id: str, action: str, timestamp: float) -> Interaction:
    return Interaction(action=action, item=Item(item_id, "job", {"title": item_id}), timestamp=timestamp)


def ids(history: list[Interaction]) -> list[tuple[str, str, float]]:
    return [(i.item.item_id, i.action, i.timestamp) for i in history]


# --- order_chronologically ------------------------------------------------------

def test_order_puts_the_most_recent_last():
    history = [event("a", "viewed", 30.0), event("b", "viewed", 10.0), event("c", "viewed", 20.0)]
    assert [i.item.item_id for i in order_chronologically(history)] == ["b", "c", "a"]


def test_order_keeps_ties_in_their_given_order():
    history = [event("x", "viewed", 5.0), event("a", "viewed", 1.0), event("y", "liked", 5.0)]
    assert [i.item.item_id for i in order_chronologically(history)] == ["a", "x", "y"]


def test_order_does_not_modify_its_input():
    history = (event("a", "viewed", 2.0), event("b", "viewed", 1.0))
    order_chronologically(history)
    assert [i.item.item_id for i in history] == ["a", "b"]


# --- most_recent ------------------------------------------------------------------

@pytest.mark.parametrize(
    ("max_items", "expected"),
    [(0, []), (1, [5]), (3, [3, 4, 5]), (5, [1, 2, 3, 4, 5]), (10, [1, 2, 3, 4, 5])],
)
def test_most_recent_keeps_the_last_items(max_items, expected):
    assert most_recent([1, 2, 3, 4, 5], max_items) == expected


@pytest.mark.parametrize(("length", "max_items"), [(3, 5), (10, 15), (13, 24)])
def test_most_recent_keeps_a_short_history_whole(length, max_items):
    # Regression: a negative slice start (len - max_items) counted from the end.
    history = list(range(length))
    assert most_recent(history, max_items) == history


# --- dedupe_by_action_priority ------------------------------------------------------

def test_dedupe_keeps_the_strongest_action_of_each_item():
    history = [
        event("job-1", "viewed", 1.0),
        event("job-1", "applied", 2.0),
        event("job-1", "impression", 3.0),
        event("job-2", "impression", 4.0),
    ]
    assert ids(dedupe_by_action_priority(history, PRIORITY)) == [
        ("job-1", "applied", 2.0),
        ("job-2", "impression", 4.0),
    ]


def test_dedupe_keeps_the_latest_of_equally_strong_actions():
    history = [event("job-1", "viewed", 5.0), event("job-1", "viewed", 9.0), event("job-1", "viewed", 7.0)]
    assert ids(dedupe_by_action_priority(history, PRIORITY)) == [("job-1", "viewed", 9.0)]


def test_dedupe_ranks_unlisted_actions_below_listed_ones():
    history = [
        event("job-1", "shared", 1.0), event("job-1", "impression", 2.0), event("job-2", "shared", 3.0),
    ]
    assert ids(dedupe_by_action_priority(history, PRIORITY)) == [
        ("job-1", "impression", 2.0),
        ("job-2", "shared", 3.0),
    ]


def test_dedupe_keeps_the_input_order_of_the_survivors():
    history = [
        event("b", "applied", 9.0),
        event("a", "viewed", 1.0),
        event("b", "viewed", 2.0),
        event("c", "viewed", 0.0),
    ]
    assert [i.item.item_id for i in dedupe_by_action_priority(history, PRIORITY)] == ["b", "a", "c"]


def test_dedupe_without_a_priority_keeps_the_latest_per_item():
    history = [event("a", "applied", 1.0), event("a", "impression", 2.0)]
    assert ids(dedupe_by_action_priority(history, ())) == [("a", "impression", 2.0)]


# --- stable_fraction / downsample_action ------------------------------------------

def test_stable_fraction_is_a_fixed_number_in_the_unit_interval():
    value = stable_fraction("job-1", 1234.5)
    assert 0.0 <= value < 1.0
    assert stable_fraction("job-1", 1234.5) == value
    assert stable_fraction("job-1", 1234.0) != value
    assert stable_fraction("job-2", 1234.5) != value


def many_impressions(count: int) -> list[Interaction]:
    return [event(f"job-{n}", "impression", 1_700_000_000.0 + 60 * n) for n in range(count)]


def test_downsample_gives_the_same_choice_every_time():
    history = many_impressions(200)
    rule = Downsample("impression", 0.4)
    first = downsample_action(history, rule)
    rebuilt = many_impressions(200)  # equal values, new objects
    assert ids(downsample_action(rebuilt, rule)) == ids(first)
    assert ids(downsample_action(list(reversed(history)), rule)) == list(reversed(ids(first)))


def test_downsample_decides_each_interaction_alone():
    # An item is kept or dropped whatever else is in the history.
    history = many_impressions(100)
    rule = Downsample("impression", 0.5)
    kept_alone = [i for i in history if downsample_action([i], rule)]
    assert ids(downsample_action(history, rule)) == ids(kept_alone)


@pytest.mark.parametrize("keep_rate", [0.1, 0.4, 0.75])
def test_downsample_roughly_honours_the_keep_rate(keep_rate):
    # 2000 Bernoulli draws: the standard deviation of the kept share is at
    # most 0.011; 0.04 is more than 3.5 of them.
    history = many_impressions(2000)
    kept = downsample_action(history, Downsample("impression", keep_rate))
    assert abs(len(kept) / len(history) - keep_rate) < 0.04


def test_downsample_touches_only_its_action():
    history = [event(f"job-{n}", "applied" if n % 2 else "impression", float(n)) for n in range(400)]
    kept = downsample_action(history, Downsample("impression", 0.0))
    assert [i.action for i in kept] == ["applied"] * 200


def test_downsample_keep_rate_one_keeps_everything_and_is_validated():
    history = many_impressions(50)
    assert ids(downsample_action(history, Downsample("impression", 1.0))) == ids(history)
    with pytest.raises(ValueError, match=r"keep_rate must be in \[0, 1\], got 1.5"):
        Downsample("impression", 1.5)


# --- truncate_tokens / fit_token_budget -------------------------------------------

def whitespace_tokens(text: str) -> list[int]:
    """A fake tokenizer: one id per word (its length)."""
    return [len(word) for word in text.split()]


def test_truncate_keeps_the_first_tokens():
    assert truncate_tokens([5, 6, 7, 8], 2) == [5, 6]
    assert truncate_tokens([5, 6], 4) == [5, 6]
    assert truncate_tokens([5, 6], 0) == []


def test_truncate_cuts_each_item_to_its_budget():
    items = ["data analyst at acme in berlin", "ml engineer", "one two three four five six"]
    assert [len(truncate_tokens(whitespace_tokens(text), 3)) for text in items] == [3, 2, 3]


@pytest.mark.parametrize(
    ("counts", "budget", "first_kept"),
    [
        ([3, 4, 5], 12, 0),  # fits exactly
        ([3, 4, 5], 11, 1),  # the oldest goes first
        ([3, 4, 5], 9, 1),
        ([3, 4, 5], 8, 2),
        ([3, 4, 5], 5, 2),
        ([3, 4, 5], 4, 3),  # the newest alone is over budget: nothing is kept
        ([3, 4, 5], 0, 3),
        ([], 0, 0),
        ([0, 0, 7], 0, 3),
    ],
)
def test_fit_token_budget_drops_the_oldest_first(counts, budget, first_kept):
    assert fit_token_budget(counts, budget) == first_kept
    assert sum(counts[first_kept:]) <= budget


# --- HistoryPolicy ---------------------------------------------------------------

def test_policy_dedupes_downsamples_orders_and_caps():
    policy = HistoryPolicy(max_items=2, action_priority=PRIORITY, downsample=(Downsample("impression", 0.0),))
    history = [
        event("job-3", "viewed", 30.0),
        event("job-1", "viewed", 10.0),
        event("job-1", "applied", 11.0),
        event("job-2", "impression", 40.0),  # dropped by the downsample rule
        event("job-4", "viewed", 20.0),
    ]
    assert ids(policy.select(history)) == [("job-4", "viewed", 20.0), ("job-3", "viewed", 30.0)]


def test_policy_dedupes_before_it_downsamples():
    # A seen-then-applied item keeps "applied", so dropping every impression
    # must not drop the item.
    policy = HistoryPolicy(action_priority=PRIORITY, downsample=(Downsample("impression", 0.0),))
    history = [event("job-1", "impression", 1.0), event("job-1", "applied", 2.0)]
    assert ids(policy.select(history)) == [("job-1", "applied", 2.0)]


def test_policy_rejects_negative_budgets():
    with pytest.raises(ValueError, match="max_tokens must be >= 0, got -1"):
        HistoryPolicy(max_tokens=-1)


def test_policy_keeps_a_history_shorter_than_max_items_whole():
    # Every shipped task has max_items=24; a 20-item history once showed 16.
    history = [event(f"job-{n}", "viewed", float(n)) for n in range(20)]
    assert len(HistoryPolicy(max_items=24).select(history)) == 20


# --- explain: select with reasons -------------------------------------------------------

def test_explain_keeps_what_select_keeps_and_says_why_the_rest_went():
    policy = HistoryPolicy(max_items=2, action_priority=PRIORITY,
                           downsample=(Downsample("impression", keep_rate=0.0),))
    history = [event("a", "viewed", 1.0), event("a", "applied", 2.0), event("b", "impression", 3.0),
               event("c", "viewed", 4.0), event("d", "viewed", 5.0), event("e", "viewed", 6.0)]
    selection = policy.explain(history)
    assert list(selection.kept) == policy.select(history)
    reasons = {(d.interaction.item.item_id, d.interaction.action): d.reason for d in selection.dropped}
    assert set(reasons) == {("a", "viewed"), ("b", "impression"), ("a", "applied"), ("c", "viewed")}
    assert reasons[("a", "viewed")].startswith("duplicate")
    assert reasons[("b", "impression")].startswith("downsampled: impression")
    assert "max_items=2" in reasons[("c", "viewed")]
    assert len(selection.kept) + len(selection.dropped) == len(history)
