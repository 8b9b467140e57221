"""Settings declared once: type, default, bound and help in the field itself.

A settings class is a frozen dataclass that derives from `Settings` and
declares each field with `setting(...)` (a value) or `section(...)` (a nested
settings class, a TOML table). Everything else is read from those
declarations by the loops below, so a new setting is one line:

- validation at construction: the type (from the annotation), the bounds, and
  the class's own `cross_checks` for rules between fields; every problem at
  once, each naming the setting and how to fix it;
- loading from a TOML table (`from_table`): unknown keys refused with the
  known ones listed, TOML values converted to the declared type (str -> Path
  or enum, int -> float);
- command-line flags (`add_flags`) with their `--help` text and the default,
  and the flags a user gave turned back into a table (`given_flags`).

Names carry their unit (`_ms`, `_seconds`, `_gib`), and the name of a setting
is the same in the TOML file, the flag (`--collect-window-ms`) and the code.
Supported types: int, float, bool, str, Path, StrEnum subclasses, each
optionally `| None` (None: "not set", e.g. vLLM's own default).
"""

from __future__ import annotations

import argparse
import dataclasses
import enum
import functools
import types
import typing
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from brew.errors import BrewError

SCALARS = (bool, int, float, str, Path)


class SettingsError(BrewError, ValueError):
    """Settings are invalid; the message lists every problem with its fix."""

    reason = "config"

    def __init__(self, problems: list[str], title: str = "invalid settings") -> None:
        self.problems = list(problems)
        self.title = title
        super().__init__(title + ":\n  - " + "\n  - ".join(self.problems))

    def within(self, prefix: str, title: str | None = None) -> SettingsError:
        """The same problems, each named inside a section (`batching.` + name)."""
        return SettingsError([prefix + problem for problem in self.problems], title or self.title)


class UnknownKeyError(SettingsError):
    """A TOML table holds a key that no setting declares (a typo, most often):
    one line naming the table, the key and the known ones."""

    def __str__(self) -> str:
        return f"{self.title}: {'; '.join(self.problems)}"


@dataclass(frozen=True)
class Spec:
    """What `setting()` records beside the dataclass field's default."""

    help: str
    ge: float | None = None  # value >= ge
    gt: float | None = None  # value > gt
    le: float | None = None  # value <= le
    choices: tuple[str, ...] | None = None  # for str settings; enums list their own
    hint: str = ""  # appended to a bound's message, e.g. "(0 picks a free one)"
    flag: bool = True  # False: TOML only (e.g. a secret that must stay off the command line)
    top_level: bool = False  # a TOML key outside any table (engine, model, ...)


def setting(default: Any = dataclasses.MISSING, *, help: str, ge: float | None = None, gt: float | None = None,
            le: float | None = None, choices: tuple[str, ...] | None = None, hint: str = "", flag: bool = True,
            top_level: bool = False) -> Any:
    """A dataclass field that is a setting (see the module docstring)."""
    spec = Spec(help, ge, gt, le, choices, hint, flag, top_level)
    return dataclasses.field(default=default, metadata={"setting": spec})


def section(settings_class: type, *, help: str) -> Any:
    """A dataclass field holding a nested settings class: a TOML table and a group of flags."""
    return dataclasses.field(default_factory=settings_class, metadata={"section": help})


@dataclass(frozen=True)
class Field:
    """One declared setting of a class, with its resolved type."""

    name: str
    kind: type  # the value type, `None` stripped
    optional: bool  # `| None`: None means not set
    default: Any
    spec: Spec

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


@functools.cache
def fields_of(cls: type) -> tuple[Field, ...]:
    """The settings a class declares, in declaration order (sections excluded)."""
    hints = typing.get_type_hints(cls)
    found = []
    for f in dataclasses.fields(cls):
        spec = f.metadata.get("setting")
        if spec is None:
            continue
        kind, optional = _unwrap(hints[f.name])
        if not (kind in SCALARS or (isinstance(kind, type) and issubclass(kind, enum.Enum))):
            raise TypeError(f"{cls.__name__}.{f.name}: unsupported setting type {kind!r}")
        found.append(Field(f.name, kind, optional, f.default, spec))
    return tuple(found)


