"""The one place that decides what runs compiled: the switch, and how each native piece follows it.

There are two kinds of native code, and ``FSMFAST_NO_EXTENSIONS=1`` (``EXTENSIONS_OFF``) turns
both off:

- extensions written in Cython with a pure-Python twin (``EXTENSIONS``: the HTTP/1 codec
  ``fsmfast._parser``, twin ``fsmfast.codec.http1``; the TLS record layer ``fsmfast.tls._records``,
  twin ``fsmfast.tls.records``; the shared-state atomics ``fsmfast.shared._atomic``, twin
  ``fsmfast.shared.atomic``). Their users ask ``extension(name)`` and fall back to the twin on
  None (``fsmfast.codec``, ``fsmfast.tls.link``);
- modules Cython compiles from their own ``.py`` with a ``.pxd`` beside it (``COMPILED``): the
  built extension shadows the ``.py``, and ``fsmfast/__init__.py`` installs ``prefer_sources``'
  finder so that the ``.py`` loads instead: the same code runs interpreted, its own twin.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys
import warnings
from types import ModuleType

# The switch to the pure-Python twins, read once per process; everything native follows it through
# this module (extension() and prefer_sources()).
EXTENSIONS_OFF = os.environ.get("FSMFAST_NO_EXTENSIONS", "") not in ("", "0")

# Cython extensions with a pure-Python twin, and what describe() calls them; keep in step with setup.py.
EXTENSIONS = {
    "fsmfast._parser": "fsmfast._parser",
    "fsmfast.tls._records": "tls._records",
    "fsmfast.shared._atomic": "shared._atomic",
}

# Keep in step with setup.py.
COMPILED = (
    "fsmfast.proxy.router",
    "fsmfast.proxy.roles",
    "fsmfast.pipeline.route",
    "fsmfast.proxy.upstream",
    "fsmfast.proxy.exchange",
    "fsmfast.proxy.downstream",
    "fsmfast.tls.link",
    "fsmfast.worker.context",
    "fsmfast.metrics.counters",
    "fsmfast.resilience.health",
    "fsmfast.edge.gate",
)

_ROOT = os.path.dirname(os.path.abspath(__file__))


class _SourceFirst(importlib.abc.MetaPathFinder):
    """Finds the compiled modules' ``.py`` files before the import system finds their extensions."""

    def find_spec(
        self, fullname: str, path: object = None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in COMPILED:
            return None
        source = os.path.join(_ROOT, *fullname.split(".")[1:]) + ".py"
        return importlib.util.spec_from_file_location(fullname, source)


def prefer_sources() -> None:
    if not any(isinstance(f, _SourceFirst) for f in sys.meta_path):
        sys.meta_path.insert(0, _SourceFirst())


def compiled_modules() -> tuple[str, ...]:
    """Which of ``COMPILED`` run as extensions in this process (importing them if needed)."""
    return tuple(name for name in COMPILED if not (importlib.import_module(name).__file__ or "").endswith(".py"))


def extension(name: str) -> ModuleType | None:
    """The compiled module ``name`` (one of ``EXTENSIONS``), or None when the switch is off or it is
    not built; then the caller uses its twin. A missing build warns once rather than failing: a
    source checkout without a compiler still runs, only slower."""
    if name not in EXTENSIONS:
        raise ValueError(f"{name} is not one of fsmfast._compiled.EXTENSIONS")
    if EXTENSIONS_OFF:
        return None
    try:
        return importlib.import_module(name)
    except ImportError as exc:  # pragma: no cover - depends on the build
        warnings.warn(f"{name} is not built ({exc}); using its pure-Python twin", stacklevel=2)
        return None


def describe() -> str:
    """What runs compiled in this process, for reports and test headers."""
    from fsmfast import codec
    from fsmfast.shared import arena
    from fsmfast.tls.link import direct_unavailable

    parts = [EXTENSIONS["fsmfast._parser"]] if codec.USING_EXTENSION else []
    parts += [EXTENSIONS["fsmfast.tls._records"]] if direct_unavailable() is None else []
    parts += [EXTENSIONS["fsmfast.shared._atomic"]] if arena.USING_EXTENSION else []
    parts += [n.removeprefix("fsmfast.") for n in compiled_modules()]
    return f"compiled {', '.join(parts)}" if parts else "pure-Python twins"
