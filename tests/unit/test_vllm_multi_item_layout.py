"""The packed-prompt layout of multi-item scoring on vLLM (no vLLM needed).

The property that makes the scores exact: under the layout's positions and
attention rule, every token of candidate k sees exactly the (token, position)
pairs it sees in the plain prompt `prefix + candidate_k`, so its hidden
state, and the logits at the candidate's end, are the plain prompt's.
"""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from brew.engines.vllm_multi_item.layout import (
    NONCE_TOKENS,
    layout_rows,
    may_attend,
    pack,
    packed_len,
    parse,
    plain_rows,
)

ids = st.lists(st.integers(min_value=0, max_value=700), min_size=1, max_size=40)


def visible_pairs(packed: list[int], rows, query: int) -> list[tuple[int, int]]:
    """(token id, position) of every key `query` may attend to, in key order."""
    import torch

    position, visible_prefix, block_start = rows
    keys = torch.arange(len(packed))
    allowed = may_attend(torch.tensor(query), keys, visible_prefix[query], block_start[query])
    return [(packed[key], int(position[key])) for key in keys[allowed].tolist()]


@settings(max_examples=60, deadline=None)
@given(prefix=ids, candidates=st.lists(st.lists(st.integers(0, 700), max_size=12), min_size=1, max_size=6))
def test_every_candidate_token_sees_exactly_its_plain_prompt(prefix, candidates):
    packed = pack(prefix, candidates, random.Random(0))
    layout = parse(packed)
    rows = layout_rows(layout)
    assert len(packed) == packed_len(len(prefix), [len(c) for c in candidates]) == layout.total_len
    for candidate, start, end in zip(candidates, layout.candidate_starts, layout.readout_positions):
        plain = prefix + candidate
        # The read-out token is the plain prompt's last token at its position...
        assert (packed[end], int(rows[0][end])) == (plain[-1], len(plain) - 1)
        # ...and every token of the block sees the plain prompt's tokens up to it.
        for offset, query in enumerate(range(start, end + 1)):
            seen = len(plain) - (end - query) if candidate else len(plain)
            assert visible_pairs(packed, rows, query) == [(token, index) for index, token in enumerate(plain[:seen])]


def test_prefix_is_plain_causal_and_nonce_and_trailer_are_isolated():
    prefix, candidates = [5, 6, 7], [[8, 9], [10]]
    packed = pack(prefix, candidates, random.Random(1))
    layout = parse(packed)
    rows = layout_rows(layout)
    assert rows[:, :3].tolist() == plain_rows(3).tolist()  # the prefix computes what any plain prompt does
    in_blocks = {index for start, end in zip(layout.candidate_starts, layout.readout_positions)
                 for index in range(start, end + 1)}
    isolated = [index for index in range(3, len(packed)) if index not in in_blocks]
    assert len(isolated) == NONCE_TOKENS + 2 * (len(candidates) + 2)
    for query in range(len(packed)):
        keys = [key for key in range(len(packed))
                if may_attend(query, key, int(rows[1][query]), int(rows[2][query]))]
        if query in isolated:
            assert keys == [query]
        else:  # no prefix or candidate token sees a nonce or trailer token
            assert not set(keys) & set(isolated)

def test_the_nonce_makes_packed_prompts_of_one_member_differ_right_after_the_prefix():
    prefix, candidates = list(range(10, 50)), [[1, 2, 3]]
    first, second = pack(prefix, candidates), pack(prefix, candidates)
    assert first[:40] == second[:40]
    assert first[40:40 + NONCE_TOKENS] != second[40:40 + NONCE_TOKENS]  # 1 in 2**32 to fail


@pytest.mark.parametrize("not_packed", [[], [1, 2, 3], list(range(300)), [0] * 30, [999] * 30])
def test_parse_refuses_a_prompt_that_spells_no_layout(not_packed):
    with pytest.raises(ValueError, match="not a multi-item prompt"):
        parse(not_packed)


def test_pack_refuses_what_it_cannot_spell():
    with pytest.raises(ValueError, match="non-empty prefix"):
        pack([], [[1]])
    with pytest.raises(ValueError, match="at least one candidate"):
        pack([1], [])
    with pytest.raises(ValueError, match="numbers up to"):
        pack([1] * 70000, [[1]])
