"""LoadBalancerPolicy end to end (issue 19): three real echo upstreams behind one Service port, a
gateway with two workers, a few hundred requests.

The three endpoints are one Service whose named target port resolves differently in three
EndpointSlices (as for pods listening on different container ports), so they can all live on
127.0.0.1. Every response names its upstream (``X-Upstream``); the access log names the worker
(``pid``) and the endpoint (``upstream``).
"""

from __future__ import annotations

import http.client
import os
import signal
import threading
import time
import zlib
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fsmfast.compile import build
from tests.support import resilience
from tests.support.procs import Gateway, free_port, wait_for
from tests.support.resilience import NS, service_policy
from tests.support.upstreams import Request, Upstream

pytestmark = pytest.mark.slow

CLIENTS = [f"127.0.0.{n}" for n in range(2, 10)]


def write_config(path: Path, port: int, ups: list[Upstream], lb_type: str | None) -> Path:
    policies = [service_policy("LoadBalancerPolicy", {"type": lb_type}, name="lb")] if lb_type is not None else []
    return resilience.write_config(path, port, [u.port for u in ups], *policies)


class Holding(Upstream):
    """An echo upstream that answers ``/hold`` only after ``hold`` seconds (an endpoint with slow
    requests in flight)."""

    hold = 3.0

    def _record(self, req: Request) -> None:
        super()._record(req)
        if req.target.startswith("/hold"):
            self._stopping.wait(self.hold)


@pytest.fixture
def upstreams() -> Iterator[list[Upstream]]:
    with resilience.upstreams(3, Holding) as ups:
        yield ups


def get(conn: http.client.HTTPConnection, path: str = "/x") -> str:
    conn.request("GET", path, headers={"Host": "lb.example"})
    resp = conn.getresponse()
    resp.read()
    assert resp.status == 200
    return resp.headers["X-Upstream"]


def served(gw: Gateway, n: int) -> list[dict[str, Any]]:
    return [e for e in gw.access_log(min_entries=n) if e.get("upstream")]


@pytest.mark.parametrize("lb_type", [None, "RoundRobinLoadBalancer"])
def test_round_robin_spreads_requests_evenly_per_request_not_per_connection(
    tmp_path: Path, upstreams: list[Upstream], lb_type: str | None
) -> None:
    port = free_port()
    config = write_config(tmp_path / "lb.yaml", port, upstreams, lb_type)
    with Gateway(config, [port], workers=2) as gw:
        # One keep-alive connection: one worker, and every request balanced on its own (FSM's
        # default would pin the connection to one endpoint).
        one = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        assert Counter(get(one) for _ in range(30)) == {"u0": 10, "u1": 10, "u2": 10}
        one.close()
        # Many connections over both workers: each worker's round robin is exact, so the total
        # is within one request per worker of even.
        counts: Counter[str] = Counter()
        for _ in range(30):
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            counts.update(get(conn) for _ in range(9))
            conn.close()
        assert sum(counts.values()) == 270
        assert all(88 <= counts[name] <= 92 for name in ("u0", "u1", "u2")), counts
        entries = served(gw, 300)
        assert len({e["pid"] for e in entries}) == 2, "both workers should have served"
    assert build(str(config)).warnings == []  # the policy is valid and applied: nothing to warn about


