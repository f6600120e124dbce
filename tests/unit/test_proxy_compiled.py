"""The proxy core (fsmfast.proxy: router, upstream, exchange, downstream) is compiled from its own
``.py`` with the C types of the ``.pxd`` beside each; the ``.py`` is its pure-Python twin.

These tests pin the two things that make that safe: the switch picks what it says, and every
attribute the ``.py`` gives an instance is declared in the ``.pxd`` (a C type has no ``__dict__``:
an undeclared one would be an AttributeError at run time, only in the compiled build).
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from fsmfast import proxy

PROXY = Path(proxy.__file__).resolve().parent
ROOT = PROXY.parent.parent


def _run(code: str, **extra: str) -> str:
    env = {k: v for k, v in os.environ.items() if k != "FSMFAST_NO_EXTENSIONS"}
    env["PYTHONPATH"] = str(ROOT)
    env.update(extra)
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60, check=True
    )
    return out.stdout.strip()


def _built() -> bool:
    return all(any(PROXY.glob(f"{name}.*.so")) for name in proxy.COMPILED)


@pytest.mark.parametrize("first", proxy.COMPILED)
def test_switch_picks_sources_or_extensions_whatever_is_imported_first(first: str) -> None:
    # The compiled modules import each other's types while they initialize: any import order works.
    code = (
        f"import fsmfast.proxy.{first}, json; from fsmfast.proxy import COMPILED, compiled_modules; "
        "import importlib; "
        "print(json.dumps([compiled_modules(), "
        "[importlib.import_module('fsmfast.proxy.' + n).__file__.rsplit('.', 1)[-1] for n in COMPILED]]))"
    )
    forced = _run(code, FSMFAST_NO_EXTENSIONS="1")
    assert forced == '[[], ["py", "py", "py", "py"]]'
    if not _built():
        pytest.skip("the proxy core is not built in place (make inplace)")
    assert _run(code) == '[["router", "upstream", "exchange", "downstream"], ["so", "so", "so", "so"]]'


def test_describe_names_what_runs_compiled() -> None:
    assert _run("from fsmfast import _accel; print(_accel.describe())", FSMFAST_NO_EXTENSIONS="1") == (
        "pure-Python twins"
    )
    if not _built():
        pytest.skip("the proxy core is not built in place (make inplace)")
    assert _run("from fsmfast import _accel; print(_accel.describe())") == (
        "compiled fsmfast._parser + proxy core (router, upstream, exchange, downstream)"
    )


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


def _declared(pxd: Path) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    current = None
    for line in pxd.read_text().splitlines():
        m = re.match(r"cdef class (\w+)", line)
        if m:
            current = out.setdefault(m.group(1), set())
            continue
        m = re.match(r"\s+cdef public \w[\w ]*? (\w+)$", line)
        if m and current is not None:
            current.add(m.group(1))
    return out


@pytest.mark.parametrize("name", proxy.COMPILED)
def test_every_instance_attribute_is_declared(name: str) -> None:
    declared = _declared(PROXY / f"{name}.pxd")
    assigned = _assigned(PROXY / f"{name}.py")
    assert declared, f"{name}.pxd declares no class"
    for cls, attrs in declared.items():
        assert cls in assigned, f"{name}.pxd declares {cls}, which {name}.py does not define"
        missing = assigned[cls] - attrs
        assert not missing, f"{name}.py assigns {sorted(missing)} on {cls}, undeclared in {name}.pxd"

