"""Packed training rows on tiny hand-made groups (no model): layout, position
ids, the 4D mask and the next-token targets."""

from __future__ import annotations

import pytest
import torch

from brew.demo.packing import pack_groups
from brew.types import ScoringGroup

PAD = 0
GROUPS = [
    ScoringGroup(prefix_ids=(11, 12, 13), suffix_ids=((21, 22), (31,), (41, 42, 43)), label_ids=(5, 6)),
    ScoringGroup(prefix_ids=(51, 52), suffix_ids=((61, 62),), label_ids=(5, 6)),
]


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
    assert packed.attention_mask.shape == (2, 1, 9, 9)
    assert packed.attention_mask.dtype == torch.bool


def test_every_candidate_sees_exactly_its_own_plain_prompt(packed):
    # Attending positions of each candidate's last token, read in order, are
    # the plain prompt prefix + suffix_i with positions 0..n-1.
    mask = packed.attention_mask[:, 0]
    candidates = [(row, group, i) for row, group in enumerate(GROUPS) for i in range(group.num_candidates)]
    assert len(packed.last_rows) == len(candidates) == 4
    for (row, group, index), last_row, last_column in zip(candidates, packed.last_rows, packed.last_columns):
        assert int(last_row) == row
        seen = mask[row, int(last_column)].nonzero().flatten()
        assert tuple(packed.input_ids[row, seen].tolist()) == group.prompt_ids(index)
        assert packed.position_ids[row, seen].tolist() == list(range(len(group.prompt_ids(index))))
    assert packed.last_columns.tolist() == [4, 5, 8, 3]


def test_the_mask_is_causal_and_suffixes_never_see_each_other(packed):
    mask = packed.attention_mask[0, 0]
    assert not torch.triu(mask, diagonal=1).any()  # nothing attends to the future
    assert mask[:3, :3].tolist() == torch.ones(3, 3, dtype=torch.bool).tril().tolist()
    assert not mask[5, 3:5].any()  # the second suffix does not see the first
    assert not mask[6:9, 3:6].any()  # the third sees neither
    assert mask[7].tolist() == [True, True, True, False, False, False, True, True, False]


def test_pads_attend_to_themselves_only(packed):
    mask = packed.attention_mask[1, 0]
    for pad in range(4, 9):
        assert mask[pad].nonzero().flatten().tolist() == [pad]
    assert bool(packed.attention_mask.any(dim=-1).all())  # no empty softmax row


def test_next_token_targets_stay_within_a_segment(packed):
    assert packed.next_token_targets.tolist() == [
        # the last prefix token and each segment's last token have no target:
        # the next token differs per candidate, or is the label
        [12, 13, -100, 22, -100, -100, 42, 43, -100],
        [52, -100, 62, -100, -100, -100, -100, -100, -100],
    ]


def test_a_single_group_needs_no_padding():
    packed = pack_groups([ScoringGroup((1,), ((2,), (3,)), (5, 6))], pad_id=PAD)
    assert packed.input_ids.tolist() == [[1, 2, 3]]
    assert packed.position_ids.tolist() == [[0, 1, 1]]
    assert packed.attention_mask[0, 0].tolist() == [
        [True, False, False],
        [True, True, False],
        [True, False, True],
    ]
    assert packed.next_token_targets.tolist() == [[-100, -100, -100]]
