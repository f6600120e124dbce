"""Real processes for integration tests: the fsmfast gateway, an httpbin upstream on gunicorn with TLS, ports.

They live in :mod:`fsmfast.demo.procs` and :mod:`fsmfast.demo.upstream`, which the demo and the benchmark
harness use too; see there for the rules every helper keeps (own session, hard timeouts, output to files).
"""

from __future__ import annotations

from fsmfast.demo.procs import Gateway, child_env, children_of, free_port, wait_for, wait_port
from fsmfast.demo.upstream import Gunicorn

__all__ = ["Gateway", "Gunicorn", "child_env", "children_of", "free_port", "wait_for", "wait_port"]
