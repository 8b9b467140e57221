"""Settings declared once (brew.settings): a field's declaration is the only
place its type, default, bound and help live; TOML loading, flags, --help and
validation all follow it."""

from __future__ import annotations

import argparse
import contextlib
import io
import subprocess
import sys
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import pytest

from brew.engines.engine_settings import EngineSettings
from brew.settings import (
    Settings, SettingsError, UnknownKeyError, add_flags, fields_of, from_table, given_flags, section, setting,
)
from serving.config import ServerConfig, load_config

REPO = Path(__file__).resolve().parents[2]


class Color(StrEnum):
    RED = "red"
    BLUE = "blue"


@dataclass(frozen=True)
class Inner(Settings):
    depth: int = setting(3, ge=1, help="how deep")


@dataclass(frozen=True)
class Knobs(Settings):
    width_ms: float = setting(4.0, ge=0, help="how wide")
    color: Color = setting(Color.RED, help="which color")
    label: str | None = setting(None, choices=("a", "b"), help="a label")
    loud: bool = setting(False, help="whether loud")
    inner: Inner = section(Inner, help="the inner knobs")


def parse(cls: type, argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_flags(parser, cls)
    return parser.parse_args(argv)


def help_text(cls: type) -> str:
    parser = argparse.ArgumentParser()
    add_flags(parser, cls)
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        parser.parse_args(["--help"])
    return out.getvalue()


def test_one_declared_field_reaches_toml_flags_help_and_validation():
    # The new field is declared once, in the subclass; nothing else is written for it.
    @dataclass(frozen=True)
    class WithNewKnob(Knobs):
        new_knob_gib: float = setting(2.0, gt=0, help="a brand-new knob")

    assert from_table(WithNewKnob, {"new_knob_gib": 3}).new_knob_gib == 3.0  # TOML (int -> float)
    args = parse(WithNewKnob, ["--new-knob-gib", "5.5"])
    assert from_table(WithNewKnob, given_flags(args, WithNewKnob)).new_knob_gib == 5.5  # the flag
    assert "--new-knob-gib X a brand-new knob (default: 2.0)" in " ".join(help_text(WithNewKnob).split())
    with pytest.raises(SettingsError, match=r"new_knob_gib must be > 0, got -1"):
        from_table(WithNewKnob, {"new_knob_gib": -1})


def test_a_server_setting_added_to_the_declaration_shows_in_every_place():
    # The real classes work the same way: every ServerConfig field is a TOML key
    # (top level or [server]) and, unless it is a secret, a `brew serve` flag.
    from brew.cli import build_parser

    serve_help = " ".join(subprocess.run([sys.executable, "-m", "brew.cli", "serve", "--help"], cwd=REPO,
                                         capture_output=True, text=True, check=True).stdout.split())
    for f in fields_of(ServerConfig):
        if f.spec.flag:
            assert f.flag in serve_help, f.name
    args = build_parser().parse_args(["serve", "--max-batch-candidates", "32", "--no-enforce-eager",
                                      "--slo-ms", "250", "--engine", "torch"])
    table = given_flags(args, ServerConfig)
    assert table == {"engine": "torch", "slo_ms": 250.0, "vllm": {"enforce_eager": False},
                     "batching": {"max_batch_candidates": 32}}
    config = load_config(**table)
    assert (config.batching.max_batch_candidates, config.vllm.enforce_eager, config.slo_seconds) == (32, False, 0.25)


def test_values_are_checked_against_their_declared_types():
    with pytest.raises(SettingsError) as caught:
        Knobs(width_ms="4", color="green", loud=1)  # type: ignore[arg-type]
    assert caught.value.problems == ["width_ms must be a number, got '4'",
                                     "color 'green' is not one of ['red', 'blue']",
                                     "loud must be true or false, got 1"]
    with pytest.raises(SettingsError, match=r"label must be one of a, b, got 'c'"):
        Knobs(label="c")


def test_a_table_converts_what_toml_cannot_spell_and_names_section_problems():
    knobs = from_table(Knobs, {"color": "blue", "inner": {"depth": 5}})
    assert knobs == Knobs(color=Color.BLUE, inner=Inner(depth=5))
    with pytest.raises(SettingsError) as caught:
        from_table(Knobs, {"width_ms": -1, "inner": {"depth": 0}})
    assert caught.value.problems == ["inner.depth must be >= 1, got 0"]  # sections are built first
    with pytest.raises(UnknownKeyError, match=r"config file \[inner\]: unknown key\(s\) \['dept'\]; known: \['depth'\]"):
        from_table(Knobs, {"inner": {"dept": 5}})


def test_a_flag_left_out_is_not_given_and_booleans_take_no():
    assert given_flags(parse(Knobs, []), Knobs) == {}
    assert given_flags(parse(Knobs, ["--no-loud", "--depth", "2", "--color", "blue"]), Knobs) == {
        "loud": False, "color": "blue", "inner": {"depth": 2}}
    with pytest.raises(SystemExit):
        parse(Knobs, ["--color", "green"])


def test_every_engine_setting_is_a_flag_of_brew_score_and_brew_eval():
    # `brew score` reproduces a server's engine: it takes --config and every engine option.
    from brew.cli import build_parser

    parser = build_parser()
    for command in ("score", "eval"):
        args = parser.parse_args([command, "--config", "x.toml", "--multi-item", "on", "--kv-cache-gib", "2",
                                  "--max-row-tokens", "99", "--max-batch-tokens", "512", "--prompts", "p"])
        table = given_flags(args, ServerConfig)
        assert table == {"multi_item": "on", "prompts": Path("p"), "vllm": {"kv_cache_gib": 2.0},
                         "packing": {"max_row_tokens": 99}, "torch": {"max_batch_tokens": 512}}, command
        assert args.config == Path("x.toml")
    engine_flags = {f.flag for f in fields_of(EngineSettings)}
    score_help = subprocess.run([sys.executable, "-m", "brew.cli", "score", "--help"], cwd=REPO,
                                capture_output=True, text=True, check=True).stdout
    assert all(flag in score_help for flag in engine_flags)