@functools.cache
def sections_of(cls: type) -> dict[str, tuple[type, str]]:
    """name -> (settings class, help) of the nested sections a class declares."""
    hints = typing.get_type_hints(cls)
    return {f.name: (hints[f.name], f.metadata["section"]) for f in dataclasses.fields(cls) if "section" in f.metadata}


def _unwrap(annotation: Any) -> tuple[type, bool]:
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        members = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(members) == 1:
            return members[0], True
        raise TypeError(f"unsupported union {annotation!r}")
    return annotation, False


class Settings:
    """Base of every settings dataclass: validates the fields at construction.

    Subclasses add `cross_checks` for rules between fields. It runs, with
    the bounds, only when every field has the right type, so it may compare
    values freely (but not assume they are within bounds).
    """

    def __post_init__(self) -> None:
        problems = list(type_problems(self))
        if not problems:
            problems = [*bound_problems(self), *self.cross_checks()]
        if problems:
            raise SettingsError(problems)

    def cross_checks(self) -> Iterator[str]:
        return iter(())


def _set_fields(settings: Any) -> Iterator[tuple[Field, Any]]:
    for f in fields_of(type(settings)):
        value = getattr(settings, f.name)
        if not (value is None and f.optional):
            yield f, value


def type_problems(settings: Any) -> Iterator[str]:
    """Each field whose value is not of its declared type."""
    for f, value in _set_fields(settings):
        problem = _type_problem(f, value)
        if problem:
            yield problem


def bound_problems(settings: Any) -> Iterator[str]:
    """Each field (of the right type) whose value breaks its bounds or choices."""
    for f, value in _set_fields(settings):
        yield from _bound_problems(f, value)


TYPE_WORDS = {bool: "true or false", int: "an integer", float: "a number", str: "text", Path: "a path"}


def _type_problem(f: Field, value: Any) -> str | None:
    kind = f.kind
    if isinstance(kind, type) and issubclass(kind, enum.Enum):
        if isinstance(value, kind):
            return None
        return f"{f.name} {value!r} is not one of {[member.value for member in kind]}"
    if kind is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    else:
        ok = isinstance(value, kind)
    if ok:
        return None
    return f"{f.name} must be {TYPE_WORDS[kind]}, got {value!r}"


def _bound_problems(f: Field, value: Any) -> Iterator[str]:
    spec = f.spec
    hint = f" {spec.hint}" if spec.hint else ""
    if spec.choices is not None and value not in spec.choices:
        yield f"{f.name} must be one of {', '.join(spec.choices)}, got {value!r}"
    if spec.ge is not None and spec.le is not None and not spec.ge <= value <= spec.le:
        yield f"{f.name} must be in {_number(spec.ge)}..{_number(spec.le)}{hint}, got {value}"
        return
    if spec.ge is not None and value < spec.ge:
        yield f"{f.name} must be >= {_number(spec.ge)}{hint}, got {value}"
    if spec.gt is not None and value <= spec.gt:
        yield f"{f.name} must be > {_number(spec.gt)}{hint}, got {value}"
    if spec.le is not None and value > spec.le:
        yield f"{f.name} must be <= {_number(spec.le)}{hint}, got {value}"


def _number(bound: float) -> str:
    return str(int(bound)) if float(bound).is_integer() else str(bound)


# --- TOML tables ---------------------------------------------------------------------------------------------


