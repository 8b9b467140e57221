"""A packed pass's inputs as the engine's host thread builds them: padded to
steady shapes for a compiled pass, without changing what any real token sees."""

from __future__ import annotations

import pytest
import torch

from brew.engines.packing import plan_passes
from brew.engines.torch_multi_item import ROW_BUCKET, bucketed, pad_pass, pass_inputs
from brew.types import ScoringGroup

GROUPS = [ScoringGroup((1, 2, 3), ((4, 5), (6,), ()), (7, 8)),
          ScoringGroup((9,) * 10, ((4,) * 7, (5,)), (7,))]


def the_pass():
    (packed,) = plan_passes(GROUPS, 4096).passes
    return packed


def test_bucketed_rounds_up_to_a_multiple():
    assert [bucketed(n, 64) for n in (1, 64, 65, 128)] == [64, 64, 128, 128]
    assert bucketed(37, 1) == 37


def test_padding_keeps_every_real_tokens_mask_and_read_outs():
    packed = the_pass()
    padded = pad_pass(packed, packed.rows + 2, packed.length + 5)
    rows, length = packed.rows, packed.length
    assert padded.input_ids.shape == (rows + 2, length + 5)
    mask, before = padded.dense_mask(), packed.dense_mask()
    assert torch.equal(mask[:rows, :, :length, :length], before)
    assert not mask[:rows, :, :length, length:].any()  # no real token sees a pad
    pads = mask[rows:, 0]  # a pad row's tokens see themselves only
    assert torch.equal(pads, torch.eye(length + 5, dtype=torch.bool).expand_as(pads))
    assert padded.readouts == packed.readouts and padded.real_tokens == packed.real_tokens


def test_a_pass_cannot_be_padded_smaller():
    packed = the_pass()
    with pytest.raises(ValueError, match="cannot pad"):
        pad_pass(packed, packed.rows, packed.length - 1)


def test_pass_inputs_bucket_the_shape_and_keep_the_labels_per_read_out():
    packed = the_pass()
    inputs = pass_inputs(packed, GROUPS, "cpu", bucket_tokens=16)
    assert inputs.packed.length % 16 == 0 and inputs.packed.rows % ROW_BUCKET == 0
    assert inputs.label_ids == tuple(GROUPS[r.group].label_ids for r in packed.readouts)
    assert inputs.readout_rows.tolist() == [r.row for r in packed.readouts]
    unbucketed = pass_inputs(packed, GROUPS, "cpu").packed
    assert unbucketed.input_ids.shape == packed.input_ids.shape  # no bucket: as is
