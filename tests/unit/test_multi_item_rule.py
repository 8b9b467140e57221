"""The packing rule: which groups multi_item packs, by mode and by shape."""

from __future__ import annotations

import pytest

from brew.engines.multi_item_rule import GroupPath, MultiItemMode, PackingRule, candidate_share, row_tokens
from brew.types import ScoringGroup

PACKED, PER = GroupPath.PACKED, GroupPath.PER_CANDIDATE


def group(prefix: int, candidates: int, suffix: int = 10) -> ScoringGroup:
    return ScoringGroup(tuple(range(prefix)), tuple(tuple(range(suffix)) for _ in range(candidates)), (1, 2))


def test_row_tokens_and_candidate_share():
    g = group(300, 10, suffix=10)
    assert row_tokens(g) == 400 and candidate_share(g) == 0.25
    assert candidate_share(ScoringGroup((), ((),), (1,))) == 0.0


@pytest.mark.parametrize(("shape", "auto"), [
    ((300, 10), PACKED),  # the prefix weighs: packed
    ((300, 1), PER),  # one candidate: nothing to share a request with
    ((20, 50), PER),  # 500 candidate tokens behind 20: the candidates are 96% of the row
    ((4000, 32), PACKED),  # 4,320 tokens, but mostly prefix: the share decides, not the length
    ((60, 70), PER),  # 760 tokens, candidates 92% of them: short, but mostly candidates
    ((9000, 20), PER),  # 9,200 tokens: longer than a row may be
])
def test_each_mode_on_each_shape(shape, auto):
    rule = PackingRule()
    g = group(*shape)
    assert rule.path(MultiItemMode.AUTO, g) is auto
    assert rule.path(MultiItemMode.OFF, g) is PER
    # on packs whatever fits a row, whatever its shape
    assert rule.path(MultiItemMode.ON, g) is (PER if row_tokens(g) > rule.max_row_tokens else PACKED)


@pytest.mark.parametrize(("shape", "auto"), [
    ((20, 50), PACKED),  # the candidates' share bounds only a dense kernel's waste
    ((60, 70), PACKED),
    ((300, 1), PER),  # still one candidate
    ((9000, 20), PER),  # still longer than a row may be
])
def test_without_a_dense_kernel_the_share_does_not_apply(shape, auto):
    """vLLM's multi-item backend computes only the visible parts of a packed row."""
    assert PackingRule().path(MultiItemMode.AUTO, group(*shape), dense_attention=False) is auto


def test_the_thresholds_are_the_settings():
    g = group(100, 8)  # candidates 80 of 180 tokens
    assert PackingRule(min_candidates=9).path(MultiItemMode.AUTO, g) is PER
    assert PackingRule(min_candidates=8).path(MultiItemMode.AUTO, g) is PACKED
    assert PackingRule(max_candidate_share=0.4).path(MultiItemMode.AUTO, g) is PER
    assert PackingRule(max_candidate_share=0.45).path(MultiItemMode.AUTO, g) is PACKED
    assert PackingRule(max_row_tokens=179).path(MultiItemMode.ON, g) is PER
    assert PackingRule(max_row_tokens=180).path(MultiItemMode.ON, g) is PACKED


def test_the_rule_is_checked_like_any_setting():
    from brew.settings import SettingsError, from_table

    with pytest.raises(SettingsError, match="max_candidate_share"):
        from_table(PackingRule, {"max_candidate_share": 1.5})
    assert from_table(PackingRule, {"min_candidates": 4}) == PackingRule(min_candidates=4)
