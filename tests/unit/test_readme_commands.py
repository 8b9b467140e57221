"""CI runs what the README tells a reader to run: .ci/run's last command is,
word for word, the README's test command."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def fenced_lines(markdown: str) -> list[str]:
    """Every line inside a fenced code block (``` ... ```)."""
    blocks = re.findall(r"^```[^\n]*\n(.*?)^```", markdown, flags=re.MULTILINE | re.DOTALL)
    return [line.strip() for block in blocks for line in block.splitlines() if line.strip()]


def last_command(script: str) -> str:
    lines = [line.strip() for line in script.splitlines()]
    return [line for line in lines if line and not line.startswith("#")][-1]


def readme_test_command() -> str:
    commands = [line for line in fenced_lines((REPO / "README.md").read_text(encoding="utf-8"))
                if "-m pytest" in line]
    assert len(commands) == 1, f"expected one test command in README.md's code blocks, found {commands}"
    return commands[0]


def test_ci_runs_the_readme_test_command_word_for_word():
    ci = last_command((REPO / ".ci" / "run").read_text(encoding="utf-8"))
    assert ci.split() == readme_test_command().split()


def test_the_test_command_sets_up_and_runs_every_test():
    words = readme_test_command().split()
    assert words[:4] == ["python3.11", "-m", "venv", ".venv"]
    assert "'.[cpu,test]'" in words
    assert words[-3:] == [".venv/bin/python", "-m", "pytest"]  # no path: every test directory


def test_the_helpers_read_what_they_claim():
    markdown = "text\n```bash\n  a b  \n\nc\n```\nnot code\n```\nd\n```\n"
    assert fenced_lines(markdown) == ["a b", "c", "d"]
    assert last_command("#!/bin/sh\n# note\nfirst\nsecond  \n\n# trailing comment\n") == "second"