def from_table(cls: type, table: Mapping[str, Any], where: str = "") -> Any:
    """Build `cls` from a table (TOML or merged flags): unknown keys refused,
    values converted to the declared types, sections built recursively.

    `where` names the table in messages ("[batching]"); a problem of a nested
    section is named `section.setting`.
    """
    declared = {f.name: f for f in fields_of(cls)}
    nested = sections_of(cls)
    unknown = sorted(set(table) - set(declared) - set(nested))
    if unknown:
        known = sorted({*declared, *nested})
        raise UnknownKeyError([f"unknown key(s) {unknown}; known: {known}"],
                              f"config file{' ' + where if where else ''}")
    values: dict[str, Any] = {}
    problems: list[str] = []
    for name, raw in table.items():
        if name not in nested:
            values[name] = convert(declared[name], raw)
        elif not isinstance(raw, Mapping):
            problems.append(f"{name} must be a table ([{name}]), got {raw!r}")
        else:
            try:
                values[name] = from_table(nested[name][0], raw, f"[{name}]")
            except UnknownKeyError:
                raise
            except SettingsError as error:
                problems.extend(error.within(f"{name}.").problems)
    if problems:
        raise SettingsError(problems)
    return cls(**values)


def convert(f: Field, raw: Any) -> Any:
    """A TOML or flag value as the declared type where the conversion is
    lossless; anything else is left for validation to name."""
    if raw is None:
        return None
    kind = f.kind
    if isinstance(kind, type) and issubclass(kind, enum.Enum):
        try:
            return kind(raw)
        except ValueError:
            return raw
    if kind is Path and isinstance(raw, str):
        return Path(raw)
    if kind is float and isinstance(raw, int) and not isinstance(raw, bool):
        return float(raw)
    return raw


def merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """`over` on top of `base`, tables merged key by key (a flag does not reset its section)."""
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = value
    return merged


# --- command-line flags --------------------------------------------------------------------------------------


def add_flags(parser: argparse.ArgumentParser, cls: type, *, fields: tuple[str, ...] | None = None,
              sections: tuple[str, ...] | None = None, title: str | None = None, prefix: str = "") -> None:
    """Add a flag for every setting of `cls` and of its sections (one argument
    group per section); `fields` and `sections` restrict which (default: all).

    A flag's default is None ("not given"): the TOML file or the declared
    default applies; --help shows the declared default. Flags are named after
    the setting alone (`--max-batch-candidates`), so a name must be unique
    across the sections a command takes (argparse refuses a clash at once).
    """
    group = parser.add_argument_group(title) if title else parser
    for f in fields_of(cls):
        if f.spec.flag and (fields is None or f.name in fields):
            group.add_argument(f.flag, dest=prefix + f.name, default=None, help=_flag_help(f), **_flag_kind(f))
    for name, (section_class, help_text) in sections_of(cls).items():
        if sections is None or name in sections:
            add_flags(parser, section_class, title=f"[{name}]: {help_text}", prefix=f"{prefix}{name}.")


def _flag_kind(f: Field) -> dict[str, Any]:
    kind = f.kind
    if kind is bool:
        return {"action": argparse.BooleanOptionalAction}
    if isinstance(kind, type) and issubclass(kind, enum.Enum):
        return {"choices": [member.value for member in kind], "type": str}
    if f.spec.choices is not None:
        return {"choices": list(f.spec.choices), "type": str}
    metavar = {int: "N", float: "X", Path: "PATH", str: "TEXT"}[kind]
    return {"type": kind, "metavar": metavar}


def _flag_help(f: Field) -> str:
    default = f.default
    if isinstance(default, enum.Enum):
        default = default.value
    shown = "not set" if default is None else default
    if isinstance(default, bool):
        shown = "on" if default else "off"
    hint = f" {f.spec.hint}" if f.spec.hint else ""
    return f"{f.spec.help}{hint} (default: {shown})".replace("%", "%%")


def given_flags(args: argparse.Namespace, cls: type, prefix: str = "") -> dict[str, Any]:
    """The flags of `cls` (see add_flags) that were given, as a table for
    `from_table`; a flag the command does not have counts as not given."""
    table: dict[str, Any] = {}
    for f in fields_of(cls):
        value = getattr(args, prefix + f.name, None)
        if value is not None:
            table[f.name] = value
    for name, (section_class, _) in sections_of(cls).items():
        nested = given_flags(args, section_class, f"{prefix}{name}.")
        if nested:
            table[name] = nested
    return table
