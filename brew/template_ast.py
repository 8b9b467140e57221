"""Read a task template's blocks without rendering them.

Some prompt rules are about what a block *could* do, not what it did on one
example: the context must never mention `candidate`, a field that changes with
every request must not sit in the shared prefix. These helpers walk the Jinja
syntax tree of one block, following `{% include %}` into shared partials, and
report each variable use with the file and line it is written on.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import jinja2
from jinja2 import nodes


@dataclass(frozen=True)
class Reference:
    """One use of a template variable: `candidate` or `profile.title`."""

    name: str  # the variable, e.g. "profile"
    path: str  # the variable with its constant attribute or key, e.g. "profile.title"
    file: Path
    line: int


@dataclass(frozen=True)
class BlockSource:
    """The body of one block, or of a partial it includes, with its file."""

    file: Path
    body: tuple[nodes.Node, ...]


def block_sources(environment: jinja2.Environment, template_name: str, block: str) -> list[BlockSource]:
    """The block's body and the bodies of every partial it includes (once each)."""
    tree = _parse(environment, template_name)
    found = [node for node in tree.find_all(nodes.Block) if node.name == block]
    if not found:
        return []
    sources = [BlockSource(_file_of(environment, template_name), tuple(found[0].body))]
    seen = {template_name}
    for source in sources:
        for node in source.body:
            for include in _includes(node):
                if include in seen:
                    continue
                seen.add(include)
                try:
                    partial = _parse(environment, include)
                except (jinja2.TemplateSyntaxError, jinja2.TemplateNotFound):
                    continue  # lint reports it where the partial is compiled or rendered
                sources.append(BlockSource(_file_of(environment, include), tuple(partial.body)))
    return sources


def references(sources: list[BlockSource]) -> list[Reference]:
    """Every variable the block reads, in source order."""
    return _references(sources, _walk)


def written_references(sources: list[BlockSource]) -> list[Reference]:
    """The variables whose value the block may write into the prompt. A use
    that only decides what is written (an `if` condition, a comparison, a
    test, a filter's argument, an assignment) adds no tokens of its own and is
    left out; a value assigned and written later is missed (a lint heuristic)."""
    return _references(sources, _written)


def _references(sources: list[BlockSource], walk: Callable[[nodes.Node], Iterator[nodes.Node]]) -> list[Reference]:
    """The variable uses among the nodes `walk` visits, in source order."""
    return [ref for source in sources for top in source.body for node in walk(top)
            for ref in _reference(node, source.file)]


@dataclass(frozen=True)
class Branch:
    """A constant a block compares a variable with: `entity_type == "job"`."""

    value: str
    file: Path
    line: int


def branches(sources: list[BlockSource], variable: str) -> list[Branch]:
    """The constants the block tests `variable` against with `==` or `in`
    (e.g. the entity types a history partial has a branch for), in source
    order. A value that matches none of them takes the block's other path."""
    found = []
    for source in sources:
        for top in source.body:
            for node in _walk(top):
                if isinstance(node, nodes.Compare):
                    found += [Branch(value, source.file, node.lineno) for value in _compared(node, variable)]
    return found


def _compared(node: nodes.Compare, variable: str) -> list[str]:
    if len(node.ops) != 1:
        return []
    left, op, right = node.expr, node.ops[0].op, node.ops[0].expr
    if op == "eq" and isinstance(right, nodes.Name) and not isinstance(left, nodes.Name):
        left, right = right, left
    if not (isinstance(left, nodes.Name) and left.name == variable):
        return []
    if op == "eq" and isinstance(right, nodes.Const) and isinstance(right.value, str):
        return [right.value]
    if op == "in" and isinstance(right, (nodes.List, nodes.Tuple)):
        return [item.value for item in right.items
                if isinstance(item, nodes.Const) and isinstance(item.value, str)]
    return []


def first_output(sources: list[BlockSource]) -> nodes.Node | None:
    """The first thing the block writes (text or an expression), following an
    include that comes first; None when it starts with control flow."""
    if not sources:
        return None
    return _first_output(sources[0].body, sources)


def last_text(sources: list[BlockSource]) -> str | None:
    """The block's final literal text, if the block ends with literal text."""
    if not sources or not sources[0].body:
        return None
    last = sources[0].body[-1]
    if isinstance(last, nodes.Output) and last.nodes and isinstance(last.nodes[-1], nodes.TemplateData):
        return str(last.nodes[-1].data)
    return None


def _first_output(body: tuple[nodes.Node, ...] | list[nodes.Node], sources: list[BlockSource]) -> nodes.Node | None:
    for node in body:
        if isinstance(node, nodes.Output):
            for child in node.nodes:
                if isinstance(child, nodes.TemplateData) and not child.data.strip():
                    continue
                return child
        elif isinstance(node, nodes.Include):
            names = list(_includes(node))
            match = [s for s in sources[1:] if names and s.file.name == Path(names[0]).name]
            return _first_output(match[0].body, sources) if match else None
        else:
            return None
    return None


def _reference(node: nodes.Node, file: Path) -> list[Reference]:
    if isinstance(node, nodes.Getattr) and isinstance(node.node, nodes.Name):
        return [Reference(node.node.name, f"{node.node.name}.{node.attr}", file, node.lineno)]
    if isinstance(node, nodes.Getitem) and isinstance(node.node, nodes.Name) and isinstance(node.arg, nodes.Const):
        return [Reference(node.node.name, f"{node.node.name}.{node.arg.value}", file, node.lineno)]
    if isinstance(node, nodes.Name) and node.ctx == "load":
        return [Reference(node.name, node.name, file, node.lineno)]
    return []


def _walk(node: nodes.Node) -> Iterator[nodes.Node]:
    yield node
    for child in node.iter_child_nodes():
        yield from _walk(child)


def _written(node: nodes.Node) -> Iterator[nodes.Node]:
    """Like `_walk`, but only into the parts whose value can be output."""
    if isinstance(node, (nodes.Compare, nodes.Test, nodes.Assign)):
        return
    yield node
    if isinstance(node, nodes.Filter):
        children: list[nodes.Node] = [node.node] if node.node is not None else []
    elif isinstance(node, nodes.If):
        children = [*node.body, *node.elif_, *node.else_]
    elif isinstance(node, nodes.CondExpr):
        children = [node.expr1] + ([node.expr2] if node.expr2 is not None else [])
    else:
        children = list(node.iter_child_nodes())
    for child in children:
        yield from _written(child)


def _includes(node: nodes.Node) -> Iterator[str]:
    for include in _walk(node):
        if isinstance(include, nodes.Include) and isinstance(include.template, nodes.Const):
            yield str(include.template.value)


def _parse(environment: jinja2.Environment, name: str) -> nodes.Template:
    assert environment.loader is not None
    source, filename, _ = environment.loader.get_source(environment, name)
    return environment.parse(source, name, filename)


def _file_of(environment: jinja2.Environment, name: str) -> Path:
    assert environment.loader is not None
    _, filename, _ = environment.loader.get_source(environment, name)
    return Path(filename or name)
