"""Pack scoring groups into forward passes for exact multi-item scoring.

A row holds one or more groups side by side, each laid out as its prefix
followed by its candidates' suffixes:

    prefix_A | cand_A0 | cand_A1 | ... | prefix_B | cand_B0 | ... | pad ...

The attention mask makes every candidate's last token see exactly its plain
prompt `prefix + suffix`: a prefix token attends causally within its prefix;
a candidate token attends to its group's whole prefix and causally within
its own block; nothing crosses from one group to another (block-diagonal),
nor from one candidate to another. Positions restart after the prefix for
every candidate (`prefix_len .. prefix_len + len - 1`), so with the same
mask and positions a candidate's logits are those of its plain prompt
(docs/design/decisions.md, decision 7). A pad attends to itself only, so no softmax row is
empty, and no real token attends to a pad.

The mask is described by two ids per token instead of an (L, L) matrix:
`segment_ids` numbers the blocks of a row (a group's prefix, each non-empty
suffix; -1 for pads) and `context_ids` names the prefix block the token's
group reads (a prefix token's own block). `may_attend` turns them into mask
entries; it broadcasts over tensors for the dense (rows, 1, L, L) boolean
mask and also serves as a flex-attention `mask_mod`.

`plan_passes` decides the layout under a token budget; `pack_rows` lays out
rows it is given (the training loop packs one group per row with
`pack_groups`). Everything here is pure: ids in, CPU tensors out, no model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from brew.engines.multi_item_rule import row_tokens
from brew.types import ScoringGroup

IGNORE_INDEX = -100  # next-token target where there is none (torch cross-entropy's default)
_PAD_SEGMENT = -1


@dataclass(frozen=True)
class RowPiece:
    """One group's share of a row: its prefix, then these candidates' suffixes in order."""

    group: int
    candidates: tuple[int, ...]


@dataclass(frozen=True)
class ReadOut:
    """Where candidate `candidate` of group `group` reads its label logits:
    its last token (the prefix's last token when its suffix is empty)."""

    group: int
    candidate: int
    row: int
    column: int


@dataclass(frozen=True)
class PackingStats:
    """What a set of forward passes costs, for metrics.

    `real_tokens` are prompt tokens; `padded_tokens` are all the tokens the
    passes run, pads included (rows x length summed over passes).
    `masked_share` is the share of the query/key pairs a causal kernel would
    compute (the lower triangle of every row) that the mask throws away:
    0 for one plain prompt per row, growing with candidates per group (their
    blocks do not see each other), groups per row and padding.
    """

    passes: int
    rows: int
    real_tokens: int
    padded_tokens: int
    attended_pairs: int
    causal_pairs: int

    @property
    def pad_tokens(self) -> int:
        return self.padded_tokens - self.real_tokens

    @property
    def padding_share(self) -> float:
        return self.pad_tokens / self.padded_tokens if self.padded_tokens else 0.0

    @property
    def masked_share(self) -> float:
        return 1.0 - self.attended_pairs / self.causal_pairs if self.causal_pairs else 0.0

    @classmethod
    def total(cls, parts: Sequence[PackingStats]) -> PackingStats:
        return cls(
            passes=sum(p.passes for p in parts),
            rows=sum(p.rows for p in parts),
            real_tokens=sum(p.real_tokens for p in parts),
            padded_tokens=sum(p.padded_tokens for p in parts),
            attended_pairs=sum(p.attended_pairs for p in parts),
            causal_pairs=sum(p.causal_pairs for p in parts),
        )


def may_attend(
    q_segment: torch.Tensor,
    kv_segment: torch.Tensor,
    q_context: torch.Tensor,
    q_index: torch.Tensor,
    kv_index: torch.Tensor,
) -> torch.Tensor:
    """Whether the query token may attend to the key token (True = attend).

    Broadcasts over its arguments; with scalar tensors it is a flex-attention
    mask_mod body. A token sees itself; otherwise an earlier-or-equal real
    token of its own block or of its group's prefix block.
    """
    readable = (kv_segment == q_segment) | (kv_segment == q_context)
    return (q_index == kv_index) | ((kv_index <= q_index) & (kv_segment != _PAD_SEGMENT) & readable)


@dataclass(frozen=True)
class PackedPass:
    """The inputs of one forward pass and where to read each candidate's logits.

    Tensors are (rows, length) long, on the CPU. `readouts` holds one entry
    per candidate of the pass, in layout order (row by row, left to right).
    """

    input_ids: torch.Tensor
    position_ids: torch.Tensor
    segment_ids: torch.Tensor  # block of the row each token is in; -1 for pads
    context_ids: torch.Tensor  # the prefix block each token's group reads; -1 for pads
    readouts: tuple[ReadOut, ...]
    real_tokens: int
    attended_pairs: int  # True entries of the dense mask

    @property
    def rows(self) -> int:
        return self.input_ids.shape[0]

    @property
    def length(self) -> int:
        return self.input_ids.shape[1]

    @property
    def stats(self) -> PackingStats:
        return PackingStats(
            passes=1,
            rows=self.rows,
            real_tokens=self.real_tokens,
            padded_tokens=self.rows * self.length,
            attended_pairs=self.attended_pairs,
            causal_pairs=self.rows * self.length * (self.length + 1) // 2,
        )

    @property
    def readout_rows(self) -> torch.Tensor:
        """(readouts,) long."""
        return torch.tensor([r.row for r in self.readouts], dtype=torch.long)

    @property
    def readout_columns(self) -> torch.Tensor:
        """(readouts,) long."""
        return torch.tensor([r.column for r in self.readouts], dtype=torch.long)

    def dense_mask(self, device: torch.device | str | None = None) -> torch.Tensor:
        """(rows, 1, length, length) bool, True = may attend."""
        segment = self.segment_ids.to(device)
        context = self.context_ids.to(device)
        index = torch.arange(self.length, device=segment.device)
        mask = may_attend(
            segment[:, :, None], segment[:, None, :], context[:, :, None], index[:, None], index[None, :]
        )
        return mask.unsqueeze(1)

    def next_token_targets(self) -> torch.Tensor:
        """(rows, length) long: the next token where it lies in the same block,
        IGNORE_INDEX elsewhere (a block's last token, pads). For training."""
        segment = self.segment_ids
        same_block = (segment[:, 1:] == segment[:, :-1]) & (segment[:, 1:] != _PAD_SEGMENT)
        targets = torch.full_like(self.input_ids, IGNORE_INDEX)
        targets[:, :-1] = torch.where(same_block, self.input_ids[:, 1:], IGNORE_INDEX)
        return targets


@dataclass(frozen=True)
class PackingPlan:
    """The forward passes that score a list of groups; every candidate of
    every group is read out exactly once, in one of them."""

    passes: tuple[PackedPass, ...]

    @property
    def stats(self) -> PackingStats:
        return PackingStats.total([p.stats for p in self.passes])


def piece_length(group: ScoringGroup, piece: RowPiece) -> int:
    return len(group.prefix_ids) + sum(len(group.suffix_ids[c]) for c in piece.candidates)


@dataclass
class _Row:
    """One row being laid out: per-token lists, its read-outs, its mask's True entries."""

    ids: list[int]
    positions: list[int]
    segments: list[int]
    contexts: list[int]
    readouts: list[ReadOut]
    attended: int = 0

    def add_block(self, ids: Sequence[int], first_position: int, segment: int, context: int) -> None:
        """Append a block that sees the `context` block and itself causally."""
        self.ids += ids
        self.positions += range(first_position, first_position + len(ids))
        self.segments += [segment] * len(ids)
        self.contexts += [context] * len(ids)
        context_len = first_position if segment != context else 0
        self.attended += len(ids) * context_len + len(ids) * (len(ids) + 1) // 2

    def pad_to(self, length: int, pad_id: int) -> None:
        pads = length - len(self.ids)
        self.ids += [pad_id] * pads
        self.positions += [0] * pads
        self.segments += [_PAD_SEGMENT] * pads
        self.contexts += [_PAD_SEGMENT] * pads
        self.attended += pads  # each pad sees itself


def _lay_out_row(groups: Sequence[ScoringGroup], row: int, pieces: Sequence[RowPiece]) -> _Row:
    laid_out = _Row([], [], [], [], [])
    next_segment = 0
    for piece in pieces:
        group = groups[piece.group]
        prefix_len = len(group.prefix_ids)
        prefix_segment, next_segment = next_segment, next_segment + 1  # numbered even when empty
        laid_out.add_block(group.prefix_ids, 0, prefix_segment, prefix_segment)
        prefix_last = len(laid_out.ids) - 1
        for candidate in piece.candidates:
            suffix = group.suffix_ids[candidate]
            if suffix:
                laid_out.add_block(suffix, prefix_len, next_segment, prefix_segment)
                next_segment += 1
                column = len(laid_out.ids) - 1
            elif prefix_len:
                column = prefix_last
            else:
                raise ValueError(
                    f"group {piece.group}, candidate {candidate}: cannot score an empty prompt "
                    "(neither prefix nor suffix)"
                )
            laid_out.readouts.append(ReadOut(group=piece.group, candidate=candidate, row=row, column=column))
    return laid_out


def pack_rows(
    groups: Sequence[ScoringGroup], rows: Sequence[Sequence[RowPiece]], pad_id: int = 0
) -> PackedPass:
    """Lay out the given rows, right-padded to the longest, as one pass.

    `pad_id` may be any valid id: no real token ever attends to a pad.
    Raises ValueError for a candidate with neither prefix nor suffix (there is
    no position to read its logits at).
    """
    laid_out = [_lay_out_row(groups, row, pieces) for row, pieces in enumerate(rows)]
    real = sum(len(row.ids) for row in laid_out)
    length = max((len(row.ids) for row in laid_out), default=0)
    for row in laid_out:
        row.pad_to(length, pad_id)

    def tensor(values: list[list[int]]) -> torch.Tensor:
        return torch.tensor(values, dtype=torch.long).reshape(len(laid_out), length)  # (rows, length)

    return PackedPass(
        input_ids=tensor([row.ids for row in laid_out]),
        position_ids=tensor([row.positions for row in laid_out]),
        segment_ids=tensor([row.segments for row in laid_out]),
        context_ids=tensor([row.contexts for row in laid_out]),
        readouts=tuple(r for row in laid_out for r in row.readouts),
        real_tokens=real,
        attended_pairs=sum(row.attended for row in laid_out),
    )


def pack_groups(groups: Sequence[ScoringGroup], pad_id: int = 0) -> PackedPass:
    """Each whole group in a row of its own, all rows in one pass (the
    training layout: one context, every candidate's label, per row)."""
    rows = [[RowPiece(index, tuple(range(group.num_candidates)))] for index, group in enumerate(groups)]
    return pack_rows(groups, rows, pad_id)


def split_group(index: int, group: ScoringGroup, max_row_tokens: int) -> list[RowPiece]:
    """The group as row pieces of at most `max_row_tokens` tokens, each
    repeating the prefix, candidates in order. A prefix plus one candidate
    that alone exceeds the limit is a piece of its own, over the limit."""
    pieces: list[RowPiece] = []
    current: list[int] = []
    length = len(group.prefix_ids)
    for candidate, suffix in enumerate(group.suffix_ids):
        if current and length + len(suffix) > max_row_tokens:
            pieces.append(RowPiece(index, tuple(current)))
            current, length = [], len(group.prefix_ids)
        current.append(candidate)
        length += len(suffix)
    if current:
        pieces.append(RowPiece(index, tuple(current)))
    return pieces


def plan_passes(
    groups: Sequence[ScoringGroup],
    max_batch_tokens: int,
    *,
    max_row_tokens: int | None = None,
    pad_id: int = 0,
) -> PackingPlan:
    """The forward passes that score every candidate of `groups`, each pass
    running at most `max_batch_tokens` tokens (rows x length, pads included).

    Rows hold at most `max_row_tokens` tokens (never more than the budget).
    The default is the longest group: no group is split, and smaller groups
    share a row up to that length. A dense-mask kernel (sdpa, eager) spends
    length squared on each row's attention, masked or not, so for a fixed
    number of tokens longer rows cost more (measured on the demo model on
    CPU: one 4,000-token row ran 3x slower than rows of one group each);
    a block-sparse kernel (flex attention) skips masked blocks and can take
    longer rows. `stats.masked_share` and `stats.padding_share` show the
    trade.

    Greedy and deterministic: groups longer than a row are split into pieces
    that each repeat the prefix (`split_group`); pieces go, longest first,
    into the first row with room (first-fit decreasing); rows go, longest
    first, into passes while rows x longest fits the budget. Nothing is ever
    refused: a prefix plus one candidate longer than the budget gets a row
    and a pass of its own, over the budget.
    """
    if max_batch_tokens < 1:
        raise ValueError(f"max_batch_tokens must be at least 1, got {max_batch_tokens}")
    if max_row_tokens is not None and max_row_tokens < 1:
        raise ValueError(f"max_row_tokens must be at least 1, got {max_row_tokens}")
    if max_row_tokens is None:
        max_row_tokens = max(map(row_tokens, groups), default=1)
    row_limit = min(max_row_tokens, max_batch_tokens)

    pieces = [piece for index, group in enumerate(groups) for piece in split_group(index, group, row_limit)]
    lengths = [piece_length(groups[p.group], p) for p in pieces]
    rows: list[list[int]] = []  # piece indices
    room: list[int] = []
    for piece in sorted(range(len(pieces)), key=lambda i: -lengths[i]):
        row = next((r for r, free in enumerate(room) if lengths[piece] <= free), None)
        if row is None:
            rows.append([piece])
            room.append(row_limit - lengths[piece])
        else:
            rows[row].append(piece)
            room[row] -= lengths[piece]

    passes: list[list[list[RowPiece]]] = []
    width = 0
    for row in sorted(rows, key=lambda r: -sum(lengths[i] for i in r)):
        row_length = sum(lengths[i] for i in row)
        if not passes or (len(passes[-1]) + 1) * width > max_batch_tokens:
            passes.append([])
            width = row_length  # rows come longest first: the first row sets the pass's length
        passes[-1].append([pieces[i] for i in sorted(row)])  # groups in caller order within a row
    return PackingPlan(tuple(pack_rows(groups, pass_rows, pad_id) for pass_rows in passes))
