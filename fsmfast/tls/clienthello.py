"""Reading the server name from a TLS ClientHello without terminating TLS (pure, no I/O).

TLS passthrough routes a connection by the SNI of its first flight, then replays those
bytes to the chosen backend untouched. The ClientHello may arrive in pieces and may span
several TLS records (RFC 8446 §5.1 allows a handshake message to be fragmented), so
``parse`` is called with everything received so far and answers one of:

- ``None``: not enough bytes yet (call again when more arrive);
- a ``ClientHello``: the first handshake message is complete;
- ``ClientHelloError``: this is not a TLS ClientHello, or it is malformed or too large.

Every length field is checked against the bytes that contain it, and the reassembled
message is bounded (``MAX_HELLO``), so garbage or a hostile peer cannot make the parser read
out of bounds, loop, or buffer without limit.
"""

from __future__ import annotations

import msgspec

RECORD_HANDSHAKE = 22
HANDSHAKE_CLIENT_HELLO = 1
EXT_SERVER_NAME = 0
EXT_ALPN = 16
NAME_TYPE_HOST = 0
RECORD_HEADER = 5
# RFC 8446 §5.1: a record carries at most 2^14 bytes of plaintext.
MAX_RECORD = 1 << 14
# Far above real ClientHellos (a few KiB, even with post-quantum key shares and tickets).
MAX_HELLO = 64 * 1024
# Fragmentation bound: with MAX_HELLO, what a caller may have to buffer is bounded too.
MAX_RECORDS = 16


class ClientHello(msgspec.Struct, frozen=True):
    server_name: str | None  # lower-case, without a trailing dot
    alpn: tuple[str, ...]
    # Bytes of the TLS records that carried the ClientHello (what was consumed).
    length: int


class ClientHelloError(ValueError):
    """Not a ClientHello, or an invalid one; the message says which field."""


class _Reader:
    __slots__ = ("data", "end", "pos")

    def __init__(self, data: bytes, pos: int = 0, end: int | None = None) -> None:
        self.data = data
        self.pos = pos
        self.end = len(data) if end is None else end

    def take(self, n: int, what: str) -> int:
        start = self.pos
        if n < 0 or start + n > self.end:
            raise ClientHelloError(f"{what} overruns its container")
        self.pos = start + n
        return start

    def uint(self, size: int, what: str) -> int:
        start = self.take(size, what)
        return int.from_bytes(self.data[start : start + size], "big")

    def vector(self, length_size: int, what: str) -> _Reader:
        n = self.uint(length_size, f"{what} length")
        start = self.take(n, what)
        return _Reader(self.data, start, start + n)

    def left(self) -> int:
        return self.end - self.pos


def _handshake_bytes(data: bytes) -> tuple[bytes, int] | None:
    """Concatenate the payloads of leading handshake records until the first message is whole.

    Returns (message bytes, bytes of records consumed), or None when more data is needed.
    """
    pieces: list[bytes] = []
    have = 0
    pos = 0
    need: int | None = None
    while True:
        if len(data) - pos < RECORD_HEADER:
            return None
        content_type = data[pos]
        if content_type != RECORD_HANDSHAKE:
            what = "the first record" if pos == 0 else "a record inside the ClientHello"
            raise ClientHelloError(f"{what} is not a TLS handshake record (content type {content_type})")
        if data[pos + 1] != 3:
            raise ClientHelloError(f"unknown record version {data[pos + 1]}.{data[pos + 2]}")
        length = int.from_bytes(data[pos + 3 : pos + 5], "big")
        if length == 0 or length > MAX_RECORD:
            raise ClientHelloError(f"record length {length} is out of range")
        if len(data) - pos - RECORD_HEADER < length:
            return None
        if len(pieces) == MAX_RECORDS:
            raise ClientHelloError(f"ClientHello fragmented into more than {MAX_RECORDS} records")
        pieces.append(data[pos + RECORD_HEADER : pos + RECORD_HEADER + length])
        have += length
        pos += RECORD_HEADER + length
        if need is None and have >= 4:
            head = b"".join(pieces)[:4]
            if head[0] != HANDSHAKE_CLIENT_HELLO:
                raise ClientHelloError(f"the first handshake message is not a ClientHello (type {head[0]})")
            need = 4 + int.from_bytes(head[1:4], "big")
            if need > MAX_HELLO:
                raise ClientHelloError(f"ClientHello of {need - 4} bytes is larger than {MAX_HELLO}")
        if need is not None and have >= need:
            return b"".join(pieces)[:need], pos


def _server_name(ext: _Reader) -> str | None:
    names = ext.vector(2, "server_name list")
    while names.left():
        name_type = names.uint(1, "server name type")
        name = names.vector(2, "server name")
        if name_type != NAME_TYPE_HOST:
            continue
        raw = name.data[name.pos : name.end]
        if not raw or b"\0" in raw:
            raise ClientHelloError("empty or NUL-containing host_name")
        try:
            text = raw.decode("ascii")
        except UnicodeDecodeError:
            raise ClientHelloError("host_name is not ASCII (IDNs are sent as A-labels)") from None
        return text.rstrip(".").lower() or None
    return None


def _alpn(ext: _Reader) -> tuple[str, ...]:
    protocols = ext.vector(2, "ALPN list")
    out = []
    while protocols.left():
        p = protocols.vector(1, "ALPN protocol")
        out.append(p.data[p.pos : p.end].decode("latin-1"))
    return tuple(out)


def parse(data: bytes) -> ClientHello | None:
    """The ClientHello at the start of ``data``, None if incomplete; raises ClientHelloError."""
    found = _handshake_bytes(data)
    if found is None:
        return None
    message, consumed = found
    r = _Reader(message, 4)
    version = r.uint(2, "client_version")
    if version >> 8 != 3:
        raise ClientHelloError(f"unknown client_version {version:#06x}")
    r.take(32, "random")
    if r.vector(1, "session_id").left() > 32:
        raise ClientHelloError("session_id longer than 32 bytes")
    suites = r.vector(2, "cipher_suites")
    if suites.left() == 0 or suites.left() % 2:
        raise ClientHelloError("cipher_suites length is zero or odd")
    r.vector(1, "compression_methods")
    server_name: str | None = None
    alpn: tuple[str, ...] = ()
    if r.left():
        extensions = r.vector(2, "extensions")
        seen: set[int] = set()
        while extensions.left():
            ext_type = extensions.uint(2, "extension type")
            ext = extensions.vector(2, f"extension {ext_type}")
            if ext_type in seen:
                raise ClientHelloError(f"extension {ext_type} appears twice")
            seen.add(ext_type)
            if ext_type == EXT_SERVER_NAME:
                server_name = _server_name(ext)
            elif ext_type == EXT_ALPN:
                alpn = _alpn(ext)
    return ClientHello(server_name=server_name, alpn=alpn, length=consumed)
