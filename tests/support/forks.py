"""Forked children for the tests of machine-wide state (fsmfast/shared, fsmfast/resilience): several
processes hammering one arena, as the workers do."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable

import pytest


def fork(child: Callable[[], None]) -> int:
    """Run ``child`` in a forked process; its exit status is 0 when it returned, 1 when it raised."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            child()
            code = 0
        finally:
            os._exit(code)
    return pid


def reap(pid: int, timeout: float = 60.0) -> int:
    """The child's wait status; a child still running after ``timeout`` is killed and the test fails."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return status
        time.sleep(0.005)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    pytest.fail(f"child {pid} did not finish in {timeout} s: the arena is stuck")
