"""Build script for the one compiled module, ``fsmfast._parser``; everything else is in pyproject.toml.

Knobs (environment variables):
- ``FSMFAST_CYTHON_ANNOTATE=1`` writes ``fsmfast/_parser.html`` next to the source, showing which lines
  touch the Python C-API (yellow) - the first thing to read when a hot path is slower than expected.
"""

from __future__ import annotations

import os

from setuptools import Extension, setup


def _extensions() -> list[Extension]:
    # Imported here, not at the top, so `setup.py --version` and metadata-only commands work without Cython.
    from Cython.Build import cythonize

    parser = Extension(
        "fsmfast._parser",
        ["fsmfast/_parser.pyx"],
        # -O2, never -march=native: wheels must run on any CPU of the arch, and auditwheel rejects
        # ISA extensions. The last -O wins, so this overrides the interpreter's default -O3.
        extra_compile_args=["-O2"],
    )
    annotate = os.environ.get("FSMFAST_CYTHON_ANNOTATE", "") == "1"
    # force: cythonize skips an up-to-date .c, and then writes no annotation either.
    return cythonize([parser], language_level=3, annotate=annotate, force=annotate)


setup(ext_modules=_extensions())