def test_hashing_sends_each_client_address_to_one_endpoint_in_every_worker(
    tmp_path: Path, upstreams: list[Upstream]
) -> None:
    port = free_port()
    config = write_config(tmp_path / "lb.yaml", port, upstreams, "HashingLoadBalancer")
    result = build(str(config))
    assert result.warnings == []
    endpoints = result.snapshot.backends[f"{NS}/svc:80"].endpoints
    by_port = {u.port: u.name for u in upstreams}
    with Gateway(config, [port], workers=2) as gw:
        seen: dict[str, Counter[str]] = {ip: Counter() for ip in CLIENTS}
        for _ in range(5):
            for ip in CLIENTS:
                # A new connection each round, from the client's own address: the kernel hands
                # the connections to either worker.
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10, source_address=(ip, 0))
                seen[ip].update(get(conn) for _ in range(6))
                conn.close()
        for ip in CLIENTS:
            assert len(seen[ip]) == 1, f"{ip} was served by {dict(seen[ip])}"
            # The documented choice: CRC-32 of the address, modulo the snapshot's endpoint list.
            assert set(seen[ip]) == {by_port[endpoints[zlib.crc32(ip.encode()) % 3].port]}
        assert len({name for c in seen.values() for name in c}) >= 2, "eight clients should not all hash alike"
        entries = served(gw, len(CLIENTS) * 30)
        pids = {e["pid"] for e in entries}
        assert len(pids) == 2, "both workers should have served"
        # Both workers served some client, and chose the same endpoint for it.
        for ip in CLIENTS:
            assert len({e["upstream"] for e in entries if e["client"] == ip}) == 1
        assert any(len({e["pid"] for e in entries if e["client"] == ip}) == 2 for ip in CLIENTS)


def test_least_connections_counts_in_flight_requests_of_every_worker(tmp_path: Path, upstreams: list[Upstream]) -> None:
    port = free_port()
    config = write_config(tmp_path / "lb.yaml", port, upstreams, "LeastConnectionLoadBalancer")
    result = build(str(config))
    assert result.warnings == []
    first = result.snapshot.backends[f"{NS}/svc:80"].endpoints[0]
    slow = next(u for u in upstreams if u.port == first.port)

    def hold() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
        try:
            get(conn, "/hold")
        except (OSError, http.client.HTTPException):
            pass  # the worker serving it was killed
        finally:
            conn.close()

    def quick(n: int) -> Counter[str]:
        counts: Counter[str] = Counter()
        for _ in range(n):
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            counts[get(conn)] += 1
            conn.close()
        return counts

    with Gateway(config, [port], workers=2) as gw:
        # Every count is 0, so a worker's first pick is the first endpoint: the held request is there,
        # in one worker. The other worker's first pick would be there too if it counted on its own.
        holder = threading.Thread(target=hold, daemon=True)
        holder.start()
        wait_for(lambda: slow.requests_for("/hold") or None, 5, "the held request at the first endpoint")
        during = quick(40)
        assert during[slow.name] == 0, during
        entries = served(gw, 40)
        assert len({e["pid"] for e in entries}) == 2, "both workers should have served"
        # Once it is answered, the endpoint is as free as the others again.
        holder.join(10)
        assert not holder.is_alive()
        after = quick(30)
        assert after[slow.name] >= 5, after

        # Workers killed with requests in flight: the master clears their counts before the respawn
        # (else the endpoints holding them would count one request forever and get nothing).
        for u in upstreams:
            u.hold = 30.0  # type: ignore[attr-defined]
        before = {u.name: len(u.requests_for("/hold")) for u in upstreams}

        def held() -> int:
            return sum(len(u.requests_for("/hold")) - before[u.name] for u in upstreams)

        for n in (1, 2):
            threading.Thread(target=hold, daemon=True).start()
            wait_for(lambda n=n: held() == n or None, 5, "a held request")  # type: ignore[misc]
        holding = {u.name for u in upstreams if len(u.requests_for("/hold")) > before[u.name]}
        assert len(holding) == 2  # the second holder went where the first was not
        (free,) = {u.name for u in upstreams} - holding
        assert quick(12) == {free: 12}
        old = set(gw.worker_pids())
        for pid in old:
            os.kill(pid, signal.SIGKILL)
        wait_for(lambda: len(set(gw.worker_pids()) - old) == 2 or None, 15, "two respawned workers")
        time.sleep(0.3)
        spread = quick(30)
        assert all(spread[u.name] >= 5 for u in upstreams), spread
