"""Shared fixtures of the unit tests: the shipped tasks, the demo model's
tokenizer (the tokenizer only, no weights), a writer of small prompts
directories for tests that need a task of their own, and the figures a plot
test saved."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from brew import defaults
from brew.tasks import TaskRegistry, load_tasks
from brew.tokenization import PromptTokenizer

WritePrompts = Callable[..., Path]


@pytest.fixture(scope="session")
def shipped_tasks() -> TaskRegistry:
    return load_tasks(defaults.PROMPTS_DIR)


@pytest.fixture(scope="session")
def demo_tokenizer() -> PromptTokenizer:
    return PromptTokenizer.from_pretrained(defaults.DEMO_MODEL_DIR)


@pytest.fixture
def write_prompts(tmp_path: Path) -> WritePrompts:
    """`write_prompts(files, name=(toml, jinja), ...)` writes one task per
    keyword, and `files` (partials, `examples/<task>.json`) by their relative
    paths, into tmp_path/prompts and returns that directory."""

    def write(files: dict[str, str] | None = None, **tasks: tuple[str, str]) -> Path:
        prompts = tmp_path / "prompts"
        prompts.mkdir(exist_ok=True)
        for name, (config, template) in tasks.items():
            (prompts / f"{name}.toml").write_text(config, encoding="utf-8")
            (prompts / f"{name}.jinja").write_text(template, encoding="utf-8")
        for file_name, text in (files or {}).items():
            (prompts / file_name).parent.mkdir(parents=True, exist_ok=True)
            (prompts / file_name).write_text(text, encoding="utf-8")
        return prompts

    return write


@pytest.fixture
def saved_figures(monkeypatch: pytest.MonkeyPatch) -> list:
    """Every matplotlib figure saved during the test, in the order saved
    (each is still written to its file). Read them with tests/unit/figures.py."""
    from matplotlib.figure import Figure  # here: only the plot tests load matplotlib

    saved: list[Figure] = []
    savefig = Figure.savefig

    def recording_savefig(figure: Figure, *args: object, **kwargs: object) -> None:
        saved.append(figure)
        savefig(figure, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", recording_savefig)
    return saved
