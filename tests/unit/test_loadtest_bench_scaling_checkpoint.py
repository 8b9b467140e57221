"""The scaling benchmark's random checkpoint has room for the longest prompt."""

from __future__ import annotations

from loadtest.bench.scaling_checkpoint import checkpoint_positions


def test_checkpoint_positions_hold_the_longest_prompt():
    assert checkpoint_positions(100) == 1024
    assert checkpoint_positions(1024) == 1024
    assert checkpoint_positions(4096 + 24) == 8192
