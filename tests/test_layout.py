"""The package's shape, as the README's Layout section states it: no import cycles (imports
inside functions included), scan engines that never import the dispatcher, command modules
that no library module imports, and no Python module over 500 lines."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "src" / "qlam"


def modules() -> dict[str, Path]:
    out = {}
    for f in ROOT.rglob("*.py"):
        parts = list(f.relative_to(ROOT.parent).with_suffix("").parts)
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = f
    return out


def imports(mods: dict[str, Path]) -> dict[str, set[str]]:
    """module -> the qlam modules it imports anywhere in its body (not counting re-export
    packages' __init__)."""
    def resolve(name):
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    edges = {}
    for m, f in mods.items():
        found = set()
        if f.name != "__init__.py":
            for node in ast.walk(ast.parse(f.read_text())):
                names = []
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                    names = [f"{node.module}.{a.name}" for a in node.names] + [node.module]
                found |= {r for n in names if n.startswith("qlam") and (r := resolve(n))}
        edges[m] = found - {m}
    return edges


def test_no_import_cycles():
    edges = imports(modules())
    state: dict[str, int] = {}

    def visit(m, path):
        state[m] = 1
        for n in edges[m]:
            assert state.get(n) != 1, f"import cycle: {' -> '.join(path + [m, n])}"
            if n not in state:
                visit(n, path + [m])
        state[m] = 2

    for m in edges:
        if m not in state:
            visit(m, [])


def test_engines_do_not_import_the_dispatcher_and_nothing_imports_the_cli():
    edges = imports(modules())
    engines = [m for m in edges if m.startswith("qlam.sim.scan.") and m not in
               ("qlam.sim.scan.dispatch", "qlam.sim.scan.contract")]
    assert len(engines) >= 5
    for m in engines:
        assert "qlam.sim.scan.dispatch" not in edges[m], m
    commands = {"qlam.cli", "qlam.train_cli", "qlam.export_cli", "qlam.bench.cli",
                "qlam.data.cli"}
    for m, deps in edges.items():
        if m not in commands | {"qlam.__main__"}:
            assert not deps & commands, f"{m} imports a command module: {deps & commands}"


def test_modules_are_short():
    long = {m: n for m, f in modules().items() if (n := len(f.read_text().splitlines())) > 500}
    assert not long, f"modules over 500 lines: {long}"
