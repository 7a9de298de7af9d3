"""Imports go downwards only (DESIGN.md, "The layers"), checked on the source with ``ast``.

    experiments  ->  models, topologies, sim
    models       ->  sim, topologies
    topologies   ->  sim
    sim          ->  nothing of ours

typer belongs to the CLI module(s) of experiments/, plotly to its plot/report module(s).
Imports under ``if TYPE_CHECKING:`` count too: a type-only import upwards is still a cycle
waiting to happen.

Inside a package, modules import each other without cycles: every import counts here as well
(module level, under ``if TYPE_CHECKING:``, inside a function). A cycle that only type checking
or a function-level import keeps from failing today fails the day someone moves an import, and
it ties the modules into one unit that cannot be read, tested or rewritten apart.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import networkx as nx
import pytest

ROOT = Path(__file__).resolve().parent.parent
OURS = ("sim", "topologies", "models", "experiments")
ALLOWED = {
    "sim": {"sim"},
    "topologies": {"sim", "topologies"},
    "models": {"sim", "topologies", "models"},
    "experiments": {"sim", "topologies", "models", "experiments"},
}

#: Import cycles we know of and have not removed yet, each as its modules in import order,
#: starting at the smallest name (see ``canonical``). Only these may exist; any other cycle
#: fails ``test_no_import_cycles_inside_a_package``. Each one is also an expected failure of
#: ``test_known_import_cycle_is_gone`` (strict): once it is gone, that test fails until the
#: entry is deleted here, so the set cannot outlive the cycles it excuses.
KNOWN_CYCLES: frozenset[tuple[str, ...]] = frozenset()


def source_files(package: str, root: Path = ROOT) -> list[Path]:
    return sorted((root / package).rglob("*.py"))


@dataclass(frozen=True)
class ImportStatement:
    """One import in a source file.

    Attributes:
        line: its line number.
        module: the absolute module name (relative imports resolved).
        names: for ``from module import a, b``, ``("a", "b")``; empty for ``import module``.
        how: where it runs: ``""`` (module level), ``"under TYPE_CHECKING"`` or
            ``"inside a function"``.
    """

    line: int
    module: str
    names: tuple[str, ...]
    how: str


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _nodes(node: ast.AST, how: str) -> Iterator[tuple[ast.AST, str]]:
    """Every node under ``node``, with where it runs (see ``ImportStatement.how``)."""
    yield node, how
    if isinstance(node, ast.If) and _is_type_checking(node.test):
        for child in node.body:
            yield from _nodes(child, "under TYPE_CHECKING")
        for child in node.orelse:
            yield from _nodes(child, how)
        return
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)) and not how:
        how = "inside a function"
    for child in ast.iter_child_nodes(node):
        yield from _nodes(child, how)


def import_statements(path: Path, root: Path = ROOT) -> Iterator[ImportStatement]:
    """Every import in ``path``, wherever it is.

    ``importlib.import_module("...")`` with a literal name counts as an import too.
    """
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    # The package the file belongs to (for a package's __init__.py, the package itself).
    parts = list(path.relative_to(root).parts[:-1])
    for node, how in _nodes(tree, ""):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield ImportStatement(node.lineno, alias.name, (), how)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = parts[: len(parts) - (node.level - 1)]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            names = tuple(alias.name for alias in node.names)
            yield ImportStatement(node.lineno, module, names, how)
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, (ast.Name, ast.Attribute))
            and getattr(node.func, "id", getattr(node.func, "attr", None)) == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            yield ImportStatement(node.lineno, node.args[0].value, (), how)


def imported_modules(path: Path, root: Path = ROOT) -> Iterator[tuple[int, str]]:
    """Every absolute module name ``path`` imports, with its line (relative ones resolved)."""
    for statement in import_statements(path, root):
        yield statement.line, statement.module


def all_files() -> list[Path]:
    return [path for package in OURS for path in source_files(package)]


def where(path: Path, line: int, module: str, root: Path = ROOT) -> str:
    return f"{path.relative_to(root)}:{line} imports {module}"


def test_there_are_sources_to_check():
    for package in OURS:
        assert source_files(package), f"no .py files under {package}/"


@pytest.mark.parametrize("package", OURS)
def test_imports_go_downwards_only(package):
    offending = []
    for path in source_files(package):
        for line, module in imported_modules(path):
            top = module.split(".", 1)[0]
            if top in OURS and top not in ALLOWED[package]:
                offending.append(where(path, line, module))
    assert not offending, f"{package}/ may import only {sorted(ALLOWED[package])}:\n" + "\n".join(
        offending
    )


def is_cli_module(path: Path) -> bool:
    rel = path.relative_to(ROOT)
    return rel.parts[0] == "experiments" and rel.name.startswith("cli")


def is_plot_module(path: Path) -> bool:
    rel = path.relative_to(ROOT)
    return rel.parts[0] == "experiments" and ("report" in rel.stem or "plot" in rel.stem)


@pytest.mark.parametrize(
    ("library", "allowed", "where_allowed"),
    [
        ("typer", is_cli_module, "experiments/cli*.py"),
        ("plotly", is_plot_module, "experiments/ modules named *report* or *plot*"),
    ],
)
def test_heavy_libraries_stay_in_their_modules(library, allowed, where_allowed):
    offending = [
        where(path, line, module)
        for path in all_files()
        for line, module in imported_modules(path)
        if module.split(".", 1)[0] == library and not allowed(path)
    ]
    assert not offending, f"{library} belongs in {where_allowed} only:\n" + "\n".join(offending)


def test_the_checker_sees_what_it_must():
    # topologies/ uses relative imports, which must resolve to topologies.*; and the CLI
    # must be seen importing typer, or the typer rule checks nothing.
    modules = {m for _, m in imported_modules(ROOT / "topologies" / "catalog.py")}
    assert "topologies.callgraph" in modules
    init = {m for _, m in imported_modules(ROOT / "topologies" / "__init__.py")}
    assert "topologies.callgraph" in init
    assert "typer" in {m for _, m in imported_modules(ROOT / "experiments" / "cli.py")}


# --- Import cycles between the modules of one package --------------------------------------

#: importer -> imported -> the statements behind that edge ("models/mesh.py:20 imports ...").
ImportGraph = dict[str, dict[str, list[str]]]


def module_name(path: Path, root: Path = ROOT) -> str:
    """``models/mesh.py`` -> ``models.mesh``; a package's ``__init__.py`` -> the package."""
    parts = path.relative_to(root).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _is_within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def _targets(
    statement: ImportStatement, importer: str, modules: set[str]
) -> dict[str, tuple[str, str]]:
    """The modules of ``modules`` that ``statement`` in ``importer`` runs.

    Returns:
        For each, the module the statement names (``pkg.c`` for ``from pkg import c``) and a
        note when the edge is implied (``which first runs pkg.sub``), else ``""``.

    How packages count:

    - ``from pkg import name`` goes to the submodule ``pkg.name`` when there is one, else to
      ``pkg`` itself (its ``__init__.py``, where ``name`` must already be defined).
    - ``import pkg`` and ``from pkg import Thing`` from inside ``pkg`` go to ``pkg/__init__.py``
      like any other import. Python hands back a half-initialised package if ``__init__.py``
      is what is importing us (``from pkg import Thing`` then fails; ``pkg.Thing`` works or not
      depending on when it is read); whether it breaks today is not the point, the cycle is.
      With our ``__init__.py`` files docstring-only (or re-exporting nothing that imports
      back), such an import closes no cycle; once an ``__init__.py`` re-exports a module that
      imports the package, it does, and is reported.
    - Importing ``pkg.sub.mod`` first runs every package on the way (``pkg.sub``) that is not
      already initialising as an ancestor of the importer: those are edges too. The importer's
      own ancestors are not: Python imported them before the importer, so no edge is implied.
    - A module importing itself is a cycle of one and is reported: it is always a mistake, and
      ``from mod import X`` of a later ``X`` fails at import time.
    """
    explicit = (
        [
            f"{statement.module}.{n}" if f"{statement.module}.{n}" in modules else statement.module
            for n in statement.names
        ]
        if statement.names
        else [statement.module]
    )
    targets: dict[str, tuple[str, str]] = {}
    for target in explicit:
        parts = target.split(".")
        for i in range(1, len(parts)):
            ancestor = ".".join(parts[:i])
            if ancestor in modules and not _is_within(importer, ancestor):
                targets.setdefault(ancestor, (target, f"which first runs {ancestor}"))
        if target in modules:
            targets[target] = (target, "")
    return targets


