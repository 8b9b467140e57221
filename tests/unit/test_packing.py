"""Packed rows on tiny hand-made groups (no model): layout, position ids, the
mask, read-out positions, the training targets, and the pass planner's
budget, splitting, counters and determinism."""

from __future__ import annotations

import random

import pytest
import torch

from brew.engines.packing import (
    IGNORE_INDEX,
    PackedPass,
    PackingPlan,
    RowPiece,
    pack_groups,
    pack_rows,
    plan_passes,
)
from brew.types import ScoringGroup

PAD = 0
GROUPS = [
    ScoringGroup(prefix_ids=(11, 12, 13), suffix_ids=((21, 22), (31,), (41, 42, 43)), label_ids=(5, 6)),
    ScoringGroup(prefix_ids=(51, 52), suffix_ids=((61, 62),), label_ids=(5, 6)),
]


def assert_each_readout_sees_its_plain_prompt(packed: PackedPass, groups) -> None:
    """The tokens the read-out position attends to, in order, are the plain
    prompt prefix + suffix_i, at positions 0..n-1."""
    mask = packed.dense_mask()[:, 0]
    for readout in packed.readouts:
        prompt = groups[readout.group].prompt_ids(readout.candidate)
        seen = mask[readout.row, readout.column].nonzero().flatten()
        assert tuple(packed.input_ids[readout.row, seen].tolist()) == prompt
        assert packed.position_ids[readout.row, seen].tolist() == list(range(len(prompt)))
        assert int(seen[-1]) == readout.column


def assert_plan_scores_every_candidate_once(plan: PackingPlan, groups) -> None:
    read = sorted((r.group, r.candidate) for p in plan.passes for r in p.readouts)
    assert read == [(g, c) for g, group in enumerate(groups) for c in range(group.num_candidates)]
    for packed in plan.passes:
        assert_each_readout_sees_its_plain_prompt(packed, groups)
        assert packed.attended_pairs == int(packed.dense_mask().sum())


@pytest.fixture(scope="module")
def packed():
    return pack_groups(GROUPS, pad_id=PAD)


def test_each_group_is_one_row_right_padded(packed):
    assert packed.input_ids.tolist() == [
        [11, 12, 13, 21, 22, 31, 41, 42, 43],
        [51, 52, 61, 62, PAD, PAD, PAD, PAD, PAD],
    ]
    assert packed.input_ids.dtype == torch.long


def test_each_suffix_restarts_its_positions_after_the_prefix(packed):
    assert packed.position_ids.tolist() == [
        [0, 1, 2, 3, 4, 3, 3, 4, 5],
        [0, 1, 2, 3, 0, 0, 0, 0, 0],
    ]


def test_the_mask_is_4d_boolean(packed):
    assert packed.dense_mask().shape == (2, 1, 9, 9)
    assert packed.dense_mask().dtype == torch.bool


def test_every_candidate_sees_exactly_its_own_plain_prompt(packed):
    assert [(r.group, r.candidate, r.row, r.column) for r in packed.readouts] == [
        (0, 0, 0, 4), (0, 1, 0, 5), (0, 2, 0, 8), (1, 0, 1, 3),
    ]
    assert packed.readout_rows.tolist() == [0, 0, 0, 1]
    assert packed.readout_columns.tolist() == [4, 5, 8, 3]
    assert_each_readout_sees_its_plain_prompt(packed, GROUPS)


def test_the_mask_is_causal_and_suffixes_never_see_each_other(packed):
    mask = packed.dense_mask()[0, 0]
    assert not torch.triu(mask, diagonal=1).any()  # nothing attends to the future
    assert mask[:3, :3].tolist() == torch.ones(3, 3, dtype=torch.bool).tril().tolist()
    assert not mask[5, 3:5].any()  # the second suffix does not see the first
    assert not mask[6:9, 3:6].any()  # the third sees neither
    assert mask[7].tolist() == [True, True, True, False, False, False, True, True, False]


def test_pads_attend_to_themselves_only(packed):
    mask = packed.dense_mask()[1, 0]
    for pad in range(4, 9):
        assert mask[pad].nonzero().flatten().tolist() == [pad]
    assert not mask[:4, 4:].any()  # no real token sees a pad
    assert bool(packed.dense_mask().any(dim=-1).all())  # no empty softmax row


def test_next_token_targets_stay_within_a_segment(packed):
    assert packed.next_token_targets().tolist() == [
        # the last prefix token and each segment's last token have no target:
        # the next token differs per candidate, or is the label
        [12, 13, -100, 22, -100, -100, 42, 43, -100],
        [52, -100, 62, -100, -100, -100, -100, -100, -100],
    ]
    assert IGNORE_INDEX == -100


