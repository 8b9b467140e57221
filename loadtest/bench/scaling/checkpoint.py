"""The scaling benchmark's checkpoint: the demo's tokenizer and a Llama of a
given size (the demo's own by default) with random weights (cost does not
depend on them), saved with room for the longest prompt of the sweeps.

On a GPU the demo's 0.95 M parameters measure launch overhead, not scoring:
`--model-shape hidden=2048,layers=16,heads=32,intermediate=8192` (about 1 B
parameters) is a model a GPU is bought for.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # brew.demo.checkpoint imports transformers: only when a checkpoint is built
    from brew.demo.checkpoint import ModelShape

SHAPE_KEYS = {"hidden": "hidden_size", "layers": "layers", "heads": "heads", "head_dim": "head_dim",
              "intermediate": "intermediate_size"}


def parse_model_shape(text: str) -> ModelShape:
    """`demo`, or `hidden=2048,layers=16,heads=32,intermediate=8192`
    (head_dim defaults to hidden / heads; keys left out keep the demo's)."""
    from brew.demo.checkpoint import ModelShape

    if text.strip() == "demo":
        return ModelShape()
    values: dict[str, int] = {}
    for part in text.split(","):
        key, _, value = part.partition("=")
        key = key.strip()
        if key not in SHAPE_KEYS or not value.strip().isdigit() or int(value) < 1:
            raise ValueError(f"model shape {part!r}: expected KEY=N with N >= 1, KEY one of {sorted(SHAPE_KEYS)}")
        values[SHAPE_KEYS[key]] = int(value)
    shape = dataclasses.replace(ModelShape(), **values)
    if "head_dim" not in values:
        if shape.hidden_size % shape.heads:
            raise ValueError(f"model shape: hidden {shape.hidden_size} is not a multiple of heads {shape.heads}")
        shape = dataclasses.replace(shape, head_dim=shape.hidden_size // shape.heads)
    return shape


def checkpoint_positions(longest_prompt: int, minimum: int = 1024) -> int:
    """max_position_embeddings for the random checkpoint: the next power of two
    that holds the longest prompt (and never less than the demo's 1024)."""
    positions = minimum
    while positions < longest_prompt:
        positions *= 2
    return positions


def write_checkpoint(directory: Path, max_positions: int, seed: int, shape: ModelShape | None = None) -> Path:
    """A random-weight checkpoint of `shape` (the demo's by default) with the
    demo's tokenizer, with room for `max_positions` tokens."""
    import torch
    from transformers import PreTrainedTokenizerFast

    from brew import defaults
    from brew.demo.checkpoint import ModelShape, build_model

    tokenizer = PreTrainedTokenizerFast.from_pretrained(defaults.DEMO_MODEL_DIR)
    torch.manual_seed(seed)
    model = build_model(tokenizer, dataclasses.replace(shape or ModelShape(), max_position_embeddings=max_positions))
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory
