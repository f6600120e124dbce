"""The active health checker (fsmfast.resilience.prober, issue 19) on a real uvloop loop against
real origins: the threaded echo origin, a port nobody listens on, an origin whose answer the test
flips, and httpbin on gunicorn over TLS checked with the right and a wrong CA.

Probes run every second (the smallest ``interval``); each test takes a few seconds.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
import uvloop

from fsmfast.resilience.health import HEALTH_CELLS, EndpointHealth
from fsmfast.resilience.prober import Prober
from fsmfast.shared.arena import Arena
from fsmfast.snapshot import (
    SCHEMA,
    Backend,
    BackendPolicies,
    Endpoint,
    HeaderValue,
    HealthCheck,
    HealthMatch,
    SharedCells,
    Snapshot,
    UpstreamTLS,
)
from tests.support.pki import Pki, other_ca
from tests.support.procs import Gunicorn, free_port
from tests.support.upstreams import Upstream

pytestmark = pytest.mark.slow

FIRST = 16  # the first health word the tests hand out (the master keeps cells 0..3 for the session key)


class Flip:
    """A threaded origin answering ``status`` (which the test changes) to every request, counting them."""

    def __init__(self) -> None:
        self.status = 200
        self.requests = 0
        self._sock = socket.create_server(("127.0.0.1", 0))
        self._sock.settimeout(0.1)
        self.port = self._sock.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> Flip:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self._sock.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(2)
                data = b""
                try:
                    while b"\r\n\r\n" not in data:
                        chunk = conn.recv(4096)
                        if not chunk:
                            break
                        data += chunk
                    self.requests += 1
                    conn.sendall(f"HTTP/1.1 {self.status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".encode())
                except OSError:
                    pass


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        yield loop
    finally:
        loop.run_until_complete(asyncio.sleep(0.05))  # let cancelled probes unwind
        loop.close()
        asyncio.set_event_loop(None)


@pytest.fixture
def arena() -> Iterator[Arena]:
    arena = Arena(2, 1, 1024)
    try:
        yield arena
    finally:
        arena.close()


class Bases:
    """Hands out health words, as the master does."""

    def __init__(self) -> None:
        self.next = FIRST

    def take(self, n: int) -> tuple[int, ...]:
        bases = tuple(self.next + k * HEALTH_CELLS for k in range(n))
        self.next += n * HEALTH_CELLS
        return bases


def _backend(
    name: str,
    ports: list[int],
    bases: tuple[int, ...],
    health: HealthCheck,
    tls: UpstreamTLS | None = None,
) -> Backend:
    return Backend(
        name=name,
        endpoints=tuple(Endpoint("127.0.0.1", p) for p in ports),
        tls=tls,
        resilience=BackendPolicies(health=health, cells=SharedCells(endpoints=bases)),
    )


def _snapshot(*backends: Backend) -> Snapshot:
    return Snapshot(schema=SCHEMA, generation=1, listeners=(), backends={b.name: b for b in backends})


def _check(
    path: str | None = None, max_fails: int = 1, matches: tuple[HealthMatch, ...] = (), interval: int = 1
) -> HealthCheck:
    if path is not None and not matches:
        matches = (HealthMatch(status_codes=(200,)),)  # what the compiler gives a path without matches
    return HealthCheck(policy="ns/hc", interval=interval, max_fails=max_fails, path=path, matches=matches)


def _run_until(loop: asyncio.AbstractEventLoop, done: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {timeout} s")
        loop.run_until_complete(asyncio.sleep(0.02))


def _run_for(loop: asyncio.AbstractEventLoop, seconds: float) -> None:
    loop.run_until_complete(asyncio.sleep(seconds))


def _now() -> int:
    return int(time.monotonic() * 1000)


def test_an_endpoint_answering_503_is_out_after_max_fails_probes_and_back_after_one_success(
    loop: asyncio.AbstractEventLoop, arena: Arena, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="fsmfast.health")
    with Flip() as flip, Flip() as steady:
        address = f"127.0.0.1:{flip.port}"
        check = _check("/healthz", max_fails=3)
        bases = Bases().take(2)
        backend = _backend("ns/svc:80", [flip.port, steady.port], bases, check)
        health = EndpointHealth(arena.cells, bases, check)
        prober = Prober(loop, 0, 1, arena.cells)
        changes: list[tuple[str, str, bool, int]] = []
        prober.on_change = lambda b, a, ok: changes.append((b, a, ok, flip.requests))
        prober.apply(_snapshot(backend))
        flip.status = 503
        started = time.monotonic()
        try:
            _run_until(loop, lambda: bool(changes), 8, "the 503 endpoint going out")
            took = time.monotonic() - started
            assert changes == [("ns/svc:80", address, False, 3)], "out at the third failed probe, not before"
            assert 1.6 < took < 4.5, f"three probes a second apart (the first within 1 s) took {took:.1f} s"
            assert not health.usable(0, _now()) and health.usable(1, _now())
            flip.status = 200
            seen = flip.requests
            _run_until(loop, lambda: len(changes) == 2, 3, "the endpoint coming back")
            assert changes[1] == ("ns/svc:80", address, True, seen + 1), "back after one passing probe"
            assert health.usable(0, _now())
        finally:
            prober.close()
    out, back = [r.getMessage() for r in caplog.records if address in r.getMessage()]
    assert out == (
        f"backend ns/svc:80 endpoint {address} is out after 3 failed health checks: "
        "GET /healthz answered 503: expected 200"
    )
    assert back == f"backend ns/svc:80 endpoint {address} is back (health check passed)"
    assert prober.probes[("ns/svc:80", "failed")] >= 3


def test_http_probe_request_and_matches_on_status_body_and_headers(
    loop: asyncio.AbstractEventLoop, arena: Arena, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="fsmfast.health")
    with Upstream("origin") as origin:
        bases = Bases()
        ok_header = HealthMatch(status_codes=(200,), headers=(HeaderValue("X-Ready", "yes"),))
        bad_header = HealthMatch(status_codes=(200,), headers=(HeaderValue("X-Ready", "no"),))
        cases = {
            # name: (path, matches, expected in)
            "ns/status:1": ("/status/201", (HealthMatch(status_codes=(200, 201)),), True),
            "ns/status:2": ("/status/201", (HealthMatch(status_codes=(200,)),), False),
            "ns/any2xx:1": ("/status/204", (HealthMatch(),), True),
            "ns/any2xx:2": ("/status/302", (HealthMatch(),), False),
            # /echo answers the request as JSON: the body shows the probe's User-Agent.
            "ns/body:1": ("/echo", (HealthMatch(body='"fsmfast-health-check"'),), True),
            "ns/body:2": ("/echo", (HealthMatch(body="nowhere in the body"),), False),
            "ns/header:1": ("/header?X-Ready=yes", (ok_header,), True),
            "ns/header:2": ("/header?X-Ready=yes", (bad_header,), False),
            "ns/anyof:1": ("/header?X-Ready=yes", (bad_header, HealthMatch(body="nope"), ok_header), True),
            # interval 1 s: a probe's timeout is 1 s
            "ns/slow:1": ("/slow?s=2", (HealthMatch(),), False),
        }
        backends = {
            name: _backend(name, [origin.port], bases.take(1), _check(path, matches=matches))
            for name, (path, matches, _) in cases.items()
        }
        prober = Prober(loop, 0, 1, arena.cells)
        reasons: dict[str, str] = {}
        prober.apply(_snapshot(*backends.values()))
        try:
            _run_until(
                loop, lambda: all(any(k[0] == n for k in prober.probes) for n in cases), 4, "every backend probed"
            )
        finally:
            prober.close()
        for name, (_, _, expected) in cases.items():
            b = backends[name]
            assert b.resilience is not None and b.resilience.health is not None and b.resilience.cells is not None
            health = EndpointHealth(arena.cells, b.resilience.cells.endpoints, b.resilience.health)
            assert health.usable(0, _now()) is expected, name
            reasons[name] = "passed" if (name, "passed") in prober.probes else "failed"
        assert reasons == {n: "passed" if e else "failed" for n, (_, _, e) in cases.items()}
        messages = {r.getMessage().split(" ")[1]: r.getMessage().split(": ", 1)[1] for r in caplog.records}
        assert messages == {
            "ns/status:2": "GET /status/201 answered 201: expected 200",
            "ns/any2xx:2": "GET /status/302 answered 302: expected a 2xx status",
            "ns/body:2": "GET /echo answered 200: body does not contain 'nowhere in the body'",
            "ns/header:2": "GET /header?X-Ready=yes answered 200: header X-Ready is 'yes', expected 'no'",
            "ns/slow:1": "no answer in 1s",
        }
        probe = origin.requests_for("/echo")[0]
        assert probe.method == "GET"
        assert probe.header("Host") == f"127.0.0.1:{origin.port}"
        assert probe.header("User-Agent") == "fsmfast-health-check"
        assert probe.header("Connection") == "close"


def test_tcp_checks_and_a_refused_port(
    loop: asyncio.AbstractEventLoop, arena: Arena, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="fsmfast.health")
    closed = free_port()
    with Upstream("tcp") as origin:
        bases = Bases().take(2)
        check = _check(None, max_fails=2)
        backend = _backend("ns/tcp:9", [origin.port, closed], bases, check)
        prober = Prober(loop, 0, 1, arena.cells)
        prober.apply(_snapshot(backend))
        health = EndpointHealth(arena.cells, bases, check)
        try:
            _run_until(
                loop,
                lambda: not health.usable(1, _now()) and origin.connections >= 2,
                5,
                "the closed port going out, the open one probed twice",
            )
        finally:
            prober.close()
        assert health.usable(0, _now()), "a connection that opens passes a TCP check"
        assert origin.requests == [], "a TCP check sends nothing"
        assert origin.connections >= 2
    (message,) = [r.getMessage() for r in caplog.records]
    assert message == (
        f"backend ns/tcp:9 endpoint 127.0.0.1:{closed} is out after 2 failed health checks: "
        f"connect to 127.0.0.1:{closed} failed: Connection refused"
    )


def test_probes_to_a_tls_port_go_over_its_tls_with_its_trust(
    loop: asyncio.AbstractEventLoop,
    arena: Arena,
    pki: Pki,
    httpbin_tls: Gunicorn,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="fsmfast.health")
    ca = pki.ca_cert.read_text()
    wrong = other_ca(tmp_path / "other").ca_cert.read_text()
    bases = Bases()
    # httpbin's /headers answers the request's headers: the Host is the policy's server_name.
    host_seen = (HealthMatch(status_codes=(200,), body='"Host": "foo.example.com"'),)
    right = UpstreamTLS(policy="UpstreamTLSPolicy ns/right", ca_pem=ca, server_name="foo.example.com")
    cases = {
        "ns/right:443": (_check("/headers", matches=host_seen), right, True),
        "ns/right-tcp:443": (_check(None), UpstreamTLS(policy="UpstreamTLSPolicy ns/chain", ca_pem=ca), True),
        "ns/wrong:443": (_check("/status/200"), UpstreamTLS(policy="UpstreamTLSPolicy ns/wrong", ca_pem=wrong), False),
        "ns/wrong-tcp:443": (_check(None), UpstreamTLS(policy="UpstreamTLSPolicy ns/w", ca_pem=wrong), False),
        "ns/broken:443": (
            _check("/status/200"),
            UpstreamTLS(policy="UpstreamTLSPolicy ns/broken", error="Secret ns/missing not found"),
            False,
        ),
        # FSM probed TLS ports in plain HTTP; without a policy this one is plain, and fails.
        "ns/plain:443": (_check("/status/200"), None, False),
    }
    backends = {
        name: _backend(name, [httpbin_tls.port], bases.take(1), check, tls) for name, (check, tls, _) in cases.items()
    }
    prober = Prober(loop, 0, 1, arena.cells)
    prober.apply(_snapshot(*backends.values()))
    try:
        _run_until(loop, lambda: all(any(k[0] == n for k in prober.probes) for n in cases), 8, "every backend probed")
    finally:
        prober.close()
    results = {name: "passed" if (name, "passed") in prober.probes else "failed" for name in cases}
    assert results == {n: "passed" if e else "failed" for n, (_, _, e) in cases.items()}
    messages = {r.getMessage().split(" ")[1]: r.getMessage() for r in caplog.records}
    assert set(messages) == {"ns/wrong:443", "ns/wrong-tcp:443", "ns/broken:443", "ns/plain:443"}
    assert "TLS handshake failed: certificate verify failed" in messages["ns/wrong:443"]
    assert "TLS handshake failed: certificate verify failed" in messages["ns/wrong-tcp:443"]
    assert messages["ns/broken:443"].endswith(": UpstreamTLSPolicy ns/broken: Secret ns/missing not found")


def test_two_workers_split_the_endpoints_and_each_is_probed_by_one(
    loop: asyncio.AbstractEventLoop, arena: Arena
) -> None:
    origins = [Upstream(f"o{k}") for k in range(6)]
    with ExitStack() as stack:
        for origin in origins:
            stack.enter_context(origin)
        bases = Bases()
        check = _check("/status/200", max_fails=2)
        first = _backend("ns/a:80", [o.port for o in origins[:3]], bases.take(3), check)
        second = _backend("ns/b:80", [o.port for o in origins[3:]], bases.take(3), check)
        by_address = {f"127.0.0.1:{o.port}": o for o in origins}
        probers = [Prober(loop, k, 2, arena.cells) for k in range(2)]
        stack.callback(lambda: [p.close() for p in probers])

        def probed() -> dict[str, int]:
            return {address: len(o.requests_for("/status/200")) for address, o in by_address.items()}

        def check_split(backend: str, counts: dict[str, int], elapsed: float) -> None:
            # Probes of one endpoint start at least 0.9 s apart; probed by both workers, an
            # origin would see up to twice as many.
            here = {a: n for a, n in counts.items() if (backend, a) in everyone}
            assert all(2 <= n <= 1 + elapsed / 0.9 for n in here.values()), (backend, here, elapsed)
            # What each worker counted is what reached the endpoints it says are its own (a probe
            # cancelled after its request left counts at the origin only).
            for prober, own in zip(probers, mine, strict=True):  # as the first snapshot gave them
                sent = sum(n for key, n in prober.probes.items() if key[0] == backend)
                arrived = sum(counts[a] for name, a in own if name == backend)
                assert arrived - 1 <= sent <= arrived, (backend, prober.index, sent, arrived)

        started = time.monotonic()
        for prober in probers:
            prober.apply(_snapshot(first, second))
        mine = [set(p.endpoints) for p in probers]
        everyone = {(b.name, f"127.0.0.1:{e.port}") for b in (first, second) for e in b.endpoints}
        assert mine[0] | mine[1] == everyone and not mine[0] & mine[1]
        assert mine[0] and mine[1], "both workers have endpoints to probe"
        tasks = {id(t.task) for p in probers for t in p._targets.values()}
        _run_for(loop, 2.0)
        for prober in probers:  # the same snapshot again: schedules kept, nothing probed twice
            prober.apply(_snapshot(first, second))
        assert {id(t.task) for p in probers for t in p._targets.values()} == tasks
        _run_for(loop, 2.0)

        # ns/b:80 dropped from the snapshot: its endpoints are not probed any more, the others are.
        for prober in probers:
            prober.apply(_snapshot(first))
        assert {b for p in probers for b, _ in p.endpoints} == {"ns/a:80"}
        _run_for(loop, 0.3)  # a probe cancelled in flight may still reach its origin
        dropped = probed()
        check_split("ns/b:80", dropped, time.monotonic() - started)
        _run_for(loop, 1.5)
        for prober in probers:
            prober.close()
        _run_for(loop, 0.3)
        counts = probed()
        check_split("ns/a:80", counts, time.monotonic() - started)
        assert [counts[a] for a in dropped if ("ns/b:80", a) in everyone] == [
            n for a, n in dropped.items() if ("ns/b:80", a) in everyone
        ]
        assert all(counts[a] > n for a, n in dropped.items() if ("ns/a:80", a) in everyone)
