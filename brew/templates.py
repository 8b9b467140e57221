"""Task templates: one Jinja file, three named blocks, a sandbox.

A task template defines
  - `context`: the shared part (instruction, profile, history), rendered once
    per (member, task); it sees `profile`, `history` (rendered item lines) and
    `task`, never a candidate, so it cannot leak candidate data into the prefix;
  - `history_item`: one past interaction, rendered per item so each can be
    measured and truncated in tokens; it sees `action`, `entity_type`, `item`;
  - `candidate`: the candidate block, ending right before the answer token; it
    sees `candidate`, `entity_type`, `profile` and `task`.

Templates render in Jinja's immutable sandbox with StrictUndefined: request
data is always a value, never template code, and a missing field is an error
that names it, not an empty string. The sandbox takes two shortcuts for the
lookups prompt templates make most (`ScoringSandbox`): same answers, sooner.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

from brew.errors import TaskConfigError, TemplateFieldError

BLOCKS = ("context", "history_item", "candidate")


# Names a dict answers as attributes: `d.items` must stay the dict's method
# (Jinja prefers an attribute to a key), so these names take the stock path.
_DICT_ATTRIBUTES = frozenset(dir(dict))
# str attributes the sandbox answers with a wrapper (safe formatting).
_STR_FORMAT_METHODS = frozenset({"format", "format_map"})


class ScoringSandbox(ImmutableSandboxedEnvironment):
    """Jinja's immutable sandbox, with shortcuts for the two lookups a prompt
    template makes per field: a key of a plain dict (`candidate.title`) and a
    public method of a str (`candidate.skills.split`).

    The stock `getattr` tries the attribute first and, for a dict key, pays a
    raised and caught AttributeError before reading the key; every attribute
    it finds then goes through the safety checks. For a name that is not an
    attribute of dict, its answer is the key's value or undefined (the
    sandbox's own `d["title"]` returns a dict's values unchecked); for a str
    method not starting with "_" and not str.format, the checks always pass.
    So the shortcuts return what the stock sandbox returns
    (tests/unit/test_templates.py renders every bundled template both ways);
    anything else takes the stock path.
    """

    def getattr(self, obj: Any, attribute: str) -> Any:
        kind = type(obj)
        if kind is dict and attribute not in _DICT_ATTRIBUTES:
            try:
                return obj[attribute]
            except KeyError:
                return self.undefined(obj=obj, name=attribute)
        if kind is str and not attribute.startswith("_") and attribute not in _STR_FORMAT_METHODS:
            try:
                return getattr(obj, attribute)
            except AttributeError:
                return self.undefined(obj=obj, name=attribute)
        return super().getattr(obj, attribute)


def make_environment(prompts_dir: Path) -> ImmutableSandboxedEnvironment:
    """The Jinja environment the task templates of one prompts directory render
    in; `{% include "_partial.jinja" %}` finds shared partials there."""
    return ScoringSandbox(
        loader=jinja2.FileSystemLoader(str(prompts_dir)),
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=False,
    )


@dataclass(frozen=True)
class TaskTemplate:
    """A compiled task template and the source it came from."""

    name: str
    source: str
    compiled: jinja2.Template

    @classmethod
    def from_file(cls, path: Path, environment: jinja2.Environment) -> TaskTemplate:
        """Compile a template of the environment's prompts directory."""
        try:
            compiled = environment.get_template(path.name)
        except jinja2.TemplateSyntaxError as error:
            raise TaskConfigError(
                f"{error.filename or path}, line {error.lineno}: syntax error: {error.message}"
            ) from error
        except jinja2.TemplateNotFound as error:
            raise TaskConfigError(f"{path}: template {error.name} not found") from error
        source = path.read_text(encoding="utf-8")
        name = path.name
        missing = [block for block in BLOCKS if block not in compiled.blocks]
        if missing:
            raise TaskConfigError(
                f"template {name} lacks block(s) {', '.join(missing)}; a task template "
                f"defines {{% block context %}}, {{% block history_item %}} and "
                f"{{% block candidate %}}"
            )
        return cls(name=name, source=source, compiled=compiled)

    def render_block(self, block: str, variables: Mapping[str, Any]) -> str:
        """Render one block alone with exactly `variables` in scope."""
        context = self.compiled.new_context(dict(variables), shared=False)
        try:
            return "".join(self.compiled.blocks[block](context))
        except jinja2.UndefinedError as error:
            raise TemplateFieldError(
                f"template {self.name}, block {block}: {error.message}; "
                f"the request data lacks a field this template uses"
            ) from error
        except jinja2.TemplateNotFound as error:
            raise TaskConfigError(f"template {self.name}, block {block}: include {error.name} not found") from error
        except jinja2.exceptions.SecurityError as error:
            raise TaskConfigError(f"template {self.name}, block {block}: {error}") from error
