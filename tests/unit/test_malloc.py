"""The worker's glibc malloc settings (fsmfast/worker/malloc.py): a body-sized buffer allocated and
freed over and over stops costing page faults."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

import fsmfast

ROOT = Path(fsmfast.__file__).resolve().parent.parent

# What a worker does per read of a large body: a fresh 256 KiB bytes object, a copy, both freed.
CHURN = """
import resource, sys
from fsmfast.worker import malloc
applied = malloc.tune() if sys.argv[1] == "tuned" else None
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(200):
    a = b"x" * (256 * 1024)
    b = a + b"y"
    del a, b
print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(mode: str) -> tuple[str, int]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-c", CHURN, mode], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60, check=True
    )
    applied, faults = out.stdout.split()
    return applied, int(faults)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_tuned_worker_reuses_heap_pages_for_body_buffers() -> None:
    _, default = _faults("default")
    applied, tuned = _faults("tuned")
    assert applied == "True"
    # Default glibc gives the pages back after each free and faults them in again: 64 pages a
    # buffer, ~19,000 faults here. Tuned, they stay mapped.
    assert default > 5000, default
    assert tuned < default / 20, (tuned, default)
