"""Which way a group is scored: packed (multi-item) or one candidate at a time.

A group is one member's prefix and N candidate suffixes. Multi-item scoring
packs it into one row (torch) or one vLLM request: the prefix once, then
every candidate, each candidate seeing only the prefix and itself. The
other path scores each candidate behind the shared prefix on its own (the
torch engine's per-group forward passes; vLLM's one request per candidate).
Both give the same scores (within 1e-4 in fp32); they differ in cost, and
which one is cheaper depends on the group's shape (docs/design/decisions.md,
decision 7; the measurements in BENCHMARKS.md, section 2):

- packing saves per-candidate work that does not grow with the prompt: one
  request, one plan, one read-out instead of N. That saving is per
  candidate, so a group with few candidates gains little;
- a packed row attends over the prefix and every candidate at once: a
  dense kernel computes every candidate-to-candidate entry that the mask
  then discards, and those grow with the square of the candidates' tokens,
  while the per-candidate rows share the prefix's keys and values and
  attend only to them and themselves. So the candidates' share of the row
  decides, not the row's length: a long row that is mostly prefix still
  gains (decision 16; BENCHMARKS.md, sections 3 and 8);
- a very long row costs memory for its dense mask, length squared.

`multi_item` (MultiItemMode) is the engine-wide switch: `off` never packs,
`on` packs every group that fits a row, `auto` (the default) lets
PackingRule decide per group. Both engines choose per group with the same
rule: the torch engine between a packed row and its per-group passes, vLLM
between a packed request and one plain request per candidate on Brew's
pooling model (where that model's attention runs on vLLM's CPU kernel;
elsewhere vLLM's `auto` is its own per-candidate path,
brew.engines.vllm_engine says why). The rule's thresholds are settings
(`[packing]`).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from brew.settings import Settings, setting
from brew.types import ScoringGroup


class MultiItemMode(StrEnum):
    """How an engine that can pack chooses: never, always, or by the group's shape."""

    OFF = "off"
    ON = "on"
    AUTO = "auto"


class GroupPath(StrEnum):
    """The way one group was scored (the label of brew_groups_total)."""

    PACKED = "packed"
    PER_CANDIDATE = "per_candidate"


DEFAULT_MIN_CANDIDATES = 2
# The knee, measured on the CPU (BENCHMARKS.md, section 3) and on an H200
# (section 8) with the dense SDPA kernel: packing wins while the candidates
# are at most this share of the packed row, whatever its length.
DEFAULT_MAX_CANDIDATE_SHARE = 0.75
# A memory bound, not a speed rule: a row's dense mask and attention
# scores grow with its length squared.
DEFAULT_MAX_ROW_TOKENS = 8192


def row_tokens(group: ScoringGroup) -> int:
    """Tokens of the group packed in one row: its prefix once, then every suffix."""
    return len(group.prefix_ids) + sum(len(suffix) for suffix in group.suffix_ids)


def candidate_share(group: ScoringGroup) -> float:
    """The candidates' share of the packed row's tokens: every suffix / (prefix + every suffix)."""
    total = row_tokens(group)
    return (total - len(group.prefix_ids)) / total if total else 0.0


@dataclass(frozen=True)
class PackingRule(Settings):
    """When a group is packed (`[packing]`): the rule of `multi_item = "auto"`.

    With `auto`, a group is packed when it has at least `min_candidates`
    candidates, its candidates are at most `max_candidate_share` of the
    packed row's tokens (on an engine whose packed attention is dense: the
    torch engine's), and the row is at most `max_row_tokens` long; any
    other group is scored one candidate at a time. With `on`, only `max_row_tokens` applies.
    With `off`, nothing is packed. The rule is the same on both engines; a
    packed vLLM group longer than vLLM's model length is also split into
    runs of candidates that fit it, each behind the prefix.
    """

    min_candidates: int = setting(DEFAULT_MIN_CANDIDATES, ge=1,
                                  help="multi_item auto: a group with fewer candidates is scored per candidate")
    max_candidate_share: float = setting(DEFAULT_MAX_CANDIDATE_SHARE, ge=0, le=1,
                                         help="multi_item auto, torch engine: a group whose candidates are a larger "
                                              "share of its packed row's tokens is scored per candidate")
    max_row_tokens: int = setting(DEFAULT_MAX_ROW_TOKENS, ge=1,
                                  help="multi_item on or auto: a longer group (prefix plus every candidate) is "
                                       "scored per candidate (a dense mask's memory grows with its square)")

    def path(self, mode: MultiItemMode, group: ScoringGroup, *, dense_attention: bool = True) -> GroupPath:
        """The way `group` is scored under `mode`. `dense_attention`: the
        engine's packed attention computes every entry of the row and masks
        what it discards (the torch engine's SDPA and eager kernels), so the
        candidates' share bounds packing; vLLM's multi-item backend computes
        only the visible parts, and the share does not apply (measured:
        BENCHMARKS.md, section 9)."""
        if mode is MultiItemMode.OFF:
            return GroupPath.PER_CANDIDATE
        if row_tokens(group) > self.max_row_tokens:
            return GroupPath.PER_CANDIDATE
        if mode is MultiItemMode.ON or self.packs_by_shape(group, dense_attention=dense_attention):
            return GroupPath.PACKED
        return GroupPath.PER_CANDIDATE

    def packs_by_shape(self, group: ScoringGroup, *, dense_attention: bool = True) -> bool:
        """`auto`'s test of the group's shape: enough candidates, and on a
        dense kernel not outweighing the row."""
        enough = group.num_candidates >= self.min_candidates
        return enough and (not dense_attention or candidate_share(group) <= self.max_candidate_share)
