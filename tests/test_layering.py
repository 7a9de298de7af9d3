"""Imports go downwards only (DESIGN.md, "The layers"), checked on the source with ``ast``.

    experiments  ->  models, topologies, sim
    models       ->  sim, topologies
    topologies   ->  sim
    sim          ->  nothing of ours

typer belongs to the CLI module(s) of experiments/, plotly to its plot/report module(s).
Imports under ``if TYPE_CHECKING:`` count too: a type-only import upwards is still a cycle
waiting to happen.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
OURS = ("sim", "topologies", "models", "experiments")
ALLOWED = {
    "sim": {"sim"},
    "topologies": {"sim", "topologies"},
    "models": {"sim", "topologies", "models"},
    "experiments": {"sim", "topologies", "models", "experiments"},
}


def source_files(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def imported_modules(path: Path) -> Iterator[tuple[int, str]]:
    """Every absolute module name ``path`` imports, with its line (relative ones resolved).

    ``importlib.import_module("...")`` with a literal name counts as an import too.
    """
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    # The package the file belongs to (for a package's __init__.py, the package itself).
    parts = list(path.relative_to(ROOT).parts[:-1])
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = parts[: len(parts) - (node.level - 1)]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            yield node.lineno, module
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, (ast.Name, ast.Attribute))
            and getattr(node.func, "id", getattr(node.func, "attr", None)) == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            yield node.lineno, node.args[0].value


def all_files() -> list[Path]:
    return [path for package in OURS for path in source_files(package)]


def where(path: Path, line: int, module: str) -> str:
    return f"{path.relative_to(ROOT)}:{line} imports {module}"


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
