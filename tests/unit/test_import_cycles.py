"""No import cycle among the modules of fsmfast/proxy/ (issue 17).

The edges are what runs: ``import`` and ``from ... import`` anywhere in a module (at the top and
inside functions), and the ``cimport`` lines of its .pxd (a compiled module imports what it
cimports while it initializes). Imports under ``if TYPE_CHECKING:`` are for readers and type
checkers only and do not count. Modules outside fsmfast/proxy/ are followed too, so a cycle
that leaves the package and comes back (proxy -> worker/context -> proxy) is one.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "fsmfast"
CIMPORT = re.compile(r"^\s*(?:from\s+([\w.]+)\s+cimport\b|cimport\s+([\w.]+))", re.M)


def _module_path(name: str) -> Path | None:
    base = ROOT.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base.with_suffix(".pyx"), base / "__init__.py"):
        if candidate.exists():
            return candidate
    return None


def _is_module(name: str) -> bool:
    return name.startswith("fsmfast") and _module_path(name) is not None


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _runtime_imports(tree: ast.AST, package: str) -> set[str]:
    """Modules of fsmfast imported at run time by ``tree`` (``package``: for relative imports)."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for sub in node.orelse:
                visit(sub)
            return
        if isinstance(node, ast.Import):
            for alias in node.names:
                found.add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.add(sub if _is_module(sub) else base)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return {name for name in found if _is_module(name)}


def _edges(name: str) -> set[str]:
    path = _module_path(name)
    assert path is not None
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    out = set()
    if path.suffix == ".py":
        out |= _runtime_imports(ast.parse(path.read_text(), str(path)), package)
    pxd = path.with_suffix(".pxd")
    for source in (pxd, path if path.suffix == ".pyx" else None):
        if source is not None and source.exists():
            for m in CIMPORT.finditer(source.read_text()):
                target = m.group(1) or m.group(2)
                if _is_module(target):
                    out.add(target)
    out.discard(name)
    return out


def _graph(roots: list[str]) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    todo = list(roots)
    while todo:
        name = todo.pop()
        if name in graph:
            continue
        graph[name] = _edges(name)
        todo.extend(graph[name] - graph.keys())
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def strong(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(component)

    for v in sorted(graph):
        if v not in index:
            strong(v)
    cycles = []
    for component in components:
        members = set(component)
        start = min(component)
        # A shortest way back to the start inside the component: the cycle to show.
        paths = {start: [start]}
        frontier = [start]
        cycle = None
        while frontier and cycle is None:
            nxt = []
            for v in frontier:
                for w in sorted(graph[v] & members):
                    if w == start:
                        cycle = [*paths[v], start]
                        break
                    if w not in paths:
                        paths[w] = [*paths[v], w]
                        nxt.append(w)
                if cycle:
                    break
            frontier = nxt
        cycles.append(cycle or sorted(component))
    return cycles


def _proxy_modules() -> list[str]:
    return sorted(f"fsmfast.proxy.{p.stem}" for p in (PACKAGE / "proxy").glob("*.py") if p.stem != "__init__")


def test_the_proxy_core_has_no_import_cycle() -> None:
    graph = _graph(_proxy_modules())
    cycles = [c for c in _cycles(graph) if any(m.startswith("fsmfast.proxy.") for m in c)]
    assert not cycles, "import cycles (runtime imports and cimports):\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_the_checker_sees_what_counts_and_skips_type_checking() -> None:
    source = """
from typing import TYPE_CHECKING
import fsmfast.proxy.states
from fsmfast.proxy import local_reply
if TYPE_CHECKING:
    from fsmfast.proxy.exchange import Exchange
else:
    from fsmfast.proxy import mirror
def later():
    from fsmfast.proxy.websocket import open_tunnel
"""
    found = _runtime_imports(ast.parse(source), "fsmfast.proxy")
    assert found == {
        "fsmfast.proxy.states",
        "fsmfast.proxy.local_reply",
        "fsmfast.proxy.mirror",
        "fsmfast.proxy.websocket",
    }
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c", "a"]]


@pytest.mark.parametrize("name", ["fsmfast.proxy.exchange", "fsmfast.proxy.upstream", "fsmfast.proxy.downstream"])
def test_the_pxd_cimports_are_edges(name: str) -> None:
    # The checker reads the .pxd too: the roles reach the compiled modules only through cimports.
    assert "fsmfast.proxy.roles" in _edges(name)
