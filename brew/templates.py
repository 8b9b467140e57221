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

A missing field is said in the request's words: the template file and line
that read it (a partial's own, and the line that included it), the field, and
which data lacks it with the fields it has (`TaskTemplate.render_block`). The
verbalizer puts the task and the item id in front.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import missing

from brew.errors import BrewError, TaskConfigError, TemplateFieldError

BLOCKS = ("context", "history_item", "candidate")

# The request data a block variable holds, as an error message names it.
DATA_NAMES = {"candidate": "the candidate", "item": "the history item", "profile": "the member's profile"}
# At most this many field names are listed in an error.
LISTED_FIELDS = 12


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


class MissingValue(jinja2.UndefinedError):
    """A template read something that is not there: `name`, read from
    `owner` (None when `name` is meant as a variable of the block)."""

    def __init__(self, message: str | None, name: object, owner: object) -> None:
        super().__init__(message)
        self.name = name
        self.owner = owner


class ReportingUndefined(jinja2.StrictUndefined):
    """StrictUndefined whose error keeps what was read and from what, so that
    `render_block` can say it in plain words. Undefined values that fail for
    another reason (the sandbox's SecurityError) keep their own error."""

    __slots__ = ()

    def __init__(self, hint: str | None = None, obj: Any = missing, name: str | None = None,
                 exc: type[jinja2.exceptions.TemplateRuntimeError] = jinja2.UndefinedError) -> None:
        if exc is jinja2.UndefinedError:
            owner = None if obj is missing else obj
            exc = functools.partial(MissingValue, name=name, owner=owner)  # type: ignore[assignment]
        super().__init__(hint, obj, name, exc)


@dataclass(frozen=True)
class TemplateLine:
    """A line of a template file that an error was raised through."""

    file: Path
    line: int


def template_lines(error: BaseException) -> tuple[TemplateLine, ...]:
    """The template lines a render error went through, the innermost first
    (a partial's line, then the line that included it), read from the frames
    of the compiled template code as Jinja's own tracebacks are. The error's
    causes are searched too: the deepest one with template frames counts."""
    found: list[TemplateLine] = []
    cause: BaseException | None = error
    while cause is not None:
        lines: list[TemplateLine] = []
        traceback = cause.__traceback__
        while traceback is not None:
            template = traceback.tb_frame.f_globals.get("__jinja_template__")
            if template is not None:
                here = TemplateLine(Path(template.filename or template.name or "<template>"),
                                    template.get_corresponding_lineno(traceback.tb_lineno))
                if lines and lines[-1].file == here.file:
                    lines[-1] = here  # deeper in the same file: its innermost line counts
                else:
                    lines.append(here)
            traceback = traceback.tb_next
        if lines:
            found = lines
        cause = cause.__cause__
    return tuple(reversed(found))


def describe_lines(lines: tuple[TemplateLine, ...]) -> str:
    """`the template _history_item.jinja line 3 (included from job_apply.jinja line 5)`."""
    first, *outer = lines
    text = f"the template {first.file.name} line {first.line}"
    if outer:
        text += " (" + ", ".join(f"included from {o.file.name} line {o.line}" for o in outer) + ")"
    return text


def make_environment(prompts_dir: Path) -> ImmutableSandboxedEnvironment:
    """The Jinja environment the task templates of one prompts directory render
    in; `{% include "_partial.jinja" %}` finds shared partials there."""
    return ScoringSandbox(
        loader=jinja2.FileSystemLoader(str(prompts_dir)),
        undefined=ReportingUndefined,
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
            raise self._missing(error, block, variables) from error
        except jinja2.TemplateNotFound as error:
            raise TaskConfigError(f"template {self.name}, block {block}: include {error.name} not found") from error
        except jinja2.exceptions.SecurityError as error:
            raise TaskConfigError(f"template {self.name}, block {block}: {error}") from error

    def _missing(self, error: jinja2.UndefinedError, block: str, variables: Mapping[str, Any]) -> BrewError:
        """What a block read and did not find, in plain words: a field the
        request data lacks (TemplateFieldError), or a name the block has no
        variable for, which is the template's fault (TaskConfigError)."""
        lines = template_lines(error)
        where = describe_lines(lines) if lines else f"the template {self.name} (block {block})"
        if not isinstance(error, MissingValue):
            return TemplateFieldError(f"{where}: {error.message}")
        if error.owner is None:
            return TaskConfigError(
                f"{where} reads {error.name!r}, which is not a variable of the {block} block "
                f"(it has: {', '.join(variables) or 'none'})"
            )
        holder = next((name for name, value in variables.items() if value is error.owner), None)
        if holder is not None and isinstance(error.owner, Mapping):
            data = DATA_NAMES.get(holder, repr(holder))
            return TemplateFieldError(f"{where} reads field {error.name!r}, which {data} does not have "
                                      f"({_field_list(error.owner)})")
        return TemplateFieldError(f"{where} reads {error.name!r} of the value {_short(error.owner)}, "
                                  f"which has no such field or attribute")


def _field_list(data: Mapping[Any, Any]) -> str:
    names = sorted(str(name) for name in data)
    if not names:
        return "it has no fields"
    if len(names) > LISTED_FIELDS:
        return f"its fields: {', '.join(names[:LISTED_FIELDS])}, ... ({len(names)} in all)"
    return f"its fields: {', '.join(names)}"


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
