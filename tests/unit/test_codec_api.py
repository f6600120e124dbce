"""The HTTP/1 codec is described four times: the spec (``fsmfast/codec/http1.py``), the compiled twin
(``fsmfast/_parser.pyx``), its C declarations (``_parser.pxd``) and its stub (``_parser.pyi``). These
tests hold them to the same names, parameters and constants, so that none can drift from the others,
and hold the rest of fsmfast to the one import point, ``fsmfast.codec``.
"""

from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path

import pytest

import fsmfast
from fsmfast import codec
from fsmfast.codec import http1

try:
    from fsmfast import _parser
except ImportError:  # pragma: no cover - depends on the build
    _parser = None  # type: ignore[assignment]

PACKAGE = Path(fsmfast.__file__).resolve().parent
CONSTANTS = ("FRAME_NONE", "FRAME_CHUNKED", "FRAME_CLOSE")
# A parameter as (name, has a default).
Params = list[tuple[str, bool]]


def spec_functions() -> dict[str, Params]:
    out = {}
    for name in http1.__all__:
        obj = getattr(http1, name)
        if inspect.isfunction(obj):
            params = inspect.signature(obj).parameters.values()
            out[name] = [(p.name, p.default is not p.empty) for p in params]
    return out


def pxd_declarations() -> tuple[dict[str, Params], dict[str, int], set[str]]:
    """The cpdef functions, the cpdef enum's values and the cdef classes of _parser.pxd."""
    text = (PACKAGE / "_parser.pxd").read_text()
    text = re.sub(r"#.*", "", text)
    functions = {}
    for m in re.finditer(r"^cpdef\s+[\w ]+?\s(\w+)\s*\(([^)]*)\)", text, re.M):
        params = []
        for param in m.group(2).split(","):
            param = param.strip()
            if param:
                default = param.endswith("=*")
                params.append((param.removesuffix("=*").split()[-1], default))
        functions[m.group(1)] = params
    enum = re.search(r"^cpdef enum:\n((?:[ \t]+.*\n)+)", text, re.M)
    assert enum is not None, "_parser.pxd has no cpdef enum"
    values = {m.group(1): int(m.group(2)) for m in re.finditer(r"(\w+)\s*=\s*(-?\d+)", enum.group(1))}
    classes = set(re.findall(r"^cdef class (\w+)", text, re.M))
    return functions, values, classes


def pyi_declarations() -> tuple[dict[str, Params], dict[str, int], set[str]]:
    tree = ast.parse((PACKAGE / "_parser.pyi").read_text())
    functions, values, classes = {}, {}, set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef):
            args = node.args.args
            first_default = len(args) - len(node.args.defaults)
            functions[node.name] = [(a.arg, i >= first_default) for i, a in enumerate(args)]
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None:
            values[node.target.id] = ast.literal_eval(node.value)
        elif isinstance(node, ast.ClassDef):
            classes.add(node.name)
    return functions, values, classes


def test_the_pxd_and_the_stub_declare_the_spec_functions_with_its_parameters() -> None:
    spec = spec_functions()
    pxd, _, pxd_classes = pxd_declarations()
    pyi, _, pyi_classes = pyi_declarations()
    assert sorted(pxd) == sorted(spec), "_parser.pxd and fsmfast/codec/http1.py name different functions"
    assert sorted(pyi) == sorted(spec), "_parser.pyi and fsmfast/codec/http1.py name different functions"
    for name, params in spec.items():
        assert pxd[name] == params, f"_parser.pxd: {name}"
        assert pyi[name] == params, f"_parser.pyi: {name}"
    assert "ResponseHead" in pxd_classes and "ResponseHead" in pyi_classes


@pytest.mark.skipif(_parser is None, reason="fsmfast._parser is not built")
def test_the_compiled_functions_take_the_spec_parameters() -> None:
    spec = spec_functions()
    public = {n for n in vars(_parser) if not n.startswith("_")}
    assert public == set(http1.__all__)
    for name, params in spec.items():
        compiled = inspect.signature(getattr(_parser, name)).parameters.values()
        assert [(p.name, p.default is not p.empty) for p in compiled] == params, name


def test_the_framing_constants_are_one_set_of_values() -> None:
    _, pxd_values, _ = pxd_declarations()
    _, pyi_values, _ = pyi_declarations()
    spec = {name: getattr(http1, name) for name in CONSTANTS}
    assert pxd_values == spec, "the cpdef enum in _parser.pxd differs from fsmfast/codec/http1.py"
    assert {n: pyi_values[n] for n in CONSTANTS} == spec
    assert {name: getattr(codec, name) for name in CONSTANTS} == spec
    if _parser is not None:
        assert {name: getattr(_parser, name) for name in CONSTANTS} == spec
    assert len(set(spec.values())) == len(spec) and all(v < 0 for v in spec.values())  # n >= 0 is a length


def test_the_package_exports_the_whole_api_of_one_implementation() -> None:
    assert set(http1.__all__) <= set(codec.__all__)
    impl = codec.impl
    assert impl is (_parser if codec.USING_EXTENSION else http1)
    for name in http1.__all__:
        if name in CONSTANTS or name in ("HOP_BY_HOP", "GATEWAY_OWNED"):
            assert getattr(codec, name) == getattr(http1, name), name
        else:
            assert getattr(codec, name) is getattr(impl, name), name


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return found


def test_fsmfast_uses_the_codec_through_its_one_import_point() -> None:
    # Only fsmfast.codec picks an implementation; the rest of the package imports from it alone
    # (the .pxd files cimport _parser for C calls, which is not a Python import).
    private = {"fsmfast._parser", "fsmfast.codec.http1", "fsmfast._accel", "fsmfast.proxy.headers"}
    offenders = {}
    for path in PACKAGE.rglob("*.py"):
        if path.parent == PACKAGE / "codec":
            continue
        bad = _imports(path) & private
        if bad:
            offenders[str(path.relative_to(PACKAGE))] = sorted(bad)
    assert not offenders
