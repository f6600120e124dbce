"""S9's Redis: the redis-server that holds fsmfast's fleet-wide (``mode: Global``) quota, and what it shows.

The harness starts one per S9 scenario (``bench/instructions.py`` one per counted run, so each starts from
an empty Redis with no script cached), only when fsmfast is among the systems: nginx and HAProxy have no
Redis-backed limiter and run S8's local one there. It is Debian's ``redis-server`` on a loopback port,
through the helper the integration tests use (``tests/support/redis_server.py``), pinned to the harness's
CPU with wrk and the upstream: like the upstream, it stands for a service elsewhere, so its CPU is recorded
per run but not charged to the proxy.

fsmfast asks Redis with a timeout of :data:`TIMEOUT` rather than its default (10 ms): on the harness's busy
CPU, or under callgrind, a slow answer must still be a decision, not the fail-open path, which costs
something else. Each run records how many decisions Redis made and how many fsmfast let through without
one, so a run that measured the wrong path shows it.
"""

from __future__ import annotations

import importlib.util
import re
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from bench import deps
from bench.scenarios import SCENARIOS
from tests.support.redis_server import RedisServer

TIMEOUT = 1.0  # s: fsmfast's --ratelimit-redis-timeout in S9
FAILURES = "fsmfast_ratelimit_redis_failures_total"
_SAMPLE = re.compile(rf"^{FAILURES}(?:{{[^}}]*}})? (\S+)$", re.M)


def needed(scenarios: Sequence[str], systems: Sequence[str]) -> bool:
    """True when a run needs redis-server: a fleet-wide scenario with fsmfast in it."""
    return "fsmfast" in systems and any(SCENARIOS[s].fleet_limit for s in scenarios)


def client_missing() -> str | None:
    """Why fsmfast cannot keep a Global quota in this environment, or None: it needs redis-py."""
    if importlib.util.find_spec("redis") is None:
        return "fleet-wide limits need redis-py in fsmfast's environment (pip install 'fsmfast[redis]')"
    return None


def start(logdir: Path, cpus: str | None) -> RedisServer:
    """redis-server on a loopback port, its log in ``logdir``, pinned to ``cpus`` (taskset) when given."""
    logdir.mkdir(parents=True, exist_ok=True)
    wrapper = ["taskset", "-c", cpus] if cpus is not None else []
    return RedisServer(logdir, wrapper=wrapper, binary=deps.tool("redis-server")).start()


def fsmfast_args(server: RedisServer, timeout: float = TIMEOUT) -> list[str]:
    return ["--ratelimit-redis", server.url, "--ratelimit-redis-timeout", f"{timeout:g}"]


def decisions(server: RedisServer) -> int:
    """Rate-limit decisions Redis made so far: one script call each (EVALSHA, or EVAL once for the script)."""
    return server.calls("evalsha", "eval")


def failures(metrics_url: str) -> int | None:
    """fsmfast's count of decisions Redis did not give in time (it failed open), from its /metrics; None when
    the page cannot be read. Workers publish about once a second: the last second may not be in yet."""
    try:
        with urllib.request.urlopen(metrics_url, timeout=5) as resp:
            text = resp.read().decode()
    except OSError:
        return None
    return int(sum(float(x) for x in _SAMPLE.findall(text)))
