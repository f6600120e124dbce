"""Master <-> worker control channel over a Unix socketpair.

Frames are a 4-byte big-endian length followed by a msgpack-encoded tagged message.
Listening sockets for ports a reload adds travel as SCM_RIGHTS file descriptors attached
to the first byte of their ``Push`` frame; ``Push.fd_ports`` names the port of each fd,
in order. Log files reopened on SIGUSR1 travel the same way in a ``Reopen`` frame, one fd per
name in ``Reopen.kinds``.
"""

from __future__ import annotations

import array
import socket
import struct

import msgspec

_LEN = struct.Struct(">I")
MAX_FRAME = 256 * 1024 * 1024
MAX_FDS = 64


class Push(msgspec.Struct, tag="push"):
    """A new snapshot (its msgspec bytes, decoded by the worker)."""

    generation: int
    snapshot: bytes
    fd_ports: list[int] = []


class Ack(msgspec.Struct, tag="ack"):
    """The worker switched to ``generation`` (ok) or kept its old one (error)."""

    generation: int
    ok: bool
    error: str | None = None
    pid: int = 0


class Ready(msgspec.Struct, tag="ready"):
    """The worker serves ``generation``: its listeners are open (sent once, after boot)."""

    generation: int
    pid: int


class Reopen(msgspec.Struct, tag="reopen"):
    """Log files the master reopened (SIGUSR1): one attached fd per kind, "access" or "error"."""

    kinds: list[str]


Message = Push | Ack | Ready | Reopen


def fd_count(msg: Message) -> int:
    """How many attached fds the message carries."""
    if isinstance(msg, Push):
        return len(msg.fd_ports)
    if isinstance(msg, Reopen):
        return len(msg.kinds)
    return 0

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(Message)


def encode(msg: Message) -> bytes:
    body = _encoder.encode(msg)
    return _LEN.pack(len(body)) + body


def send(sock: socket.socket, msg: Message, fds: list[int] | None = None) -> None:
    """Blocking send of one frame (the master's side, and the worker's small acks)."""
    frame = encode(msg)
    if fds:
        sent = socket.send_fds(sock, [frame[:1]], fds)
        if sent != 1:
            raise OSError("short send of the fd-carrying byte")
        frame = frame[1:]
    sock.sendall(frame)


class FrameReader:
    """Incremental decoder: feed it bytes and fds as they arrive, take whole messages out."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._fds: list[int] = []

    def feed(self, data: bytes, fds: list[int] | None = None) -> None:
        self._buf += data
        if fds:
            self._fds.extend(fds)

    def messages(self) -> list[tuple[Message, list[int]]]:
        out: list[tuple[Message, list[int]]] = []
        while len(self._buf) >= 4:
            (n,) = _LEN.unpack_from(self._buf)
            if n > MAX_FRAME:
                raise ValueError(f"control frame of {n} bytes exceeds {MAX_FRAME}")
            if len(self._buf) < 4 + n:
                break
            msg = _decoder.decode(bytes(self._buf[4 : 4 + n]))
            del self._buf[: 4 + n]
            fds: list[int] = []
            k = fd_count(msg)
            if k:
                fds, self._fds = self._fds[:k], self._fds[k:]
            out.append((msg, fds))
        return out


def recv_into(sock: socket.socket, reader: FrameReader, bufsize: int = 1 << 20) -> bool:
    """Read what is available (non-blocking socket) into ``reader``; False on EOF."""
    fds = array.array("i")
    try:
        data, ancdata, _flags, _addr = sock.recvmsg(bufsize, socket.CMSG_SPACE(MAX_FDS * fds.itemsize))
    except (BlockingIOError, InterruptedError):
        return True
    for level, kind, cdata in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(cdata[: len(cdata) - (len(cdata) % fds.itemsize)])
    if not data:
        return False
    reader.feed(data, list(fds))
    return True
