"""Modules compiled by Cython from their own ``.py`` (fsmfast/_compiled.py: the proxy core and the
worker context), with the C types of the ``.pxd`` beside each; the ``.py`` is its pure-Python twin.

These tests pin the two things that make that safe: the switch picks what it says, in any import
order, and every attribute the ``.py`` gives an instance is declared in the ``.pxd`` (a C type has
no ``__dict__``: an undeclared one would be an AttributeError at run time, only in the compiled build).
"""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import fsmfast
from fsmfast._compiled import COMPILED

ROOT = Path(fsmfast.__file__).resolve().parent.parent
DESCRIBED = (
    "compiled fsmfast._parser, tls._records, shared._atomic, proxy.router, proxy.roles, pipeline.route,"
    " proxy.upstream, proxy.exchange, proxy.downstream, tls.link, worker.context, metrics.counters,"
    " resilience.health, edge.gate"
)


def _source(name: str, suffix: str) -> Path:
    return ROOT.joinpath(*name.split(".")).with_suffix(suffix)


def _run(code: str, **extra: str) -> str:
    env = {k: v for k, v in os.environ.items() if k != "FSMFAST_NO_EXTENSIONS"}
    env["PYTHONPATH"] = str(ROOT)
    env.update(extra)
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60, check=True
    )
    return out.stdout.strip()


def _built() -> bool:
    return all(any(_source(name, ".py").parent.glob(f"{name.rsplit('.', 1)[1]}.*.so")) for name in COMPILED)


@pytest.mark.parametrize("first", COMPILED)
def test_switch_picks_sources_or_extensions_whatever_is_imported_first(first: str) -> None:
    # The compiled modules import each other's types while they initialize: any import order works.
    code = (
        f"import {first}, importlib, json; from fsmfast._compiled import COMPILED, compiled_modules; "
        "print(json.dumps([compiled_modules(), "
        "[importlib.import_module(n).__file__.rsplit('.', 1)[-1] for n in COMPILED]]))"
    )
    assert json.loads(_run(code, FSMFAST_NO_EXTENSIONS="1")) == [[], ["py"] * len(COMPILED)]
    if not _built():
        pytest.skip("the compiled modules are not built in place (make inplace)")
    assert json.loads(_run(code)) == [list(COMPILED), ["so"] * len(COMPILED)]


def test_describe_names_what_runs_compiled() -> None:
    code = "from fsmfast._compiled import describe; print(describe())"
    assert _run(code, FSMFAST_NO_EXTENSIONS="1") == "pure-Python twins"
    if not _built():
        pytest.skip("the compiled modules are not built in place (make inplace)")
    assert _run(code) == DESCRIBED


def _assigned(source: Path) -> dict[str, set[str]]:
    """Per class of the module: the attributes its methods assign on ``self``."""
    tree = ast.parse(source.read_text())
    out: dict[str, set[str]] = {}
    for node in tree.body:
        if not isinstance(node, ast.ClassDef):
            continue
        names = out.setdefault(node.name, set())
        for sub in ast.walk(node):
            targets: list[ast.expr] = []
            if isinstance(sub, ast.Assign):
                targets = list(sub.targets)
            elif isinstance(sub, (ast.AugAssign, ast.AnnAssign)):
                targets = [sub.target]
            for target in targets:
                for t in ast.walk(target):
                    if isinstance(t, ast.Attribute) and isinstance(t.value, ast.Name) and t.value.id == "self":
                        names.add(t.attr)
    return out


def _fields(pxd: Path) -> dict[str, tuple[str | None, set[str]]]:
    """Per class of the .pxd: its base class (if any) and its own C attributes."""
    out: dict[str, tuple[str | None, set[str]]] = {}
    current = None
    for line in pxd.read_text().splitlines():
        m = re.match(r"cdef class (\w+)(?:\((\w+)\))?", line)
        if m:
            current = out.setdefault(m.group(1), (m.group(2), set()))[1]
            continue
        m = re.match(r"\s+cdef public \w[\w\[\]: ]*? (\w+)$", line)  # a memoryview too: long long[::1] codes
        if m and current is not None:
            current.add(m.group(1))
    return out


def _declared(pxd: Path) -> dict[str, set[str]]:
    """Per class of the .pxd: its C attributes, with those of a base class declared in a compiled
    module's .pxd (fsmfast.proxy.roles declares the roles the core's classes derive from)."""
    everywhere: dict[str, tuple[str | None, set[str]]] = {}
    for name in COMPILED:
        everywhere.update(_fields(_source(name, ".pxd")))
    out: dict[str, set[str]] = {}
    for cls, (base, attrs) in _fields(pxd).items():
        out[cls] = set(attrs)
        while base is not None and base in everywhere:
            base, more = everywhere[base]
            out[cls] |= more
    return out


@pytest.mark.parametrize("name", COMPILED)
def test_every_instance_attribute_is_declared(name: str) -> None:
    declared = _declared(_source(name, ".pxd"))
    assigned = _assigned(_source(name, ".py"))
    if not declared:  # a module of functions only (fsmfast.pipeline.route)
        assert "cpdef " in _source(name, ".pxd").read_text(), f"{name}: its .pxd declares nothing"
    for cls, attrs in declared.items():
        assert cls in assigned, f"{name}: the .pxd declares {cls}, which the .py does not define"
        missing = assigned[cls] - attrs
        assert not missing, f"{name}: the .py assigns {sorted(missing)} on {cls}, undeclared in the .pxd"


def test_setup_compiles_exactly_these_modules() -> None:
    tree = ast.parse((ROOT / "setup.py").read_text())
    listed = next(
        ast.literal_eval(node.value)
        for node in tree.body
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "COMPILED_MODULES" for t in node.targets)
    )
    assert tuple(listed) == COMPILED


def _entry_points() -> list[str]:
    names = ["fsmfast.cli", "fsmfast.explain"]
    for package in ("pipeline", "proxy", "worker"):
        for path in sorted((ROOT / "fsmfast" / package).glob("*.py")):
            if path.stem != "__init__":
                names.append(f"fsmfast.{package}.{path.stem}")
    return names


def test_any_module_imports_first() -> None:
    # The compiled modules import each other's types before their bodies run, so a plain module
    # that one of them reaches while initializing (ports, https, ...) must not need their names
    # yet. One fresh interpreter per module, each importing only that module.
    code = (
        "import importlib, subprocess, sys\n"
        "bad = []\n"
        "for name in sys.argv[1:]:\n"
        "    p = subprocess.run([sys.executable, '-c', f'import {name}'], capture_output=True, text=True)\n"
        "    if p.returncode:\n"
        "        bad.append(name + ': ' + p.stderr.strip().splitlines()[-1])\n"
        "print('\\n'.join(bad))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "FSMFAST_NO_EXTENSIONS"}
    env["PYTHONPATH"] = str(ROOT)
    names = _entry_points()
    assert "fsmfast.proxy.ports" in names and "fsmfast.worker.main" in names
    out = subprocess.run(
        [sys.executable, "-c", code, *names], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "", out.stdout
