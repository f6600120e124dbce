"""fsmfast: a Kubernetes Gateway API gateway for bare metal, on uvloop with Cython hot paths."""

from __future__ import annotations

import os as _os

__version__ = "0.1.0"

# Before any submodule is imported: the compiled modules' sources must win from the start.
if _os.environ.get("FSMFAST_NO_EXTENSIONS", "") not in ("", "0"):
    from fsmfast import _compiled

    _compiled.prefer_sources()

__all__ = ["__version__"]
