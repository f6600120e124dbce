"""Listening sockets: one per (slot, port), sharing the port through SO_REUSEPORT."""

from __future__ import annotations

import os
import socket
from pathlib import Path

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


def _reuseport_listener(address: str, port: int) -> socket.socket:
    """What another fsmfast (or nginx with ``reuseport``) listens with."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    if address == "::":
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    sock.bind((address, port))
    sock.listen()
    return sock


@pytest.mark.parametrize(
    ("theirs", "ours"),
    [
        ("127.0.0.1", "127.0.0.1"),
        ("0.0.0.0", "127.0.0.1"),  # their wildcard covers our address
        ("127.0.0.1", "0.0.0.0"),  # our wildcard would cover theirs
        pytest.param("::", "127.0.0.1", marks=pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6")),
        pytest.param("127.0.0.1", "::", marks=pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6")),
    ],
)
def test_a_reuseport_group_of_another_process_is_not_joined(theirs: str, ours: str) -> None:
    # SO_REUSEPORT alone would let us into their group (same user) and share their traffic.
    port = free_port()
    with _reuseport_listener(theirs, port), pytest.raises(BindError) as info:
        sockets.bind_slots(ours, [port], slots=2, backlog=16)
    where = sockets.format_address(ours, port)
    assert str(info.value).startswith(f"cannot listen on {where}: Address already in use by pid {os.getpid()} (")


def test_a_plain_listener_is_named_too() -> None:
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        with pytest.raises(BindError) as info:
            sockets.bind_slots("127.0.0.1", [port], slots=1, backlog=16)
    me = " ".join(Path(f"/proc/{os.getpid()}/cmdline").read_bytes().decode().rstrip("\0").split("\0"))
    expected = f"cannot listen on 127.0.0.1:{port}: Address already in use by pid {os.getpid()} ({me[:157]}"
    assert str(info.value).startswith(expected)


def test_a_listener_on_another_address_of_the_port_is_no_conflict() -> None:
    port = free_port()
    with _reuseport_listener("127.0.0.1", port):
        slots = sockets.bind_slots("127.0.0.2", [port], slots=1, backlog=16)
    sockets.close_slots(slots)


def test_time_wait_does_not_block_a_restart() -> None:
    port = free_port()
    slots = sockets.bind_slots("127.0.0.1", [port], slots=1, backlog=16)
    with socket.create_connection(("127.0.0.1", port), timeout=2) as client:
        conn, _ = slots[0][port].accept()
        conn.close()  # the server side closes first: its end of the connection enters TIME_WAIT
        client.recv(1)
    sockets.close_slots(slots)
    sockets.close_slots(sockets.bind_slots("127.0.0.1", [port], slots=1, backlog=16))


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run the probe as another user")
def test_a_listener_we_cannot_inspect_is_another_process() -> None:
    # The probe runs in a child that became nobody; the listener stays root's (this process), and
    # nobody may not read root's fds.
    port = free_port()
    listener = _reuseport_listener("127.0.0.1", port)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report through the pipe, never return into pytest
        try:
            listener.close()  # its inherited copy; the parent's keeps listening
            os.setgid(65534)
            os.setuid(65534)
            try:
                sockets.bind_slots("127.0.0.1", [port], slots=1, backlog=16)
                message = "bound"
            except BindError as e:
                message = str(e)
            os.write(write_end, message.encode())
        finally:
            os._exit(0)
    os.close(write_end)
    try:
        with os.fdopen(read_end, "rb") as f:
            message = f.read().decode()
        os.waitpid(pid, 0)
    finally:
        listener.close()
    assert message == f"cannot listen on 127.0.0.1:{port}: Address already in use by another process"
