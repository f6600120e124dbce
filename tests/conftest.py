"""Fixtures shared by the whole suite.

Two implementations, one suite: ``fsmfast/_compiled.py`` picks the compiled ``fsmfast._parser`` or its
pure-Python twin ``fsmfast/codec/http1.py`` (and likewise for every native piece).
``FSMFAST_NO_EXTENSIONS=1 python -m pytest`` runs everything
over the twin (child processes inherit the variable, so integration tests do too); ``make test`` runs the
unit tests a second time that way. The report header says which one a run used.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.pki import Pki, blog_pki
from tests.support.procs import Gunicorn


def pytest_report_header(config: pytest.Config) -> str:
    try:
        from fsmfast._compiled import describe

        impl = describe()
    except Exception as exc:  # the package may be mid-refactor; the header must not break collection
        impl = f"unknown ({exc.__class__.__name__}: {exc})"
    flag = os.environ.get("FSMFAST_NO_EXTENSIONS", "")
    return f"fsmfast hot paths: {impl} (FSMFAST_NO_EXTENSIONS={flag!r})"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark everything under tests/integration and tests/conformance ``slow`` (real processes), so
    ``-m "not slow"`` is the fast loop."""
    for item in items:
        if "integration" in item.path.parts or "conformance" in item.path.parts:
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """The founding blog's CA (CN=flomesh.io) and server certificate (CN=foo.example.com), made once."""
    return blog_pki(tmp_path_factory.mktemp("blog-pki"))


@pytest.fixture(scope="module")
def httpbin_tls(pki: Pki) -> Iterator[Gunicorn]:
    """httpbin on gunicorn serving HTTPS with the blog's server certificate; ``.port`` is its port."""
    with Gunicorn(pki.server_cert, pki.server_key) as server:
        yield server


@pytest.fixture
def config_dir(tmp_path: Path) -> Path:
    """An empty directory for a test's manifests (``fsmfast run -c`` reads every YAML file in it)."""
    d = tmp_path / "config"
    d.mkdir()
    return d