def test_a_single_group_needs_no_padding():
    packed = pack_groups([ScoringGroup((1,), ((2,), (3,)), (5, 6))], pad_id=PAD)
    assert packed.input_ids.tolist() == [[1, 2, 3]]
    assert packed.position_ids.tolist() == [[0, 1, 1]]
    assert packed.dense_mask()[0, 0].tolist() == [
        [True, False, False],
        [True, True, False],
        [True, False, True],
    ]
    assert packed.next_token_targets().tolist() == [[-100, -100, -100]]


def test_groups_side_by_side_in_one_row_are_isolated_block_diagonally():
    packed = pack_rows(GROUPS, [[RowPiece(0, (0, 1, 2)), RowPiece(1, (0,))]], pad_id=PAD)
    assert packed.input_ids.tolist() == [[11, 12, 13, 21, 22, 31, 41, 42, 43, 51, 52, 61, 62]]
    assert packed.position_ids.tolist() == [[0, 1, 2, 3, 4, 3, 3, 4, 5, 0, 1, 2, 3]]
    mask = packed.dense_mask()[0, 0]
    assert not mask[9:, :9].any()  # the second group sees nothing of the first
    assert not mask[:9, 9:].any()
    assert mask[12].nonzero().flatten().tolist() == [9, 10, 11, 12]
    assert_each_readout_sees_its_plain_prompt(packed, GROUPS)
    assert packed.next_token_targets().tolist() == [
        [12, 13, -100, 22, -100, -100, 42, 43, -100, 52, -100, 62, -100]
    ]


def test_an_empty_suffix_reads_at_the_prefix_s_last_token():
    groups = [ScoringGroup((1, 2), ((3,), (), (4, 5), ()), (7,))]
    packed = pack_groups(groups)
    assert packed.input_ids.tolist() == [[1, 2, 3, 4, 5]]
    assert [r.column for r in packed.readouts] == [2, 1, 4, 1]
    assert_each_readout_sees_its_plain_prompt(packed, groups)


def test_an_empty_prefix_leaves_each_candidate_alone():
    groups = [ScoringGroup((), ((3, 4), (5,)), (7,)), ScoringGroup((1,), ((2,),), (7,))]
    packed = pack_rows(groups, [[RowPiece(0, (0, 1)), RowPiece(1, (0,))]])
    assert packed.position_ids.tolist() == [[0, 1, 0, 0, 1]]
    assert_each_readout_sees_its_plain_prompt(packed, groups)


def test_a_candidate_with_neither_prefix_nor_suffix_is_refused():
    with pytest.raises(ValueError, match="group 0, candidate 1: cannot score an empty prompt"):
        pack_groups([ScoringGroup((), ((3,), ()), (7,))])


def test_counters_of_a_pass(packed):
    stats = packed.stats
    assert (stats.passes, stats.rows, stats.real_tokens) == (1, 2, 13)
    assert (stats.padded_tokens, stats.pad_tokens) == (18, 5)
    assert stats.attended_pairs == int(packed.dense_mask().sum())
    assert stats.causal_pairs == 2 * 9 * 10 // 2
    assert stats.masked_share == pytest.approx(1 - stats.attended_pairs / 90)
    assert stats.padding_share == pytest.approx(5 / 18)


def test_one_plain_prompt_has_nothing_masked():
    stats = pack_groups([ScoringGroup((1, 2, 3), ((4, 5),), (7,))]).stats
    assert (stats.pad_tokens, stats.masked_share) == (0, 0.0)


def random_groups(seed: int, count: int) -> list[ScoringGroup]:
    rng = random.Random(seed)

    def ids(length: int) -> tuple[int, ...]:
        return tuple(rng.randrange(3, 500) for _ in range(length))

    return [
        ScoringGroup(
            ids(rng.randint(1, 40)),
            tuple(ids(rng.choice([0, 1, 3, 9, 17])) for _ in range(rng.randint(1, 12))),
            (1, 2),
        )
        for _ in range(count)
    ]


def test_small_groups_share_one_pass_under_a_large_budget():
    groups = random_groups(seed=1, count=6)
    plan = plan_passes(groups, max_batch_tokens=10_000)
    assert len(plan.passes) == 1
    assert plan.stats.real_tokens == sum(len(g.prefix_ids) + sum(map(len, g.suffix_ids)) for g in groups)
    assert_plan_scores_every_candidate_once(plan, groups)


