"""Tasks: a template plus its labels, history policy and token budgets.

A task lives in the prompts directory as `<name>.toml` (config) next to a
Jinja template (`<name>.jinja` unless the config names another). A new ranking
surface is a new task, not a new model. The task version is a content hash of
both files unless the config pins one, so a score can be traced to the exact
template that produced it.
"""

from __future__ import annotations

import hashlib
import tomllib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2

from brew.errors import TaskConfigError, UnknownTaskError
from brew.history import Downsample, HistoryPolicy
from brew.templates import TaskTemplate, make_environment


@dataclass(frozen=True)
class Task:
    """One ranking task, ready to verbalize requests."""

    name: str
    description: str
    version: str
    labels: tuple[str, ...]
    positive_label: str
    history: HistoryPolicy
    max_candidate_tokens: int
    template: TaskTemplate
    slo_ms: float | None = None  # this task's latency SLO; None: the server's (serving.admission)

    @property
    def slo_seconds(self) -> float | None:
        return None if self.slo_ms is None else self.slo_ms / 1000.0

    @property
    def positive_index(self) -> int:
        return self.labels.index(self.positive_label)


class TaskRegistry(Mapping[str, Task]):
    """The loaded tasks by name; immutable once built (reload builds a new one)."""

    def __init__(self, tasks: Mapping[str, Task]) -> None:
        self._tasks = dict(sorted(tasks.items()))

    def __getitem__(self, name: str) -> Task:
        try:
            return self._tasks[name]
        except KeyError:
            known = ", ".join(self._tasks) or "none"
            raise UnknownTaskError(f"unknown task {name!r}; known tasks: {known}") from None

    # __getitem__ raises UnknownTaskError, not KeyError, so the Mapping
    # defaults of these two would raise instead of answering.
    def __contains__(self, name: object) -> bool:
        return name in self._tasks

    def get(self, name: str, default: Task | None = None) -> Task | None:  # type: ignore[override]
        return self._tasks.get(name, default)

    def __iter__(self) -> Iterator[str]:
        return iter(self._tasks)

    def __len__(self) -> int:
        return len(self._tasks)


@dataclass(frozen=True)
class PromptFiles:
    """What a prompts directory holds: one `<task>.toml` per task (its
    template named inside) and shared partials `_*.jinja` every template may
    include. The one place this layout rule is written."""

    configs: tuple[Path, ...]
    partials: tuple[Path, ...]


def prompt_files(prompts_dir: Path) -> PromptFiles:
    return PromptFiles(configs=tuple(sorted(prompts_dir.glob("*.toml"))),
                       partials=tuple(sorted(prompts_dir.glob("_*.jinja"))))


# Example requests live in this folder of the prompts directory, one file per
# task (`examples/<task>.json`): lint renders them, `brew prompts render` reads
# a task's own by default.
EXAMPLES_DIR = "examples"


def example_file(prompts_dir: Path, task_name: str) -> Path:
    """The prompts directory's example request for one task."""
    return prompts_dir / EXAMPLES_DIR / f"{task_name}.json"


def load_tasks(prompts_dir: Path | str) -> TaskRegistry:
    """Load every `*.toml` task of a prompts directory."""
    prompts_dir = Path(prompts_dir)
    files = prompt_files(prompts_dir)
    if not files.configs:
        raise TaskConfigError(f"no task configs (*.toml) in {prompts_dir}")
    environment = make_environment(prompts_dir)
    return TaskRegistry({path.stem: load_task(path, environment, files.partials) for path in files.configs})


CONFIG_KEYS = {"description", "template", "version", "max_candidate_tokens", "slo_ms", "labels", "history"}
LABEL_KEYS = {"words", "positive"}
HISTORY_KEYS = {"max_item_tokens", "max_tokens", "max_items", "action_priority", "downsample"}


