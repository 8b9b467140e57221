"""The scaling benchmark's checkpoint: the demo's architecture and tokenizer
with random weights (cost does not depend on them), saved with room for the
longest prompt of the sweeps.
"""

from __future__ import annotations

from pathlib import Path


def checkpoint_positions(longest_prompt: int, minimum: int = 1024) -> int:
    """max_position_embeddings for the random checkpoint: the next power of two
    that holds the longest prompt (and never less than the demo's 1024)."""
    positions = minimum
    while positions < longest_prompt:
        positions *= 2
    return positions


def write_checkpoint(directory: Path, max_positions: int, seed: int) -> Path:
    """A random-weight checkpoint with the demo's architecture and tokenizer,
    with room for `max_positions` tokens."""
    import torch
    from transformers import PreTrainedTokenizerFast

    from brew import defaults
    from brew.demo.checkpoint import ModelShape, build_model

    tokenizer = PreTrainedTokenizerFast.from_pretrained(defaults.DEMO_MODEL_DIR)
    torch.manual_seed(seed)
    model = build_model(tokenizer, ModelShape(max_position_embeddings=max_positions))
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory
