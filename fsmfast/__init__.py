"""fsmfast: a Kubernetes Gateway API gateway for bare metal, on uvloop with Cython hot paths."""

from __future__ import annotations

from fsmfast import _compiled

__version__ = "0.1.0"

# Before any other submodule is imported: the compiled modules' sources must win from the start.
if _compiled.EXTENSIONS_OFF:
    _compiled.prefer_sources()

__all__ = ["__version__"]