def load_task(config_path: Path, environment: jinja2.Environment, partials: Sequence[Path] = ()) -> Task:
    """Load one task from its TOML config and the template it names.

    `partials` (shared `_*.jinja` files) count in the content version."""
    name = config_path.stem
    try:
        config = tomllib.loads(config_path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as error:
        raise TaskConfigError(f"{config_path}: invalid TOML: {error}") from error
    _reject_unknown_keys(config_path, "top level", config, CONFIG_KEYS)
    _reject_unknown_keys(config_path, "[labels]", config.get("labels", {}), LABEL_KEYS)
    _reject_unknown_keys(config_path, "[history]", config.get("history", {}), HISTORY_KEYS)
    template_path = config_path.with_name(config.get("template", f"{name}.jinja"))
    if not template_path.is_file():
        raise TaskConfigError(f"{config_path}: template file {template_path.name} not found")
    template = TaskTemplate.from_file(template_path, environment)
    labels, positive = _parse_labels(config_path, config.get("labels", {}))
    try:
        history = _parse_history(config.get("history", {}))
    except KeyError as error:
        raise TaskConfigError(f"{config_path}: [history] downsample: a rule lacks {error}") from error
    except TaskConfigError as error:
        raise TaskConfigError(f"{config_path}: [history] {error}") from error
    except (TypeError, ValueError) as error:
        raise TaskConfigError(f"{config_path}: [history]: {error}") from error
    try:
        max_candidate_tokens = int(config.get("max_candidate_tokens", 128))
    except (TypeError, ValueError) as error:
        raise TaskConfigError(f"{config_path}: max_candidate_tokens must be an integer: {error}") from error
    slo_ms = _slo_ms(config_path, config.get("slo_ms"))
    version = str(config.get("version") or content_version(config_path, template_path, *partials))
    return Task(
        name=name,
        description=str(config.get("description", "")),
        version=version,
        labels=labels,
        positive_label=positive,
        history=history,
        max_candidate_tokens=max_candidate_tokens,
        template=template,
        slo_ms=slo_ms,
    )


def _slo_ms(config_path: Path, value: Any) -> float | None:
    """The task's own latency SLO in milliseconds, if it names one."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise TaskConfigError(f"{config_path}: slo_ms must be a positive number of milliseconds, got {value!r}")
    return float(value)


def _reject_unknown_keys(path: Path, where: str, section: Mapping[str, Any], known: set[str]) -> None:
    unknown = sorted(set(section) - known)
    if unknown:
        raise TaskConfigError(
            f"{path}: {where}: unknown key(s) {unknown}; known keys: {sorted(known)} "
            f"(in TOML, top-level keys must come before the first [table])"
        )


def content_version(*paths: Path) -> str:
    """A short hash of the files that define a task."""
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def _parse_labels(config_path: Path, labels: Mapping[str, Any]) -> tuple[tuple[str, ...], str]:
    if "words" not in labels:
        raise TaskConfigError(f"{config_path}: [labels] words is missing; give at least two label words")
    words = _string_list(labels["words"], f"{config_path}: [labels] words")
    if len(words) < 2:
        raise TaskConfigError(f"{config_path}: [labels] words needs at least two label words")
    if len(set(words)) != len(words):
        raise TaskConfigError(f"{config_path}: [labels] words repeats a word: {list(words)}")
    positive = labels.get("positive", words[0])
    if positive not in words:
        raise TaskConfigError(
            f"{config_path}: [labels] positive {positive!r} is not one of words {list(words)}"
        )
    return words, positive


def _string_list(value: Any, what: str) -> tuple[str, ...]:
    """A TOML list of strings; a bare string would otherwise split into characters."""
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise TaskConfigError(f"{what} must be a list of strings, got {value!r}")
    return tuple(value)


def _parse_history(section: Mapping[str, Any]) -> HistoryPolicy:
    downsample = tuple(
        Downsample(action=str(rule["action"]), keep_rate=float(rule["keep_rate"]))
        for rule in section.get("downsample", ())
    )
    return HistoryPolicy(
        max_item_tokens=int(section.get("max_item_tokens", 32)),
        max_tokens=int(section.get("max_tokens", 256)),
        max_items=int(section.get("max_items", 50)),
        action_priority=_string_list(section.get("action_priority", []), "action_priority"),
        downsample=downsample,
    )
