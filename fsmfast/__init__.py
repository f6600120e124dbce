"""fsmfast: a Kubernetes Gateway API gateway for bare metal, on uvloop with Cython hot paths."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
