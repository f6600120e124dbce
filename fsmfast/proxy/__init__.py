"""The HTTP data plane: client and upstream protocols, routing, header rewriting.

Three modules of this package are compiled by Cython from their own source, with C types
from the ``.pxd`` beside each (see setup.py): the built extension then shadows the ``.py``.
``FSMFAST_NO_EXTENSIONS=1`` (the switch of ``fsmfast._accel``) loads the ``.py`` instead, so
the same code runs interpreted: it is its own pure-Python twin.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys
from types import ModuleType

# Keep in step with setup.py.
COMPILED = ("router", "upstream", "exchange", "downstream")


class _SourceFirst(importlib.abc.MetaPathFinder):
    """Finds the compiled modules' ``.py`` files before the import system finds their extensions."""

    def find_spec(
        self, fullname: str, path: object = None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        package, _, name = fullname.rpartition(".")
        if package != __name__ or name not in COMPILED:
            return None
        source = os.path.join(os.path.dirname(__file__), f"{name}.py")
        return importlib.util.spec_from_file_location(fullname, source)


if os.environ.get("FSMFAST_NO_EXTENSIONS", "") not in ("", "0") and not any(
    isinstance(f, _SourceFirst) for f in sys.meta_path
):
    sys.meta_path.insert(0, _SourceFirst())


def compiled_modules() -> tuple[str, ...]:
    """Which of ``COMPILED`` run as extensions in this process (importing them if needed)."""
    import importlib

    return tuple(
        name
        for name in COMPILED
        if not (importlib.import_module(f"{__name__}.{name}").__file__ or "").endswith(".py")
    )
