"""The token layout of one multi-item request, and what vLLM's worker reads from it.

One (member, task) group becomes one vLLM request:

    prefix (P tokens) | nonce (4) | candidate 1 | ... | candidate N | trailer

The trailer spells the layout in token ids (P, every candidate's length and
N, each as two base-256 digits), so everything vLLM's worker needs is a pure
function of the prompt's token ids: the attention rule and the positions of
every token (`layout_rows`) and the read-out rows (`readout_positions`). That
is what keeps vLLM's prefix cache sound: a KV block's contents depend only on
the ids its hash covers (vLLM hashes blocks over token ids). The torch
engine's packing (`brew.engines.packing`) carries its layout beside the ids,
which vLLM's block hashes would not see, hence this separate layout; the
semantics are the same (docs/design/decisions.md, decision 7).

- Prefix tokens attend causally with positions 0..P-1, exactly as in a plain
  prompt, so a repeat member's prefix blocks are shared with any request
  that starts the same way.
- Candidate k attends to the prefix and causally to its own tokens only,
  with positions restarting at P: its last token computes what it would at
  the end of the plain prompt `prefix + candidate_k`.
- An empty candidate (its prompt is the prefix alone) is spelled with length
  0 and packed as a copy of the prefix's last token, at that token's
  position and seeing the prefix before it: it computes exactly what the
  prefix's last token does, which a cached prefix would not recompute.
- Nonce and trailer tokens attend only to themselves and nothing attends to
  them: they change no score. The nonce (random ids) makes every block past
  the prefix unique to its request, so no later request reuses them: the
  read-out rows must be computed, and vLLM only guarantees to recompute a
  prompt's last token.

No vLLM import here: the layout is unit-tested on its own.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

import torch

NONCE_TOKENS = 4
DIGIT_BASE = 256
DIGITS = 2
MAX_LAYOUT_NUMBER = DIGIT_BASE**DIGITS - 1
# Models whose vocabulary is smaller than the digit base cannot spell a trailer.
MIN_VOCAB_SIZE = DIGIT_BASE


@dataclass(frozen=True)
class Layout:
    """Where the parts of a packed prompt lie (token indices)."""

    prefix_len: int
    candidate_starts: tuple[int, ...]
    candidate_lengths: tuple[int, ...]  # as spelled: 0 for an empty candidate
    total_len: int

    @property
    def readout_positions(self) -> tuple[int, ...]:
        """The index of every candidate's last token, in candidate order."""
        return tuple(start + _block_len(length) - 1
                     for start, length in zip(self.candidate_starts, self.candidate_lengths))


def _block_len(candidate_len: int) -> int:
    """Tokens a candidate takes in the packed prompt (an empty one: the copied token)."""
    return max(candidate_len, 1)