def test_rows_default_to_the_longest_group_and_smaller_groups_share_them():
    groups = [
        ScoringGroup((1,) * 10, ((2,) * 10, (3,) * 10), (7,)),  # 30 tokens
        ScoringGroup((1,) * 5, ((2,) * 5,), (7,)),  # 10
        ScoringGroup((1,) * 8, ((2,) * 4, (3,) * 8), (7,)),  # 20
    ]
    plan = plan_passes(groups, max_batch_tokens=1000)
    assert [(p.rows, p.length) for p in plan.passes] == [(2, 30)]
    assert [[r.group for r in p.readouts] for p in plan.passes] == [[0, 0, 1, 2, 2]]  # 1 and 2 share a row
    assert plan.stats.pad_tokens == 0


def test_rows_as_long_as_the_budget_hold_every_group_side_by_side():
    groups = random_groups(seed=1, count=6)
    plan = plan_passes(groups, max_batch_tokens=10_000, max_row_tokens=10_000)
    assert [p.rows for p in plan.passes] == [1]
    assert plan.stats.pad_tokens == 0
    assert_plan_scores_every_candidate_once(plan, groups)


@pytest.mark.parametrize("budget", [60, 130, 250])
@pytest.mark.parametrize("row_limit", [None, 60])  # every prompt fits: at most 40 + 17 tokens
def test_a_small_budget_splits_the_work_into_passes_that_fit_it(budget, row_limit):
    groups = random_groups(seed=2, count=10)
    plan = plan_passes(groups, max_batch_tokens=budget, max_row_tokens=row_limit)
    assert len(plan.passes) > 1
    for packed in plan.passes:
        assert packed.rows * packed.length <= budget
        assert packed.length <= (row_limit or budget)
    assert plan.stats.passes == len(plan.passes)
    assert plan.stats.padded_tokens == sum(p.rows * p.length for p in plan.passes)
    assert_plan_scores_every_candidate_once(plan, groups)


def test_rows_of_one_pass_share_the_budget():
    groups = [ScoringGroup((1,) * 10, ((2,) * 10,), (7,)) for _ in range(4)]  # 20 tokens each
    plan = plan_passes(groups, max_batch_tokens=40, max_row_tokens=20)
    assert [(p.rows, p.length) for p in plan.passes] == [(2, 20), (2, 20)]


def test_a_group_longer_than_a_row_is_split_and_each_piece_repeats_the_prefix():
    group = ScoringGroup((1,) * 10, tuple((i,) * 6 for i in range(2, 9)), (7,))  # 10 + 7 x 6 = 52 tokens
    plan = plan_passes([group], max_batch_tokens=30)
    assert [packed.input_ids[0, :10].tolist() for packed in plan.passes] == [[1] * 10] * 3
    assert [[r.candidate for r in packed.readouts] for packed in plan.passes] == [[0, 1, 2], [3, 4, 5], [6]]
    assert_plan_scores_every_candidate_once(plan, [group])


def test_a_prompt_longer_than_the_budget_gets_a_pass_of_its_own_over_budget():
    small = ScoringGroup((1, 2), ((3,), (4,)), (7,))
    huge = ScoringGroup((1,) * 30, ((5,) * 40, (6,) * 2), (7,))
    plan = plan_passes([small, huge], max_batch_tokens=32)
    lengths = sorted(packed.length for packed in plan.passes)
    assert lengths[-1] == 70 and all(length <= 32 for length in lengths[:-1])
    assert_plan_scores_every_candidate_once(plan, [small, huge])


def test_groups_without_candidates_need_no_pass():
    plan = plan_passes([ScoringGroup((1, 2), (), (7,))], max_batch_tokens=16)
    assert plan.passes == () and plan.stats.passes == 0 and plan.stats.masked_share == 0.0


def test_planning_is_deterministic():
    groups = random_groups(seed=3, count=12)
    first, second = plan_passes(groups, 120), plan_passes(list(groups), 120)
    assert len(first.passes) == len(second.passes)
    for a, b in zip(first.passes, second.passes, strict=True):
        assert a.readouts == b.readouts
        assert torch.equal(a.input_ids, b.input_ids) and torch.equal(a.segment_ids, b.segment_ids)


@pytest.mark.parametrize("budget", [0, -5])
def test_a_budget_below_one_token_is_refused(budget):
    with pytest.raises(ValueError, match="max_batch_tokens must be at least 1"):
        plan_passes(GROUPS, budget)
    with pytest.raises(ValueError, match="max_row_tokens must be at least 1"):
        plan_passes(GROUPS, 100, max_row_tokens=budget)
