"""Header rewriting for both directions: the pure-Python reference.

``fsmfast/_parser.pyx`` implements the same functions with the same signatures; this module
is the specification it is tested against byte for byte (``fsmfast._accel`` picks one).

Rules (RFC 9110 §7.6.1, RFC 9112 §6-7):
- hop-by-hop headers never cross the proxy: Connection and every header it names,
  Keep-Alive, TE, Trailer, Upgrade, Proxy-Connection. Transfer-Encoding and Content-Length
  are dropped too because the proxy re-frames each message itself.
- ``Connection`` may not remove what the gateway adds: a client sending
  ``Connection: X-Forwarded-For`` must not strip the gateway's own X-Forwarded-For.
- X-Forwarded-For: every client value is kept (joined with ", ") and the peer address is
  appended. X-Forwarded-Proto and X-Forwarded-Host are set (replaced), not appended: they
  describe this hop's client side, which only the gateway knows.
- Host is forwarded as the client sent it; header order and duplicates are preserved.
"""

from __future__ import annotations

# Framing of the message being written, shared with the Cython twin.
FRAME_NONE = -1  # no body and no framing header (GET without body, 204, 304)
FRAME_CHUNKED = -2  # Transfer-Encoding: chunked
FRAME_CLOSE = -3  # body delimited by closing the connection (HTTP/1.0 clients)
# n >= 0: Content-Length: n

HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"proxy-connection",
        b"content-length",
    }
)
# Headers the gateway sets on requests; a client cannot remove them through Connection.
GATEWAY_OWNED = frozenset({b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host", b"host"})

_DIGITS = frozenset(b"0123456789")


def parse_content_length(value: bytes) -> int:
    """Strict Content-Length: 1*DIGIT, nothing else (no sign, space, comma list, ``_``).

    Returns -1 when invalid. ``int()`` alone would accept ``+5``, ``1_0`` and `` 7 ``.
    """
    if not value or len(value) > 18:
        return -1
    for c in value:
        if c not in _DIGITS:
            return -1
    return int(value)


def connection_tokens(headers: list[tuple[bytes, bytes]]) -> frozenset[bytes]:
    """Lower-cased tokens of every Connection header (it may repeat)."""
    tokens: set[bytes] = set()
    for name, value in headers:
        if name.lower() == b"connection":
            for token in value.split(b","):
                token = token.strip(b" \t").lower()
                if token:
                    tokens.add(token)
    return frozenset(tokens)


def _framing_line(framing: int) -> bytes:
    if framing >= 0:
        return b"Content-Length: %d\r\n" % framing
    if framing == FRAME_CHUNKED:
        return b"Transfer-Encoding: chunked\r\n"
    return b""


def build_request_head(
    method: bytes,
    target: bytes,
    headers: list[tuple[bytes, bytes]],
    client_ip: bytes,
    proto: bytes,
    host: bytes,
    framing: int,
) -> bytes:
    """The HTTP/1.1 request head sent upstream, ending with the blank line.

    ``host`` is the client's Host value (for X-Forwarded-Host); ``framing`` is FRAME_NONE,
    FRAME_CHUNKED or a Content-Length.
    """
    listed = connection_tokens(headers)
    out = [method, b" ", target, b" HTTP/1.1\r\n"]
    xff: list[bytes] = []
    for name, value in headers:
        lname = name.lower()
        if lname == b"x-forwarded-for":
            xff.append(value)
            continue
        if lname in HOP_BY_HOP or lname == b"expect":
            continue
        if lname == b"x-forwarded-proto" or lname == b"x-forwarded-host":
            continue
        if lname in listed and lname not in GATEWAY_OWNED:
            continue
        out += (name, b": ", value, b"\r\n")
    xff.append(client_ip)
    out += (b"X-Forwarded-For: ", b", ".join(xff), b"\r\n")
    out += (b"X-Forwarded-Proto: ", proto, b"\r\n")
    if host:
        out += (b"X-Forwarded-Host: ", host, b"\r\n")
    out.append(_framing_line(framing))
    out.append(b"\r\n")
    return b"".join(out)


def build_response_head(
    http11: bool,
    status: int,
    reason: bytes,
    headers: list[tuple[bytes, bytes]],
    framing: int,
    keep_alive: bool,
) -> bytes:
    """The response head sent to the client, ending with the blank line.

    ``http11`` is the client's version; a 1.0 client gets ``HTTP/1.0`` and an explicit
    ``Connection: keep-alive`` when the connection stays open (it is not its default).
    """
    listed = connection_tokens(headers)
    out = [b"HTTP/1.1 " if http11 else b"HTTP/1.0 ", b"%d" % status, b" ", reason, b"\r\n"]
    for name, value in headers:
        lname = name.lower()
        if lname in HOP_BY_HOP or lname in listed:
            continue
        out += (name, b": ", value, b"\r\n")
    out.append(_framing_line(framing))
    if not keep_alive:
        out.append(b"Connection: close\r\n")
    elif not http11:
        out.append(b"Connection: keep-alive\r\n")
    out.append(b"\r\n")
    return b"".join(out)


def chunk(data: bytes) -> list[bytes]:
    """One chunk of chunked transfer coding, as pieces for ``writelines``."""
    return [b"%x\r\n" % len(data), data, b"\r\n"]
