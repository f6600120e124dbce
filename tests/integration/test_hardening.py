"""Slow peers and configured limits, against gateways started with small values.

- ``limits``: header timeout 1 s, body timeout 1 s, and tiny request limits set by flag
  (``--max-request-line``, ``--max-field-size``, ``--max-header-count``, ``--max-head-size``);
- ``test_connection_limit_*``: one worker with ``--max-connections 4`` held by requests in progress
  (nothing idle to close, see test_connection_limit.py): the fifth client waits in the listen
  backlog, and is served as soon as a connection closes.

The hostile-byte cases with the default limits are the corpus (``test_request_corpus.py``).
"""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support import manifests
from tests.support.procs import Gateway, free_port, wait_for
from tests.support.upstreams import Client, Upstream, build_request, parse_response, raw_exchange

HOST = [("Host", "h.test")]


@dataclass
class Env:
    port: int
    up: Upstream


@pytest.fixture(scope="module")
def limits(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    tmp = tmp_path_factory.mktemp("limits")
    with Upstream("limits", echo_all=True) as up:
        port = free_port()
        args = (
            "--header-timeout", "1", "--body-timeout", "1", "--max-request-line", "64",
            "--max-field-size", "100", "--max-header-count", "5", "--max-head-size", "1024",
            "--pool-idle-timeout", "1",
        )  # fmt: skip
        with Gateway(manifests.one_route(tmp / "gw.yaml", port, up.port), [port], args=args):
            yield Env(port, up)


@pytest.mark.timeout(30)
def test_slowloris_gets_408_and_is_closed(limits: Env) -> None:
    """A client trickling its head a byte at a time: the header timeout counts from the first
    byte, so trickling does not extend it."""
    head = build_request("GET", "/echo?slowloris", HOST)[:-2]  # never finished
    t0 = time.monotonic()
    with socket.create_connection(("127.0.0.1", limits.port), timeout=10) as sock:
        received = b""
        for byte in head:
            try:
                sock.sendall(bytes([byte]))
            except OSError:
                break
            sock.settimeout(0.15)
            try:
                data = sock.recv(65536)
            except TimeoutError:
                continue
            received += data
            if not data or received.endswith(b"\n"):
                break
        sock.settimeout(5)
        while data := sock.recv(65536):
            received += data
    elapsed = time.monotonic() - t0
    assert 0.9 <= elapsed < 4, elapsed
    resp = parse_response(received)
    assert resp.status == 408 and "close" in resp.tokens("connection")
    assert not limits.up.requests_for("/echo?slowloris")


@pytest.mark.timeout(30)
def test_stalled_body_gets_408_and_never_reaches_the_upstream_whole(limits: Env) -> None:
    t0 = time.monotonic()
    with Client(limits.port) as c:
        c.send(build_request("POST", "/upload?stalled", [*HOST, ("Content-Length", "10")]) + b"abc")
        resp = c.read_response("POST")
        assert resp.status == 408, resp
        assert "close" in resp.tokens("connection")
        assert c.closed_by_peer(3)
    assert 0.9 <= time.monotonic() - t0 < 4
    time.sleep(0.2)
    assert not limits.up.requests_for("/upload?stalled"), "the upstream never gets a whole request"


@pytest.mark.timeout(30)
def test_a_slow_but_steady_body_is_not_cut(limits: Env) -> None:
    with Client(limits.port) as c:
        c.send(build_request("POST", "/upload?steady", [*HOST, ("Content-Length", "6")]))
        for byte in b"steady":
            time.sleep(0.5)  # 3 s in all, each gap under the 1 s body timeout
            c.send(bytes([byte]))
        resp = c.read_response("POST")
        assert resp.status == 200 and resp.json()["length"] == 6


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    ("data", "status"),
    [
        (build_request("GET", "/echo?" + "a" * 60, HOST), 414),
        (build_request("GET", "/echo", [*HOST, ("X-Big", "v" * 96)]), 431),
        (build_request("GET", "/echo", [*HOST] + [(f"X-{i}", "1") for i in range(5)]), 431),
        (build_request("GET", "/echo", [*HOST] + [(f"X-{i}", "v" * 90) for i in range(4)] * 3), 431),
    ],
    ids=["request-line", "field-size", "header-count", "head-size"],
)
def test_limits_set_by_flag(limits: Env, data: bytes, status: int) -> None:
    raw, closed = raw_exchange(limits.port, data)
    resp = parse_response(raw)
    assert resp.status == status, (resp.status, resp.body)
    assert closed


@pytest.mark.timeout(30)
def test_under_the_limits_is_served(limits: Env) -> None:
    data = build_request("GET", "/echo?" + "a" * 40, [*HOST, ("X-Big", "v" * 90), ("Connection", "close")])
    resp = parse_response(raw_exchange(limits.port, data)[0])
    assert resp.status == 200


@pytest.mark.timeout(30)
def test_idle_upstream_connections_are_closed(limits: Env) -> None:
    """--pool-idle-timeout: a pooled upstream connection nobody uses is closed by the gateway."""
    wait_for(lambda: not limits.up._open, 5, "earlier tests' pooled connections to expire")
    before = limits.up.connections
    with Client(limits.port) as c:
        assert c.request("GET", "/echo?pooled", HOST).status == 200
    assert limits.up.connections == before + 1
    # The upstream sees the gateway close it: its serving thread ends and drops the socket.
    wait_for(lambda: not limits.up._open, 5, "the pooled connection to be closed")


@pytest.mark.timeout(60)
def test_connection_limit_queues_new_connections_in_the_backlog(tmp_path: Path) -> None:
    with Upstream("conns", echo_all=True) as up:
        port = free_port()
        args = ("--max-connections", "4")
        with Gateway(manifests.one_route(tmp_path / "gw.yaml", port, up.port), [port], workers=1, args=args) as gw:
            clients: list[Client] = []
            try:
                for i in range(4):
                    c = Client(port, timeout=10)
                    clients.append(c)
                    c.send(build_request("GET", f"/slow?s=6&held={i}", HOST))
                    wait_for(lambda i=i: up.requests_for(f"/slow?s=6&held={i}"), 5, f"request {i} upstream")
                # The kernel completes the handshake (backlog), but the worker does not accept.
                fifth = Client(port, timeout=10)
                fifth.send(build_request("GET", "/echo?fifth", HOST))
                fifth.sock.settimeout(1.0)
                with pytest.raises(TimeoutError):
                    fifth.sock.recv(1)
                assert not up.requests_for("/echo?fifth")
                # Under 90 % of the limit again: accepting resumes and the queued client is served. A
                # reset, since a close would be a half-close, answered when its response is done.
                gone = clients.pop()
                gone.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                gone.close()
                fifth.sock.settimeout(10)
                t0 = time.monotonic()
                assert fifth.read_response().status == 200
                assert time.monotonic() - t0 < 2
                fifth.close()
                # And the worker keeps serving existing connections throughout.
                assert clients[0].read_response().status == 200
            finally:
                for c in clients:
                    c.close()
            assert "not accepting more for now" in gw.stderr_text()
            assert "accepting connections again" in gw.stderr_text()
