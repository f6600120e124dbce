"""The worker's connection limit against held connections (fsmfast/worker/admission.py).

One worker with a small ``--max-connections``:

- idle keep-alive connections (one request each, then nothing) and connections that never sent a
  byte hold the limit: a new client is answered at once, and the connections closed to make room
  are the ones that have waited longest;
- near the limit, idle and silent connections go after a few seconds instead of the keep-alive and
  header timeouts (75 s, 60 s), and the timeouts come back once the count is down;
- connections in the middle of a request are never closed to make room: with the limit held by
  them the worker stops accepting, and the waiting client is served once they have finished.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from fsmfast.worker.admission import PRESSED_HEADER, PRESSED_KEEPALIVE
from tests.support import manifests
from tests.support.procs import Gateway, free_port, wait_for
from tests.support.upstreams import Client, Upstream, build_request

HOST = [("Host", "h.test")]


def _gateway(tmp_path: Path, up: Upstream, limit: int) -> tuple[Gateway, int]:
    port = free_port()
    return Gateway(
        manifests.one_route(tmp_path / "gw.yaml", port, up.port),
        [port],
        workers=1,
        args=("--max-connections", str(limit)),
    ), port


def _served(port: int, tag: str, n: int) -> list[Client]:
    """``n`` keep-alive connections that made one request each and now wait."""
    clients = []
    for i in range(n):
        c = Client(port, timeout=5)
        assert c.request("GET", f"/echo?{tag}={i}", HOST).status == 200
        clients.append(c)
    return clients


def _closed(c: Client) -> bool:
    """The gateway has closed this connection (it has nothing unread for us): no waiting."""
    old = c.sock.gettimeout()
    c.sock.settimeout(0)
    try:
        data = c.sock.recv(1, socket.MSG_PEEK)
    except BlockingIOError:
        return False
    except ConnectionResetError:
        return True
    finally:
        c.sock.settimeout(old)
    assert not data, f"unexpected bytes {data!r}"
    return True


def _busy(port: int, up: Upstream, tag: str, seconds: float) -> Client:
    """A connection whose request the upstream holds for ``seconds``: in progress until then."""
    c = Client(port, timeout=15)
    c.send(build_request("GET", f"/slow?s={seconds}&{tag}", HOST))
    wait_for(lambda: up.requests_for(f"/slow?s={seconds}&{tag}"), 5, f"request {tag} to reach the upstream")
    return c


@pytest.mark.timeout(60)
def test_idle_and_silent_connections_make_room_oldest_first(tmp_path: Path) -> None:
    limit = 50
    with Upstream("idle", echo_all=True) as up:
        gw, port = _gateway(tmp_path, up, limit)
        with gw:
            held: list[Client] = []
            try:
                # Three generations, apart by more than the worker's tick (idle time is marked on it).
                t_oldest = time.monotonic()
                oldest = _served(port, "oldest", 5)
                held += oldest
                time.sleep(0.6)
                silent = [Client(port, timeout=5) for _ in range(20)]  # connected, never sent a byte
                held += silent
                time.sleep(0.6)
                newer = _served(port, "newer", limit - 1 - len(oldest) - len(silent))
                held += newer
                time.sleep(0.6)
                # limit - 1 open; every new client from here on is one over what room there is.
                fresh = []
                for i in range(6):
                    c = Client(port, timeout=5)
                    held.append(c)
                    t0 = time.monotonic()
                    assert c.request("GET", f"/echo?fresh={i}", HOST).status == 200
                    assert time.monotonic() - t0 < 1.0
                    fresh.append(c)
                # Well before even the shortened keep-alive timeout could have closed anything.
                assert time.monotonic() - t_oldest < PRESSED_KEEPALIVE - 1
                time.sleep(0.3)  # the closes made for the last client reach us
                by_age = oldest + silent + newer + fresh
                closed = [_closed(c) for c in by_age]
                n = sum(closed)
                # At least the overflow was closed, never more than a batch beyond it (3 at 50) ...
                assert len(by_age) - limit <= n <= len(by_age) - limit + 3, closed
                # ... and exactly the ones that had waited longest: the idle ones first, then the
                # silent ones in the order they connected.
                assert closed == [True] * n + [False] * (len(by_age) - n), closed
                assert n > len(oldest)  # silent connections are reclaimable too
                # What stayed open still works, the silent ones included.
                still_silent = [c for c in silent if not _closed(c)]
                assert still_silent[-1].request("GET", "/echo?late-first", HOST).status == 200
                assert newer[0].request("GET", "/echo?again", HOST).status == 200
            finally:
                for c in held:
                    c.close()
            log = gw.stderr_text()
            assert "closing the idle ones that have waited longest to admit new clients" in log
            assert log.count("closing the idle ones that have waited longest") == 1  # once, not per connection
            assert "not accepting more" not in log
            # Back under the mark: the timeouts return, with the count of connections closed for room.
            wait_for(lambda: "idle connections were closed to admit new clients" in gw.stderr_text(), 5, "the end")
            assert f"{n} idle connections were closed to admit new clients" in gw.stderr_text()


@pytest.mark.timeout(60)
def test_near_the_limit_idle_silent_and_slow_heads_time_out_in_seconds(tmp_path: Path) -> None:
    limit = 20  # pressure from 15 connections, calm again at 13
    with Upstream("pressure", echo_all=True) as up:
        gw, port = _gateway(tmp_path, up, limit)
        with gw:
            t0 = time.monotonic()
            first = [*_served(port, "idle", 1), Client(port, timeout=10)]  # idle, and silent
            slow_head = Client(port, timeout=10)
            slow_head.send(b"GET /echo?head HTTP/1.1\r\nHost: h.test\r\n")  # the rest never comes
            time.sleep(2)
            # 16 from here on: over the mark, 2 s after the first three began to wait; calm again
            # once those three are gone, whichever tick each goes on.
            later = _served(port, "later", 6) + [Client(port, timeout=10) for _ in range(7)]
            held = [*first, slow_head, *later]
            try:
                resp = slow_head.read_response()
                assert resp.status == 408
                assert f"request head not received within {PRESSED_HEADER:g}s" in resp.text
                assert PRESSED_HEADER - 0.5 < time.monotonic() - t0 < PRESSED_HEADER + 1.5
                wait_for(lambda: all(_closed(c) for c in first), 2, "the first connections closed")
                # Down to 13: calm again, and the later ones, idle for over the shortened timeout by
                # now, keep the configured one.
                wait_for(lambda: "timeouts back to 75s and 60s" in gw.stderr_text(), 3, "the timeouts restored")
                time.sleep(max(0.0, t0 + 2 + PRESSED_KEEPALIVE + 1.5 - time.monotonic()))
                assert not any(_closed(c) for c in later)
                assert later[-1].request("GET", "/echo?silent-then-asks", HOST).status == 200
                assert later[0].request("GET", "/echo?again", HOST).status == 200
            finally:
                for c in held:
                    c.close()
            assert "0 idle connections were closed to admit new clients" in gw.stderr_text()  # timeouts did it


@pytest.mark.timeout(60)
def test_connections_mid_request_are_never_closed_to_make_room(tmp_path: Path) -> None:
    limit = 10
    seconds = 4
    with Upstream("busy", echo_all=True) as up:
        gw, port = _gateway(tmp_path, up, limit)
        with gw:
            held: list[Client] = []
            try:
                idle = _served(port, "idle", 2)
                held += idle
                t_busy = time.monotonic()
                busy = [_busy(port, up, f"busy={i}", seconds) for i in range(limit - len(idle))]
                held += busy
                # At the limit, with two idle: a new client gets in, one of the idle ones makes room.
                a = Client(port, timeout=5)
                held.append(a)
                assert a.request("GET", "/echo?a", HOST).status == 200
                time.sleep(0.3)
                assert all(_closed(c) for c in idle)
                # Now every connection has a request in progress.
                a.send(build_request("GET", f"/slow?s={seconds}&a", HOST))
                wait_for(lambda: up.requests_for(f"/slow?s={seconds}&a"), 5, "a's second request")
                # The one at the limit: accepted, finds nothing idle to close, and the worker stops.
                b = _busy(port, up, "b", seconds)
                held.append(b)
                c = Client(port, timeout=15)  # queued in the listen backlog
                held.append(c)
                c.send(build_request("GET", "/echo?c", HOST))
                c.sock.settimeout(1.0)
                with pytest.raises(TimeoutError):
                    c.sock.recv(1)
                assert not up.requests_for("/echo?c")
                # Every request in progress is answered in full: none of them was closed for room.
                for conn in busy:
                    resp = conn.read_response()
                    assert (resp.status, resp.body) == (200, b"slow\n")
                assert time.monotonic() - t_busy >= seconds - 0.5
                assert a.read_response().status == 200
                assert b.read_response().status == 200
                # They are idle now: closed to make room, and accepting resumes for the queued one.
                c.sock.settimeout(10)
                assert c.read_response().status == 200
            finally:
                for conn in held:
                    conn.close()
            log = gw.stderr_text()
            assert "all with a request in progress: not accepting more for now" in log
            assert "accepting connections again" in log
