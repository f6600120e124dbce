"""Build script for the compiled modules; everything else is in pyproject.toml.

Knobs (environment variables):
- ``FSMFAST_CYTHON_ANNOTATE=1`` writes ``fsmfast/_parser.html`` next to the source, showing which lines
  touch the Python C-API (yellow) - the first thing to read when a hot path is slower than expected.
"""

from __future__ import annotations

import os

from setuptools import Extension, setup

# Plain .py modules compiled with the C types of the .pxd beside each; keep in step with fsmfast/_compiled.py.
COMPILED_MODULES = (
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
    # The HTTP/1 codec's compiled twin (fsmfast/codec/http1.py is the spec); TLS records through the
    # OpenSSL of Python's own _ssl, found at run time: nothing to link. Keep in step with _compiled.EXTENSIONS.
    records = Extension("fsmfast.tls._records", ["fsmfast/tls/_records.pyx"], extra_compile_args=["-O2"])
    # The shared-state atomics (GCC __atomic builtins on the arena's words); twin fsmfast/shared/atomic.py.
    atomic = Extension("fsmfast.shared._atomic", ["fsmfast/shared/_atomic.pyx"], extra_compile_args=["-O2"])
    # The proxy core: plain .py modules (their own pure-Python twins) compiled with the C types of
    # the .pxd next to each; fsmfast/_compiled.py loads the .py instead under FSMFAST_NO_EXTENSIONS.
    core = [Extension(name, [name.replace(".", "/") + ".py"], extra_compile_args=["-O2"]) for name in COMPILED_MODULES]
    annotate = os.environ.get("FSMFAST_CYTHON_ANNOTATE", "") == "1"
    # force: cythonize skips an up-to-date .c, and then writes no annotation either.
    options = {"language_level": 3, "annotate": annotate, "force": annotate}
    # The .py annotations are for readers and type checkers; only the .pxd types are compiled in (with
    # annotation typing on, `x: int` would mean a Python int where the .pxd says a C int).
    return cythonize([parser, records, atomic], **options) + cythonize(
        core, compiler_directives={"annotation_typing": False}, **options
    )


setup(ext_modules=_extensions())
