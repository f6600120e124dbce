"""Listening sockets: one per (slot, port), sharing the port through SO_REUSEPORT."""

from __future__ import annotations

import os
import socket

import pytest

from fsmfast.master import sockets
from fsmfast.master.sockets import BindError
from tests.support.procs import free_port


def test_slots_bind_the_same_port() -> None:
    port = free_port()
    slots = sockets.bind_slots("127.0.0.1", [port, port], slots=2, backlog=16)
    try:
        assert [list(s) for s in slots] == [[port], [port]]
        a, b = slots[0][port], slots[1][port]
        assert a.fileno() != b.fileno()
        # Two distinct open sockets, not one socket dup()ed.
        assert os.fstat(a.fileno()).st_ino != os.fstat(b.fileno()).st_ino
        for s in (a, b):
            assert s.getsockname() == ("127.0.0.1", port)
            assert s.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) == 1
            assert s.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR) == 1
            assert s.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) == 1
            assert not s.getblocking()
            assert s.get_inheritable()
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            pass
    finally:
        sockets.close_slots(slots)
    assert slots == [{}, {}]


def test_kernel_spreads_connections_over_the_slots() -> None:
    port = free_port()
    slots = sockets.bind_slots("127.0.0.1", [port], slots=2, backlog=64)
    clients = [socket.create_connection(("127.0.0.1", port), timeout=2) for _ in range(32)]
    try:
        accepted = [0, 0]
        for i, listeners in enumerate(slots):
            while True:
                try:
                    conn, _ = listeners[port].accept()
                except BlockingIOError:
                    break
                conn.close()
                accepted[i] += 1
        assert sum(accepted) == 32
        assert min(accepted) > 0  # all 32 hashed to one slot: p = 2**-31
    finally:
        for c in clients:
            c.close()
        sockets.close_slots(slots)


def test_bind_error_names_address_and_reason() -> None:
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        with pytest.raises(BindError) as info:
            sockets.bind_listener("127.0.0.1", port, 16)
    assert str(info.value) == f"cannot listen on 127.0.0.1:{port}: Address already in use"


def test_failed_bind_closes_what_was_bound_before() -> None:
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        busy = blocker.getsockname()[1]
        # Ports are bound in ascending order: the good one must come first to be bound, then released.
        good = next((p for p in (free_port() for _ in range(100)) if p < busy), None)
        if good is None:
            pytest.skip("no free port below the busy one")
        with pytest.raises(BindError, match=f":{busy}: "):
            sockets.bind_slots("127.0.0.1", [busy, good], slots=2, backlog=16)
    # Nothing kept `good`: a socket without SO_REUSEPORT can take it.
    with socket.socket() as again:
        again.bind(("127.0.0.1", good))


def test_not_an_ip_literal() -> None:
    with pytest.raises(BindError, match=r"^cannot listen on localhost:80: not an IP address literal$"):
        sockets.bind_listener("localhost", 80, 16)


def test_close_some_ports() -> None:
    p1, p2 = free_port(), free_port()
    slots = sockets.bind_slots("127.0.0.1", [p1, p2], slots=2, backlog=16)
    kept = [s[p1] for s in slots]
    closed = [s[p2] for s in slots]
    sockets.close_slots(slots, [p2])
    assert [sorted(s) for s in slots] == [[p1], [p1]]
    assert all(s.fileno() == -1 for s in closed)
    assert all(s.fileno() >= 0 for s in kept)
    sockets.close_slots(slots)


def _ipv6_loopback() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback here")
def test_ipv6_wildcard_is_dual_stack() -> None:
    port = free_port()
    slots = sockets.bind_slots("::", [port], slots=1, backlog=16)
    try:
        s = slots[0][port]
        assert s.family == socket.AF_INET6
        assert s.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) == 0
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            pass
    finally:
        sockets.close_slots(slots)
    assert sockets.format_address("::", port) == f"[::]:{port}"
    assert sockets.format_address("0.0.0.0", port) == f"0.0.0.0:{port}"
