"""CircuitBreakingPolicy end to end (issue 19): the breaker opens at exactly the configured counts
with two workers, because its window lives in the machine-wide arena (in FSM each Pipy thread
counts its own), answers the degraded status and content while open, and closes after the
degraded window."""

from __future__ import annotations

import http.client
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.support.procs import Gateway, free_port, wait_for
from tests.support.resilience import HOST, NS, metrics_with, service_policy, upstreams, write_config

pytestmark = pytest.mark.slow

BACKEND = f"{NS}/svc:80"


def get(port: int) -> tuple[int, bytes]:
    """One request on a connection of its own, so that both workers take turns."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", "/echo", headers={"Host": HOST})
    resp = conn.getresponse()
    body = resp.read()
    conn.close()
    return resp.status, body


def test_errors_open_the_breaker_at_the_configured_count_across_two_workers(tmp_path: Path) -> None:
    breaker = service_policy(
        "CircuitBreakingPolicy",
        {
            "minRequestAmount": 5,
            "statTimeWindow": 30,
            "errorAmountThreshold": 5,
            "degradedTimeWindow": 2,
            "degradedStatusCode": 503,
            "degradedResponseContent": "degraded for a while",
        },
    )
    port = free_port()
    with upstreams(2) as ups:
        config = write_config(tmp_path / "cb.yaml", port, [u.port for u in ups], breaker)
        with Gateway(config, [port], workers=2) as gw:
            for u in ups:
                u.fail_status = 500
            # Four errors: below the threshold, every request reaches an upstream.
            assert [get(port)[0] for _ in range(4)] == [500] * 4
            # The fifth error opens it; the next requests get the degraded answer, from any worker.
            assert get(port)[0] == 500
            opened = time.monotonic()
            degraded = [get(port) for _ in range(10)]
            assert all(status == 503 and body == b"degraded for a while\n" for status, body in degraded)
            assert sum(len(u.requests) for u in ups) == 5, "nothing reached the upstreams while open"
            entries = gw.access_log(min_entries=15)
            assert len({e["pid"] for e in entries}) == 2, "both workers served and counted"
            assert Counter(e["reason"] for e in entries if e["status"] == 503) == {"circuit_open": 10}
            # After the degraded window traffic resumes, on a fresh window.
            for u in ups:
                u.fail_status = None
            wait_for(lambda: get(port)[0] == 200, 4, "the breaker to close")
            assert time.monotonic() - opened >= 2.0
            assert all(get(port)[0] == 200 for _ in range(6))
            transitions = metrics_with(gw, f'{{backend="{BACKEND}",state="closed"}} 1')
            assert f'fsmfast_circuit_breaker_transitions_total{{backend="{BACKEND}",state="open"}} 1' in transitions
            assert f'fsmfast_circuit_breaker_open{{backend="{BACKEND}"}} 0' in transitions


def test_slow_responses_open_the_breaker_by_ratio(tmp_path: Path) -> None:
    breaker = service_policy(
        "CircuitBreakingPolicy",
        {
            "minRequestAmount": 4,
            "statTimeWindow": 30,
            "slowTimeThreshold": 0.2,
            "slowRatioThreshold": 0.5,
            "degradedTimeWindow": 30,
            "degradedStatusCode": 429,
        },
    )
    port = free_port()
    with upstreams(1) as ups:
        config = write_config(tmp_path / "cb.yaml", port, [u.port for u in ups], breaker)
        with Gateway(config, [port], workers=2):
            assert [get(port)[0] for _ in range(2)] == [200, 200]  # fast
            ups[0].delay = 0.3
            # Two slow of four: a ratio of 0.5 once the minimum of four requests is reached.
            assert [get(port)[0] for _ in range(2)] == [200, 200]
            status, body = get(port)
            assert status == 429 and b"circuit breaker" in body  # the default content names no Service
            assert len(ups[0].requests) == 4
