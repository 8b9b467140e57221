"""Pack scoring groups into rows: one shared prefix, then every candidate.

Row layout: `prefix | suffix_0 | suffix_1 | ...`. A 4D boolean attention mask
lets each suffix see the prefix and itself only, and each suffix's position
ids restart right after the prefix, so the logits at the end of suffix i are
those of the plain prompt `prefix + suffix_i`. The prefix is computed once per
row: training reads many labels for the price of one context (the same idea as
multi-item scoring at serving time).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from brew.types import ScoringGroup


@dataclass(frozen=True)
class PackedBatch:
    input_ids: torch.Tensor  # (rows, length) long
    position_ids: torch.Tensor  # (rows, length) long
    attention_mask: torch.Tensor  # (rows, 1, length, length) bool, True = may attend
    last_rows: torch.Tensor  # (candidates,) row of each candidate's last token
    last_columns: torch.Tensor  # (candidates,) column of each candidate's last token
    next_token_targets: torch.Tensor  # (rows, length) next token within a segment, -100 elsewhere


def pack_groups(groups: Sequence[ScoringGroup], pad_id: int) -> PackedBatch:
    """Pack each group into one row, right-padded to the longest row."""
    lengths = [len(g.prefix_ids) + sum(len(s) for s in g.suffix_ids) for g in groups]
    rows, width = len(groups), max(lengths)
    input_ids = torch.full((rows, width), pad_id, dtype=torch.long)
    position_ids = torch.zeros((rows, width), dtype=torch.long)
    # Pads attend to themselves only, so no softmax row is empty.
    mask = torch.eye(width, dtype=torch.bool).repeat(rows, 1, 1)
    next_tokens = torch.full((rows, width), -100, dtype=torch.long)
    last_rows: list[int] = []
    last_columns: list[int] = []
    for row, group in enumerate(groups):
        prefix = len(group.prefix_ids)
        input_ids[row, :prefix] = torch.tensor(group.prefix_ids)
        position_ids[row, :prefix] = torch.arange(prefix)
        mask[row, :prefix, :prefix] = torch.ones(prefix, prefix, dtype=torch.bool).tril()
        next_tokens[row, : prefix - 1] = input_ids[row, 1:prefix]
        start = prefix
        for suffix in group.suffix_ids:
            end = start + len(suffix)
            input_ids[row, start:end] = torch.tensor(suffix)
            position_ids[row, start:end] = torch.arange(prefix, prefix + len(suffix))
            mask[row, start:end, :prefix] = True
            mask[row, start:end, start:end] = torch.ones(len(suffix), len(suffix), dtype=torch.bool).tril()
            next_tokens[row, start : end - 1] = input_ids[row, start + 1 : end]
            last_rows.append(row)
            last_columns.append(end - 1)
            start = end
    return PackedBatch(
        input_ids=input_ids,
        position_ids=position_ids,
        attention_mask=mask.unsqueeze(1),
        last_rows=torch.tensor(last_rows),
        last_columns=torch.tensor(last_columns),
        next_token_targets=next_tokens,
    )


def packed_logits(model: torch.nn.Module, batch: PackedBatch) -> torch.Tensor:
    """fp32 logits at every position, (rows, length, vocab)."""
    output = model(
        input_ids=batch.input_ids,
        position_ids=batch.position_ids,
        attention_mask=batch.attention_mask,
        use_cache=False,
    )
    return output.logits.float()


def packed_last_logits(model: torch.nn.Module, batch: PackedBatch) -> torch.Tensor:
    """fp32 logits at every candidate's last token, (candidates, vocab)."""
    return packed_logits(model, batch)[batch.last_rows, batch.last_columns]
