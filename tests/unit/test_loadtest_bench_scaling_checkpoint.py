"""The scaling benchmark's random checkpoint has room for the longest prompt."""

from __future__ import annotations

import pytest

from loadtest.bench.scaling.checkpoint import checkpoint_positions


def test_checkpoint_positions_hold_the_longest_prompt():
    assert checkpoint_positions(100) == 1024
    assert checkpoint_positions(1024) == 1024
    assert checkpoint_positions(4096 + 24) == 8192


def test_model_shapes_parse_with_head_dim_from_hidden_and_heads():
    from brew.demo.checkpoint import ModelShape
    from loadtest.bench.scaling.checkpoint import parse_model_shape

    assert parse_model_shape("demo") == ModelShape()
    big = parse_model_shape("hidden=2048,layers=16,heads=32,intermediate=8192")
    assert (big.hidden_size, big.layers, big.heads, big.head_dim, big.intermediate_size) == (2048, 16, 32, 64, 8192)
    assert parse_model_shape("layers=2").layers == 2
    assert parse_model_shape("hidden=256,heads=2,head_dim=32").head_dim == 32


@pytest.mark.parametrize("text", ["width=3", "layers=0", "layers=x", "hidden=100,heads=3"])
def test_bad_model_shapes_say_what_is_wrong(text):
    from loadtest.bench.scaling.checkpoint import parse_model_shape

    with pytest.raises(ValueError, match="model shape"):
        parse_model_shape(text)


def test_a_checkpoint_of_a_given_shape_loads_with_that_shape(tmp_path):
    from transformers import AutoConfig

    from loadtest.bench.scaling.checkpoint import parse_model_shape, write_checkpoint

    write_checkpoint(tmp_path, 1024, seed=0, shape=parse_model_shape("hidden=64,layers=2,heads=2,intermediate=96"))
    config = AutoConfig.from_pretrained(tmp_path, local_files_only=True)
    assert (config.hidden_size, config.num_hidden_layers, config.head_dim, config.max_position_embeddings) == (
        64, 2, 32, 1024)
