"""The modules Cython compiles from their own ``.py`` (setup.py), and the switch back to the source.

Each of these has a ``.pxd`` beside it that gives its classes C attributes and C-level calls;
the built extension then shadows the ``.py``. ``FSMFAST_NO_EXTENSIONS=1`` (``EXTENSIONS_OFF``)
makes ``fsmfast/__init__.py`` install a finder that loads the ``.py`` instead, so the same code
runs interpreted: it is its own pure-Python twin.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys
from types import ModuleType

# The switch to the pure-Python twins, read once per process: this module, fsmfast._accel
# (_parser or its twin) and fsmfast.tls.link (the record layer or its twin) all follow it.
EXTENSIONS_OFF = os.environ.get("FSMFAST_NO_EXTENSIONS", "") not in ("", "0")

# Keep in step with setup.py.
COMPILED = (
    "fsmfast.proxy.router",
    "fsmfast.proxy.roles",
    "fsmfast.proxy.upstream",
    "fsmfast.proxy.exchange",
    "fsmfast.proxy.downstream",
    "fsmfast.tls.link",
    "fsmfast.worker.context",
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
