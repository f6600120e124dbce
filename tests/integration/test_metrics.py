"""The admin listener's /metrics against a real gateway: exact sums over two workers, and a worker killed.

One gateway (two workers, access log off: metrics must not depend on it) with an HTTP and an HTTPS
listener, a route to a real upstream, a route to a Service whose endpoint refuses connections, and
nothing for other paths. A known number of requests each get 200, 404 (no route) and 502 (upstream
refused), each on its own connection so the kernel spreads them over both workers; the scrape must
show exactly those counts with their listener, route and backend, the histogram agreeing, the
upstream errors by reason, the connections, and the failed TLS handshakes of plain HTTP sent to the
HTTPS port. Then a worker is SIGKILLed after a scrape showed its counts: no counter may go down, the
restart is counted, and the replacement's requests add to the sums. Prometheus itself reads these in
test_prometheus.py; here the scrape is read directly.
"""

from __future__ import annotations

import http.client
import os
import shutil
import signal
import socket
import ssl
import subprocess
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.support import manifests, pki
from tests.support.procs import Gateway, free_port, wait_for
from tests.support.prometheus import Exposition, parse_text
from tests.support.upstreams import Upstream
from tests.unit.test_metrics_exposition import check_openmetrics

NS = "obs"
OK = f"httproute/{NS}/ok/rule/0/match/0"
DEAD = f"httproute/{NS}/dead/rule/0/match/0"
UP = f"{NS}/up:80"
GONE = f"{NS}/gone:80"
HOST = "www.example.com"