def import_graph(package: str, root: Path = ROOT) -> ImportGraph:
    """The imports between the modules of ``package`` (every module a node, even if alone)."""
    files = {module_name(path, root): path for path in source_files(package, root)}
    modules = set(files)
    graph: ImportGraph = {module: {} for module in sorted(files)}
    for importer, path in files.items():
        for statement in import_statements(path, root):
            for target, (named, note) in _targets(statement, importer, modules).items():
                notes = ", ".join(n for n in (statement.how, note) if n)
                text = where(path, statement.line, named, root)
                graph[importer].setdefault(target, []).append(
                    f"{text} ({notes})" if notes else text
                )
    return graph


def canonical(cycle: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """The cycle rotated to start at its smallest module, so one cycle has one spelling."""
    start = cycle.index(min(cycle))
    return (*cycle[start:], *cycle[:start])


def find_cycles(graph: ImportGraph) -> list[tuple[str, ...]]:
    """Every elementary cycle of ``graph`` (self-imports included), shortest first, sorted.

    Each cycle is listed, not each strongly connected tangle, so that a new import between
    modules already in a known cycle is a new cycle too.
    """
    digraph = nx.DiGraph()
    digraph.add_nodes_from(graph)
    digraph.add_edges_from((a, b) for a, targets in graph.items() for b in targets)
    return sorted({canonical(c) for c in nx.simple_cycles(digraph)}, key=lambda c: (len(c), c))


def describe(cycle: tuple[str, ...], graph: ImportGraph) -> str:
    """The cycle's modules in order, then the import statements of each of its edges."""
    lines = [" -> ".join([*cycle, cycle[0]])]
    for importer, imported in zip(cycle, [*cycle[1:], cycle[0]], strict=True):
        lines += [f"    {statement}" for statement in graph[importer][imported]]
    return "\n".join(lines)


@pytest.mark.parametrize("package", OURS)
def test_no_import_cycles_inside_a_package(package):
    graph = import_graph(package)
    new = [c for c in find_cycles(graph) if c not in KNOWN_CYCLES]
    assert not new, f"import cycles in {package}/:\n" + "\n".join(describe(c, graph) for c in new)


@pytest.mark.parametrize(
    "cycle",
    [
        pytest.param(
            cycle,
            marks=pytest.mark.xfail(
                strict=True,
                reason="known cycle, removed by the hot-path rewrite; once it passes, "
                "delete it from KNOWN_CYCLES",
            ),
            id=" -> ".join(cycle),
        )
        for cycle in sorted(KNOWN_CYCLES)
    ],
)
def test_known_import_cycle_is_gone(cycle):
    graph = import_graph(cycle[0].split(".", 1)[0])
    assert cycle not in find_cycles(graph), "still there:\n" + describe(cycle, graph)


def test_the_cycle_checker_sees_what_it_must():
    # Each kind of import must be seen, or the cycle test passes by seeing nothing. The edges
    # checked are ones meant to stay (not the models cycle, which the rewrite removes).
    experiments = import_graph("experiments")
    to_report = experiments["experiments.compare"]["experiments.report"]
    assert all(s.endswith("imports experiments.report (inside a function)") for s in to_report)
    type_only = experiments["experiments.report"]["experiments.comparison"]
    assert any(s.endswith("(under TYPE_CHECKING)") for s in type_only), type_only
    assert "experiments.profiles" in experiments["experiments.compare"]  # a package
    topologies = import_graph("topologies")
    assert "topologies.callgraph" in topologies["topologies.catalog"]  # a relative import
    assert any(import_graph("models").values()), "no import seen between modules of models/"


# --- The cycle finder on synthetic graphs and packages ---------------------------------------


def _graph(edges: dict[str, list[str]]) -> ImportGraph:
    graph: ImportGraph = {m: {} for m in edges}
    for a, targets in edges.items():
        for b in targets:
            graph.setdefault(b, {})
            graph[a][b] = [f"{a} imports {b}"]
    return graph


def test_a_cycle_is_found_once_from_its_smallest_module():
    graph = _graph({"p.c": ["p.a"], "p.a": ["p.b"], "p.b": ["p.c", "p.d"], "p.d": []})
    assert find_cycles(graph) == [("p.a", "p.b", "p.c")]
    assert describe(("p.a", "p.b", "p.c"), graph).splitlines() == [
        "p.a -> p.b -> p.c -> p.a",
        "    p.a imports p.b",
        "    p.b imports p.c",
        "    p.c imports p.a",
    ]


def test_every_cycle_through_shared_modules_is_listed():
    graph = _graph({"p.a": ["p.b"], "p.b": ["p.a", "p.c"], "p.c": ["p.a"]})
    assert find_cycles(graph) == [("p.a", "p.b"), ("p.a", "p.b", "p.c")]


def test_an_acyclic_graph_passes():
    # A diamond: two paths to one module is no cycle.
    graph = _graph({"p.a": ["p.b", "p.c"], "p.b": ["p.d"], "p.c": ["p.d"], "p.d": []})
    assert find_cycles(graph) == []


def test_a_self_import_is_a_cycle_of_one():
    graph = _graph({"p.a": ["p.a", "p.b"], "p.b": []})
    assert find_cycles(graph) == [("p.a",)]
    assert describe(("p.a",), graph).splitlines()[0] == "p.a -> p.a"


def _package(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")


def test_type_only_and_function_level_imports_close_cycles(tmp_path: Path):
    _package(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/f.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
            "    from pkg.g import G\n",
            "pkg/g.py": "def h():\n    from .f import F\n",
        },
    )
    graph = import_graph("pkg", tmp_path)
    assert find_cycles(graph) == [("pkg.f", "pkg.g")]
    assert describe(("pkg.f", "pkg.g"), graph).splitlines()[1:] == [
        "    pkg/f.py:3 imports pkg.g (under TYPE_CHECKING)",
        "    pkg/g.py:2 imports pkg.f (inside a function)",
    ]


def test_importing_the_own_package_goes_through_its_init(tmp_path: Path):
    _package(
        tmp_path,
        {
            # __init__ re-exports a (which imports the package back: a cycle) and b.
            "pkg/__init__.py": "from .a import A\nfrom .b import B\n",
            "pkg/a.py": "from pkg import B\nA = 1\n",
            # b imports a submodule (not through __init__) and `from . import c` (a submodule).
            "pkg/b.py": "import pkg.c\nfrom . import c\nB = 2\n",
            "pkg/c.py": "",
            # d imports the package, but __init__ does not import d: no cycle.
            "pkg/d.py": "import pkg\n",
        },
    )
    graph = import_graph("pkg", tmp_path)
    assert graph["pkg.b"] == {"pkg.c": ["pkg/b.py:1 imports pkg.c", "pkg/b.py:2 imports pkg.c"]}
    assert "pkg" in graph["pkg.d"]
    assert find_cycles(graph) == [("pkg", "pkg.a")]


def test_a_subpackage_init_runs_on_the_way_to_its_modules(tmp_path: Path):
    _package(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/x.py": "from pkg.sub.m import M\n",
            "pkg/sub/__init__.py": "from pkg.x import X\n",
            # m's own packages (pkg, pkg.sub) were imported before m: no edge to them.
            "pkg/sub/m.py": "from pkg.sub.n import N\n",
            "pkg/sub/n.py": "",
        },
    )
    graph = import_graph("pkg", tmp_path)
    assert graph["pkg.x"] == {
        "pkg.sub": ["pkg/x.py:1 imports pkg.sub.m (which first runs pkg.sub)"],
        "pkg.sub.m": ["pkg/x.py:1 imports pkg.sub.m"],
    }
    assert graph["pkg.sub.m"] == {"pkg.sub.n": ["pkg/sub/m.py:1 imports pkg.sub.n"]}
    assert find_cycles(graph) == [("pkg.sub", "pkg.x")]
