"""The layout's arrows, checked on the source: ``api → workers → agents`` with ``models`` shared,
and no import cycle among the workers' modules, counting imports made inside functions too
(a deferred import hides a cycle from Python, not from the reader)."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LAYERS = ("api", "workers", "agents", "models")
# What each layer may import of the others.
ALLOWED = {
    "api": {"api", "workers", "agents", "models"},
    "workers": {"workers", "agents", "models"},
    "agents": {"agents"},
    "models": {"models"},
}


def modules(package: str) -> dict[str, Path]:
    found = {}
    for path in (ROOT / package).rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def imported(path: Path) -> Iterator[str]:
    """Every module name an import statement of the file names, wherever the statement is."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module
            yield from (f"{node.module}.{alias.name}" for alias in node.names)


def test_layers_import_only_downwards() -> None:
    wrong = []
    for layer in LAYERS:
        for name, path in modules(layer).items():
            for target in imported(path):
                top = target.split(".", 1)[0]
                if top in LAYERS and top not in ALLOWED[layer]:
                    wrong.append(f"{name} imports {target}")
    assert not wrong, wrong


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
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

    for node in graph:
        if node not in index:
            visit(node)
    return found


def test_the_workers_modules_import_one_another_without_cycles() -> None:
    workers = modules("workers")
    graph = {name: {target for target in imported(path) if target in workers and target != name}
             for name, path in workers.items()}
    # Importing ``workers.tasks.x`` imports the ``workers.tasks`` package as well.
    for name in graph:
        graph[name] = {t for t in graph[name] if not name.startswith(f"{t}.")}
    assert cycles(graph) == []


def test_the_cycle_check_sees_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