def _digits(number: int) -> list[int]:
    if not 0 <= number <= MAX_LAYOUT_NUMBER:
        raise ValueError(f"a multi-item layout spells numbers up to {MAX_LAYOUT_NUMBER}, got {number}")
    return [number // DIGIT_BASE, number % DIGIT_BASE]


def _number(high: int, low: int) -> int:
    if not (0 <= high < DIGIT_BASE and 0 <= low < DIGIT_BASE):
        raise ValueError("not a multi-item prompt: its trailer holds ids past the digit base")
    return high * DIGIT_BASE + low


def trailer_len(num_candidates: int) -> int:
    return DIGITS * (num_candidates + 2)


def packed_len(prefix_len: int, candidate_lengths: Sequence[int]) -> int:
    """Tokens of the packed prompt for this prefix and these candidates."""
    blocks = sum(_block_len(length) for length in candidate_lengths)
    return prefix_len + NONCE_TOKENS + blocks + trailer_len(len(candidate_lengths))


def pack(prefix: Sequence[int], candidates: Sequence[Sequence[int]], rng: random.Random | None = None) -> list[int]:
    """The one prompt scoring every candidate behind `prefix`."""
    if not prefix:
        raise ValueError("a multi-item prompt needs a non-empty prefix")
    if not candidates:
        raise ValueError("a multi-item prompt needs at least one candidate")
    rng = rng or random.SystemRandom()
    nonce = [rng.randrange(DIGIT_BASE) for _ in range(NONCE_TOKENS)]
    trailer = _digits(len(prefix))
    for candidate in candidates:
        trailer += _digits(len(candidate))
    trailer += _digits(len(candidates))
    ids = [*prefix, *nonce]
    for candidate in candidates:
        ids.extend(candidate or prefix[-1:])
    return ids + trailer


def parse(ids: Sequence[int]) -> Layout:
    """The layout a packed prompt spells in its trailer; ValueError if it spells none."""
    total = len(ids)
    if total < NONCE_TOKENS + trailer_len(1) + 2:
        raise ValueError(f"not a multi-item prompt: {total} tokens is shorter than any packed prompt")
    num_candidates = _number(ids[-2], ids[-1])
    trailer = trailer_len(num_candidates)
    if num_candidates < 1 or trailer > total:
        raise ValueError(f"not a multi-item prompt: its trailer spells {num_candidates} candidates")
    numbers = [_number(ids[total - trailer + i], ids[total - trailer + i + 1]) for i in range(0, trailer - 2, DIGITS)]
    prefix_len, lengths = numbers[0], tuple(numbers[1:])
    if prefix_len < 1 or packed_len(prefix_len, lengths) != total:
        raise ValueError("not a multi-item prompt: its trailer does not add up to its length")
    starts, start = [], prefix_len + NONCE_TOKENS
    for length in lengths:
        starts.append(start)
        start += _block_len(length)
    return Layout(prefix_len, tuple(starts), lengths, total)


def layout_rows(layout: Layout) -> torch.Tensor:
    """Three int64 rows over the prompt's tokens, read by the model and its attention:

    0. the rotary position (prefix: its index; candidate tokens: P + offset;
       an empty candidate's copied token: P - 1);
    1. `visible_prefix`: keys below it are visible (prefix token i: i + 1;
       candidate tokens: P; an empty candidate: P - 1; nonce and trailer: 0);
    2. `block_start`: keys from it up to the query are visible (prefix: 0;
       candidate tokens: the candidate's first index; nonce and trailer: the
       token itself).

    Query i may attend to key j iff j <= i and (j < visible_prefix[i] or
    j >= block_start[i]) (`may_attend`).
    """
    total, prefix_len = layout.total_len, layout.prefix_len
    index = torch.arange(total, dtype=torch.int64)
    position = torch.full((total,), prefix_len, dtype=torch.int64)
    visible_prefix = torch.zeros(total, dtype=torch.int64)
    block_start = index.clone()
    position[:prefix_len] = index[:prefix_len]
    visible_prefix[:prefix_len] = index[:prefix_len] + 1
    block_start[:prefix_len] = 0
    if layout.candidate_starts:
        # the candidate blocks lie back to back: one vectorized pass over them all
        # (a loop over candidates cost about 15 us each, once per request)
        sizes = torch.tensor([_block_len(length) for length in layout.candidate_lengths], dtype=torch.int64)
        firsts = torch.tensor([prefix_len if length else prefix_len - 1 for length in layout.candidate_lengths],
                              dtype=torch.int64)
        starts = torch.tensor(layout.candidate_starts, dtype=torch.int64)
        begin, end = layout.candidate_starts[0], layout.candidate_starts[0] + int(sizes.sum())
        block = torch.repeat_interleave(torch.arange(len(sizes)), sizes)  # each token's candidate
        offset = index[begin:end] - starts[block]  # each token's index within its block
        position[begin:end] = firsts[block] + offset
        visible_prefix[begin:end] = firsts[block]
        block_start[begin:end] = starts[block]
    return torch.stack([position, visible_prefix, block_start])


def plain_rows(length: int) -> torch.Tensor:
    """The rows of a prompt that is not packed: plain causal attention."""
    index = torch.arange(length, dtype=torch.int64)
    return torch.stack([index, index + 1, torch.zeros_like(index)])


def may_attend(query_index: torch.Tensor, key_index: torch.Tensor, visible_prefix: torch.Tensor,
               block_start: torch.Tensor) -> torch.Tensor:
    """The attention rule (broadcasting): the key is at or before the query, and
    in the visible prefix or in the query's own block."""
    return (key_index <= query_index) & ((key_index < visible_prefix) | (key_index >= block_start))