@dataclass
class Setup:
    gw: Gateway
    http_port: int
    tls_port: int
    ca: Path
    baseline: Exposition  # before any request: the start-up's readiness probes connected to each port
    sent: Counter[tuple[str, str, str, str]] = field(default_factory=Counter)  # (listener, route, backend, code)
    connections: Counter[str] = field(default_factory=Counter)  # by listener

    def get(self, path: str, expect: int) -> None:
        """One GET on its own connection; counted as the gateway should count it."""
        conn = http.client.HTTPConnection("127.0.0.1", self.http_port, timeout=10)
        try:
            conn.request("GET", path, headers={"Host": HOST, "Connection": "close"})
            resp = conn.getresponse()
            resp.read()
        finally:
            conn.close()
        assert resp.status == expect, f"GET {path}: {resp.status}"
        route, backend = {"/ok": (OK, UP), "/dead": (DEAD, GONE)}.get("/" + path.split("/")[1], ("", ""))
        self.sent[str(self.http_port), route, backend, str(expect)] += 1
        self.connections[str(self.http_port)] += 1

    def get_tls(self, path: str) -> None:
        ctx = ssl.create_default_context(cafile=str(self.ca))
        conn = http.client.HTTPSConnection("127.0.0.1", self.tls_port, timeout=10, context=ctx)
        conn.request("GET", path, headers={"Host": HOST, "Connection": "close"})  # verified by its IP SAN
        resp = conn.getresponse()
        resp.read()
        conn.close()
        assert resp.status == 200
        self.sent[str(self.tls_port), OK, UP, "200"] += 1
        self.connections[str(self.tls_port)] += 1

    def plain_to_tls_port(self) -> None:
        """Plain HTTP to the HTTPS port: a failed handshake (not TLS), never an HTTP request."""
        with socket.create_connection(("127.0.0.1", self.tls_port), timeout=5) as sock:
            sock.sendall(f"GET /ok HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode())
            while sock.recv(4096):
                pass

    def scrape(self, accept: str | None = None) -> tuple[str, str]:
        headers = {"Accept": accept} if accept else {}
        req = urllib.request.Request(f"http://127.0.0.1:{self.gw.admin_port}/metrics", headers=headers)
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.headers.get("Content-Type", ""), resp.read().decode()

    def before(self, name: str, **labels: str) -> float:
        return self.baseline.samples.get((name, frozenset(labels.items())), 0.0)

    def exposition(self) -> Exposition:
        return parse_text(self.scrape()[1])

    def requests(self, scrape: Exposition) -> dict[tuple[str, str, str, str], float]:
        out = {}
        for (name, labels), value in scrape.samples.items():
            if name == "fsmfast_http_requests_total":
                d = dict(labels)
                out[d["listener"], d["route"], d["backend"], d["code"]] = value
        return out

    def settled(self) -> Exposition:
        """A scrape showing exactly the requests sent (workers publish about once a second)."""
        expected = {k: float(v) for k, v in self.sent.items()}

        def exact() -> Exposition | None:
            scrape = self.exposition()
            return scrape if self.requests(scrape) == expected else None

        try:
            return wait_for(exact, timeout=10, what="the scrape to show the requests sent")
        except TimeoutError:
            raise AssertionError(f"sent {expected}, scraped {self.requests(self.exposition())}") from None


def _ready(gw: Gateway) -> bool:
    try:
        return gw.admin("/readyz", timeout=2)[0] == 200
    except OSError:
        return False


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    tmp = tmp_path_factory.mktemp("metrics")
    ca = pki.blog_pki(tmp / "ca")
    www = pki.short_lived(tmp / "www", ca, HOST, days=10, sans=("IP:127.0.0.1",))
    http_port, tls_port, dead_port = free_port(), free_port(), free_port()
    with Upstream("metrics", echo_all=True) as up:
        config = manifests.live_and_dead(
            tmp / "gw.yaml",
            namespace=NS,
            http_port=http_port,
            https_port=tls_port,
            cert_secret="www-cert",
            cert=www.server_cert,
            key=www.server_key,
            live=("/ok", "up", up.port),
            dead=("/dead", "gone", dead_port),
        )
        with Gateway(config, [http_port, tls_port], workers=2, args=["--no-access-log"]) as gw:
            wait_for(lambda: _ready(gw), 30, "the admin listener's /readyz 200")
            time.sleep(1.0 + 0.5)  # what the workers counted so far is published (once a second)
            code, body = gw.admin("/metrics")
            assert code == 200, body
            yield Setup(gw, http_port, tls_port, ca.ca_cert, parse_text(body.decode()))


def _sample(scrape: Exposition, name: str, **labels: str) -> float:
    return scrape.samples[name, frozenset(labels.items())]


def test_exact_sums_over_two_workers(setup: Setup) -> None:
    for _ in range(30):
        setup.get("/ok/a", 200)
    for _ in range(7):
        setup.get("/nothing/here", 404)
    for _ in range(5):
        setup.get("/dead/x", 502)
    setup.get_tls("/ok/tls")
    for _ in range(3):
        setup.plain_to_tls_port()
    http_l, tls_l = str(setup.http_port), str(setup.tls_port)
    scrape = setup.settled()
    assert setup.requests(scrape)[http_l, "", "", "404"] == 7  # local replies count, route and backend ""
    # The histogram counts every request its series counted, +Inf bucket included.
    for listener, route, backend in {k[:3] for k in setup.sent}:
        want = sum(v for k, v in setup.sent.items() if k[:3] == (listener, route, backend))
        labels = {"listener": listener, "route": route, "backend": backend}
        assert _sample(scrape, "fsmfast_http_request_duration_seconds_count", **labels) == want
        assert _sample(scrape, "fsmfast_http_request_duration_seconds_bucket", **labels, le="+Inf") == want
        assert _sample(scrape, "fsmfast_http_request_duration_seconds_sum", **labels) > 0
    # Upstream errors by the access log's reason; the other reasons of the known backends at 0.
    assert _sample(scrape, "fsmfast_upstream_errors_total", backend=GONE, reason="upstream_connect_refused") == 5
    assert _sample(scrape, "fsmfast_upstream_errors_total", backend=UP, reason="upstream_connect_refused") == 0
    assert _sample(scrape, "fsmfast_upstream_errors_total", backend=GONE, reason="upstream_reset") == 0
    # Connections: every request had its own; the failed handshakes never became one.
    wait_for(
        lambda: _sample(setup.exposition(), "fsmfast_downstream_connections", listener=http_l) == 0 or None,
        timeout=10,
        what="no connection open",
    )
    scrape = setup.exposition()
    accepted, failed = "fsmfast_downstream_connections_total", "fsmfast_tls_handshake_errors_total"
    assert _sample(scrape, accepted, listener=http_l) == setup.before(accepted, listener=http_l) + 42
    assert _sample(scrape, accepted, listener=tls_l) == setup.before(accepted, listener=tls_l) + 1
    assert _sample(scrape, failed, listener=tls_l, reason="not_tls") == 3
    assert _sample(scrape, failed, listener=tls_l, reason="timeout") == 0
    # The start-up's probe of the TLS port connected and closed without a handshake.
    assert _sample(scrape, failed, listener=tls_l, reason="closed") == setup.before(
        failed, listener=tls_l, reason="closed"
    )
    # The master's own.
    assert _sample(scrape, "fsmfast_workers") == 2
    assert _sample(scrape, "fsmfast_config_generation") == 1
    assert _sample(scrape, "fsmfast_config_reloads_total", result="success") == 0
    assert _sample(scrape, "fsmfast_config_reloads_total", result="failure") == 0
    assert {r: _sample(scrape, "fsmfast_worker_restarts_total", reason=r) for r in ("exit", "signal")} == {
        "exit": 0,
        "signal": 0,
    }
    expiry = _sample(
        scrape, "fsmfast_certificate_expiry_timestamp_seconds", namespace=NS, secret="www-cert", usage="listener"
    )
    assert 9 * 86400 < expiry - time.time() < 11 * 86400
    for slot in ("0", "1"):
        assert _sample(scrape, "fsmfast_worker_resident_memory_bytes", worker=slot) > 1 << 20
        assert _sample(scrape, "fsmfast_worker_heartbeat_age_seconds", worker=slot) < 5.0
    assert _sample(scrape, "process_resident_memory_bytes") > 1 << 20


def test_the_scrape_formats(setup: Setup) -> None:
    content_type, text = setup.scrape()
    assert content_type == "text/plain; version=0.0.4; charset=utf-8"
    promtool = shutil.which("promtool")
    if promtool is not None:
        out = subprocess.run([promtool, "check", "metrics"], input=text.encode(), capture_output=True, timeout=30)
        assert out.returncode == 0, (out.stdout + out.stderr).decode()
    content_type, text = setup.scrape("application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5")
    assert content_type == "application/openmetrics-text; version=1.0.0; charset=utf-8"
    check_openmetrics(text)


def test_a_killed_worker_takes_no_count_with_it(setup: Setup) -> None:
    for _ in range(10):
        setup.get("/ok/before", 200)
    setup.get("/dead/before", 502)
    before = setup.settled()  # both workers have published all of it
    [victim, *_] = setup.gw.worker_pids()
    os.kill(victim, signal.SIGKILL)

    def dead_and_counted() -> Exposition | None:
        scrape = setup.exposition()
        return scrape if _sample(scrape, "fsmfast_worker_restarts_total", reason="signal") == 1 else None

    after = wait_for(dead_and_counted, timeout=10, what="the worker's death counted")
    monotonic = before.monotonic()
    went_down = {k: (v, after.samples.get(k)) for k, v in monotonic.items() if after.samples.get(k, -1) < v}
    assert not went_down, f"counters that went down after a worker died: {went_down}"
    assert setup.requests(after) == {k: float(v) for k, v in setup.sent.items()}
    # The replacement serves, and its counts add to the dead one's.
    wait_for(
        lambda: (_ready(setup.gw) and _sample(setup.exposition(), "fsmfast_workers") == 2) or None,
        timeout=30,
        what="a replacement worker serving",
    )
    assert victim not in setup.gw.worker_pids()
    for _ in range(12):
        setup.get("/ok/after", 200)
    setup.get("/nothing/after", 404)
    final = setup.settled()
    assert all(final.samples.get(k, -1) >= v for k, v in after.monotonic().items())
