"""The master <-> worker control channel: frames round-trip, arrive in pieces, and carry fds."""

from __future__ import annotations

import os
import select
import socket
import threading
from collections.abc import Iterator

import pytest

from fsmfast.master import channel
from fsmfast.master.channel import Ack, FrameReader, Push


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    master, worker = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    worker.setblocking(False)
    try:
        yield master, worker
    finally:
        master.close()
        worker.close()


def receive(sock: socket.socket, reader: FrameReader, want: int = 1) -> list[tuple[channel.Message, list[int]]]:
    """Read until ``want`` messages are complete (the socket is non-blocking; poll with a bound)."""
    got: list[tuple[channel.Message, list[int]]] = []
    for _ in range(10_000):
        select.select([sock], [], [], 1.0)
        assert channel.recv_into(sock, reader), "unexpected EOF"
        got += reader.messages()
        if len(got) >= want:
            return got
    raise AssertionError("messages never completed")


def same_file(a: int, b: int) -> bool:
    sa, sb = os.fstat(a), os.fstat(b)
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)


@pytest.mark.parametrize(
    "msg",
    [
        Push(generation=7, snapshot=b"\x00snapshot\xff" * 100, fd_ports=[]),
        Ack(generation=7, ok=True, pid=1234),
        Ack(generation=8, ok=False, error="schema 2, this worker reads 1", pid=99),
    ],
)
def test_frame_round_trip(msg: channel.Message) -> None:
    reader = FrameReader()
    reader.feed(channel.encode(msg))
    assert reader.messages() == [(msg, [])]
    assert reader.messages() == []


def test_frames_fed_one_byte_at_a_time() -> None:
    msgs = [Push(2, b"abc"), Ack(2, True, pid=5), Push(3, b"x" * 1000)]
    data = b"".join(channel.encode(m) for m in msgs)
    reader = FrameReader()
    got = []
    for i in range(len(data)):
        reader.feed(data[i : i + 1])
        got += [m for m, _ in reader.messages()]
        # Nothing is reported before its last byte arrived.
        assert len(got) <= sum(1 for end in _frame_ends(data) if end <= i + 1)
    assert got == msgs


def _frame_ends(data: bytes) -> list[int]:
    ends, pos = [], 0
    while pos < len(data):
        pos += 4 + int.from_bytes(data[pos : pos + 4], "big")
        ends.append(pos)
    return ends


def test_oversized_frame_is_refused() -> None:
    reader = FrameReader()
    reader.feed((channel.MAX_FRAME + 1).to_bytes(4, "big"))
    with pytest.raises(ValueError, match="exceeds"):
        reader.messages()


def test_listening_socket_crosses_the_socketpair(pair: tuple[socket.socket, socket.socket]) -> None:
    master, worker = pair
    listeners = []
    for _ in range(2):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        s.listen(8)
        listeners.append(s)
    ports = [s.getsockname()[1] for s in listeners]
    try:
        msg = Push(generation=2, snapshot=b"snap", fd_ports=ports)
        channel.send(master, msg, [s.fileno() for s in listeners])
        [(got, fds)] = receive(worker, FrameReader())
        assert got == msg
        assert len(fds) == 2
        for fd, original, port in zip(fds, listeners, ports, strict=True):
            # A new descriptor in this process, for the very same open socket.
            assert fd != original.fileno()
            assert same_file(fd, original.fileno())
            adopted = socket.socket(fileno=fd)
            try:
                assert adopted.getsockname()[1] == port
                with socket.create_connection(("127.0.0.1", port), timeout=2):
                    pass
            finally:
                adopted.close()
    finally:
        for s in listeners:
            s.close()


def test_large_push_arrives_in_pieces_with_its_fd(pair: tuple[socket.socket, socket.socket]) -> None:
    master, worker = pair
    master.settimeout(10)
    snapshot = os.urandom(3 * 1024 * 1024)  # far above a socketpair's buffer: many recvmsg calls
    r, w = os.pipe()
    try:
        msg = Push(generation=9, snapshot=snapshot, fd_ports=[8080])
        sender = threading.Thread(target=channel.send, args=(master, msg, [r]))
        sender.start()
        reader = FrameReader()
        [(got, fds)] = receive(worker, reader)
        sender.join(10)
        assert isinstance(got, Push)
        assert got.snapshot == snapshot
        assert got.fd_ports == [8080]
        assert len(fds) == 1 and same_file(fds[0], r)
        os.close(fds[0])
    finally:
        os.close(r)
        os.close(w)


def test_acks_and_pushes_interleave_in_order(pair: tuple[socket.socket, socket.socket]) -> None:
    master, worker = pair
    sent = [Push(2, b"a"), Push(3, b"b"), Ack(3, True)]
    for m in sent:
        channel.send(master, m)
    got = receive(worker, FrameReader(), want=3)
    assert [m for m, _ in got] == sent
    assert all(fds == [] for _, fds in got)


def test_eof_is_reported(pair: tuple[socket.socket, socket.socket]) -> None:
    master, worker = pair
    reader = FrameReader()
    assert channel.recv_into(worker, reader)  # nothing to read yet: not EOF
    master.close()
    assert not channel.recv_into(worker, reader)
