"""The scaling benchmark's command line: engine caps and the documented sweeps."""

from __future__ import annotations

import argparse

import pytest

from loadtest.bench.scaling import build_parser, parse_caps


def test_parse_caps():
    assert parse_caps("torch=5000") == {"naive": 40_000, "torch": 5000}
    assert parse_caps("naive=0") == {}
    with pytest.raises(argparse.ArgumentTypeError):
        parse_caps("gpt=5")


def test_parser_defaults_are_the_documented_sweeps():
    args = build_parser().parse_args(["--out", "x"])
    assert args.candidates == (1, 4, 16, 64, 256)
    assert args.history_tokens == (64, 256, 1024, 4096)
    assert args.engines == ("vllm", "torch", "naive")
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--out", "x", "--engines", "tgi"])
