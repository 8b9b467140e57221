"""The import structure of brew/, serving/ and loadtest/, read from source
(ast only: nothing is imported, so this runs in well under a second).

- No import cycle among the project's modules: none among the imports that
  run when a module is imported (module level, `try` and `if` blocks and
  class bodies included), and none either when the imports inside functions
  (lazy) and under `if TYPE_CHECKING:` are counted too. A cycle that only
  lazy imports close is still two modules that need each other; the shared
  piece belongs in one of them or in a third.
- One direction: brew/ (the scoring library) imports neither serving/ nor
  loadtest/, and serving/ (the server) never imports loadtest/. The one
  exception is brew/cli.py, the `brew` command's dispatcher, which may
  reach up into serving and loadtest inside its functions, when a command
  runs.

Importing `a.b.c` also runs the packages `a` and `a.b`, so those count as
imported too (unless the importer lives inside them). Only import
statements are read: `importlib.import_module("...")` is not seen.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("brew", "serving", "loadtest")
LAYER = {"brew": 0, "serving": 1, "loadtest": 2}  # a package imports only its own layer and those below
DISPATCHER = "brew.cli"  # may import upwards, but only inside functions

AT_IMPORT, LAZY, TYPING = "at import", "lazy", "type checking"


@dataclass(frozen=True)
class Import:
    importer: str
    imported: str  # the module, or the package when the name imported from it is not a module
    line: int
    when: str  # AT_IMPORT, LAZY (inside a function) or TYPING (under `if TYPE_CHECKING:`)


def find_modules(root: Path, packages: Iterable[str]) -> dict[str, Path]:
    """Dotted module name -> file, for every .py file under each package."""
    found = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imports_of(name: str, path: Path, known: Mapping[str, Path]) -> list[Import]:
    """Every import statement of module `name`, relative ones resolved."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found: list[Import] = []

    def record(node: ast.Import | ast.ImportFrom, when: str) -> None:
        if isinstance(node, ast.Import):
            found.extend(Import(name, alias.name, node.lineno, when) for alias in node.names)
            return
        base = node.module or ""
        if node.level:
            parent = package[:len(package) - (node.level - 1)]
            base = ".".join([*parent, base] if base else parent)
        for alias in node.names:
            submodule = f"{base}.{alias.name}"
            found.append(Import(name, submodule if submodule in known else base, node.lineno, when))

    def walk(node: ast.AST, when: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                record(child, when)
            elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                walk(child, TYPING if when == TYPING else LAZY)
            elif isinstance(child, ast.If) and _is_type_checking(child.test):
                for statement in child.body:
                    walk(ast.Module(body=[statement], type_ignores=[]), TYPING)
                for statement in child.orelse:
                    walk(ast.Module(body=[statement], type_ignores=[]), when)
            else:
                walk(child, when)

    walk(ast.parse(path.read_text(encoding="utf-8"), str(path)), AT_IMPORT)
    return found


def project_imports(root: Path = REPO, packages: Iterable[str] = PACKAGES) -> list[Import]:
    """The imports of one project module by another."""
    packages = tuple(packages)
    known = find_modules(root, packages)
    return [found for name, path in known.items() for found in imports_of(name, path, known)
            if found.imported.split(".")[0] in packages]


def import_graph(imports: Iterable[Import], when: Iterable[str], known: Iterable[str]) -> dict[str, set[str]]:
    """Module -> the project modules it runs by importing (the packages on
    the way included), counting only the imports of the kinds in `when`."""
    known, when = set(known), set(when)
    graph: dict[str, set[str]] = {}
    for found in imports:
        if found.when not in when or found.imported not in known:
            continue
        parts = found.imported.split(".")
        for end in range(1, len(parts) + 1):
            target = ".".join(parts[:end])
            if target in known and target != found.importer and not found.importer.startswith(target + "."):
                graph.setdefault(found.importer, set()).add(target)
    return graph


def cycles(graph: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan's
    algorithm, iterative): each holds at least one cycle. Sorted, for stable messages."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work: list[tuple[str, Iterator[str]]] = [(start, iter(sorted(graph.get(start, ()))))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, successors = work[-1]
            step = next(successors, None)
            if step is not None:
                if step not in index:
                    index[step] = low[step] = len(index)
                    stack.append(step)
                    on_stack.add(step)
                    work.append((step, iter(sorted(graph.get(step, ())))))
                elif step in on_stack:
                    low[node] = min(low[node], index[step])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return sorted(found)


def _describe(component: list[str], imports: Iterable[Import], when: Iterable[str]) -> str:
    members, when = set(component), set(when)
    edges = sorted({f"  {i.importer}:{i.line} imports {i.imported} ({i.when})" for i in imports
                    if i.when in when and i.importer in members
                    and any(i.imported == m or i.imported.startswith(m + ".") for m in members - {i.importer})})
    return " <-> ".join(component) + "\n" + "\n".join(edges)


def _assert_no_cycles(when: tuple[str, ...]) -> None:
    known = find_modules(REPO, PACKAGES)
    imports = project_imports()
    found = cycles(import_graph(imports, when, known))
    assert not found, f"import cycles ({', '.join(when)}):\n" + "\n".join(_describe(c, imports, when) for c in found)


# --- the project ---------------------------------------------------------------------

def test_the_packages_are_found():
    known = find_modules(REPO, PACKAGES)
    assert {"brew.cli", "serving.server", "loadtest.cli", "loadtest.bench.sidebyside.command"} <= set(known)
    assert any(i.importer == "loadtest.capacity" and i.imported == "loadtest.saturation" for i in project_imports())


def test_no_import_cycle_when_modules_are_imported():
    _assert_no_cycles((AT_IMPORT,))


def test_no_import_cycle_even_through_lazy_and_type_checking_imports():
    _assert_no_cycles((AT_IMPORT, LAZY, TYPING))


def test_brew_imports_neither_serving_nor_loadtest_and_serving_never_loadtest():
    upward = [i for i in project_imports()
              if LAYER[i.imported.split(".")[0]] > LAYER[i.importer.split(".")[0]]
              and not (i.importer == DISPATCHER and i.when == LAZY)]
    assert not upward, "imports against the direction brew <- serving <- loadtest:\n" + "\n".join(
        f"  {i.importer}:{i.line} imports {i.imported} ({i.when})" for i in upward)


# --- the helpers, on a tree written here -------------------------------------------------

def _tree(root: Path, files: Mapping[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")


def test_a_cycle_closed_only_by_a_lazy_import_is_told_apart(tmp_path):
    _tree(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/a.py": "from pkg import b\n",
        "pkg/b.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .c import C\n"
                    "def f():\n    from . import a\n",
        "pkg/c.py": "import pkg.b\n",
    })
    known = find_modules(tmp_path, ["pkg"])
    imports = [i for name, path in known.items() for i in imports_of(name, path, known)]
    assert {(i.importer, i.imported, i.when) for i in imports if i.imported.startswith("pkg")} == {
        ("pkg.a", "pkg.b", AT_IMPORT), ("pkg.b", "pkg.c", TYPING), ("pkg.b", "pkg.a", LAZY),
        ("pkg.c", "pkg.b", AT_IMPORT)}
    assert cycles(import_graph(imports, [AT_IMPORT], known)) == []
    assert cycles(import_graph(imports, [AT_IMPORT, LAZY], known)) == [["pkg.a", "pkg.b"]]
    assert cycles(import_graph(imports, [AT_IMPORT, TYPING], known)) == [["pkg.b", "pkg.c"]]


def test_importing_a_submodule_runs_its_package(tmp_path):
    _tree(tmp_path, {
        "top/__init__.py": "",
        "top/sub/__init__.py": "from top import user\n",
        "top/sub/leaf.py": "",
        "top/user.py": "import top.sub.leaf\n",
    })
    known = find_modules(tmp_path, ["top"])
    imports = [i for name, path in known.items() for i in imports_of(name, path, known)]
    graph = import_graph(imports, [AT_IMPORT], known)
    assert graph["top.user"] == {"top.sub", "top.sub.leaf"}  # `top` is the importer's own package
    assert cycles(graph) == [["top.sub", "top.user"]]
