"""The HTTP/1 codec's specification: reading and writing heads in both directions, in pure Python.

``fsmfast/_parser.pyx`` implements the same functions with the same signatures; this module
is the specification it is tested against byte for byte. Users import either through
``fsmfast.codec``, which exports the one ``fsmfast._compiled`` selects.

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
- X-Request-Id: one valid client value (``scan_request`` decides) is forwarded as it came;
  otherwise every client X-Request-Id is dropped and the gateway's own id is sent. Connection
  cannot remove it, so the upstream always sees the id the access log shows.
- traceparent (W3C Trace Context): one valid value passes byte for byte; an invalid one, or
  more than one, is dropped together with tracestate, as the spec asks of a participant that
  cannot parse traceparent (it must not trust tracestate then).
"""

from __future__ import annotations

import re as _re  # private: the module's public names are the twin API

from fsmfast.proxy.paths import normalize_target

__all__ = [
    "FRAME_CHUNKED",
    "FRAME_CLOSE",
    "FRAME_NONE",
    "GATEWAY_OWNED",
    "HOP_BY_HOP",
    "ResponseHead",
    "build_request_head",
    "build_response_head",
    "chunk",
    "connection_tokens",
    "normalize_host",
    "normalize_target",
    "parse_content_length",
    "parse_response_head",
    "read_request_head",
    "read_response_head",
    "relay_response_head",
    "response_framing",
    "scan_request",
    "scan_request_line",
    "scan_response_head",
    "valid_host",
    "valid_request_id",
    "valid_traceparent",
]

# Framing of the message being written. The compiled twin has the same values as a C enum in
# fsmfast/_parser.pxd (tests/unit/test_codec_api.py checks they match).
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
GATEWAY_OWNED = frozenset({b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host", b"host", b"x-request-id"})

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


def scan_request(
    headers: list[tuple[bytes, bytes]], max_field: int
) -> tuple[bytes | None, int, bytes | None, bytes | None, bytes | None, tuple[int, str] | None, bytes | None]:
    """The fields of a request head that decide framing and routing, in one pass.

    Returns ``(host, content_length, transfer_encoding, expect, upgrade, problem, request_id)``:
    ``content_length`` is -1 when absent; ``upgrade`` is the first Upgrade value; ``problem``
    is None or ``(status, why)`` for a request that must be refused: 431 for a field longer
    than ``max_field`` (name plus value), 400 for a second Host, a Host that is not a host
    name or address (``valid_host``: an empty one is not), an invalid or conflicting
    Content-Length, a second Transfer-Encoding. Identical duplicate Content-Length values are
    accepted, as RFC 9112 §6.3 allows (llhttp refuses them first); spaces and tabs around a
    Content-Length are not part of its value (RFC 9110 §5.5), the readers leave trailing ones.

    ``request_id`` is the client's X-Request-Id when it sent exactly one and it is valid
    (``valid_request_id``, spaces and tabs around it not counted), else None: the gateway then
    makes one (and ``build_request_head`` drops the client's). None with a problem.
    """
    host: bytes | None = None
    content_length = -1
    te: bytes | None = None
    expect: bytes | None = None
    upgrade: bytes | None = None
    request_id: bytes | None = None
    ids = 0
    for name, value in headers:
        n = len(name)
        if n + len(value) > max_field:
            return host, content_length, te, expect, upgrade, (431, f"a header field exceeds {max_field} bytes"), None
        if n == 4 and name.lower() == b"host":
            if host is not None:
                return host, content_length, te, expect, upgrade, (400, "more than one Host header"), None
            ok = _HOSTS_SEEN.get(value)  # valid_host's memo, read inline: this runs per request
            if not (valid_host(value) if ok is None else ok):
                return host, content_length, te, expect, upgrade, (400, "invalid Host header"), None
            host = value
        elif n == 14 and name.lower() == b"content-length":
            cl = parse_content_length(value.strip(b" \t"))
            if cl < 0:
                return host, content_length, te, expect, upgrade, (400, "invalid Content-Length"), None
            if content_length >= 0 and cl != content_length:
                return host, content_length, te, expect, upgrade, (400, "conflicting Content-Length headers"), None
            content_length = cl
        elif n == 17 and name.lower() == b"transfer-encoding":
            if te is not None:
                return host, content_length, te, expect, upgrade, (400, "more than one Transfer-Encoding header"), None
            te = value
        elif n == 6 and name.lower() == b"expect":
            expect = value
        elif n == 7 and upgrade is None and name.lower() == b"upgrade":
            upgrade = value
        elif n == 12 and name.lower() == b"x-request-id":
            ids += 1
            request_id = value
    if request_id is not None:
        # Two ids are one too many: which would the upstream read? The gateway's replaces both.
        request_id = request_id.strip(b" \t")
        if ids != 1 or not valid_request_id(request_id):
            request_id = None
    return host, content_length, te, expect, upgrade, None, request_id


# X-Request-Id characters: what ids in the wild use (UUIDs, hex, base64 and base64url, Heroku's
# and AWS's ``Root=1-...`` style minus ``;``), and nothing a log line or a shell would read
# specially: no spaces, quotes, ``;``, ``,`` or ``\``.
_REQUEST_ID_CHAR = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._:+/=-")
_REQUEST_ID_MAX = 128


def valid_request_id(value: bytes) -> bool:
    """A client's X-Request-Id the gateway keeps: 1 to 128 characters of ``[A-Za-z0-9._:+/=-]``."""
    return 0 < len(value) <= _REQUEST_ID_MAX and _REQUEST_ID_CHAR.issuperset(value)


# W3C Trace Context traceparent: version-traceid-parentid-flags in lowercase hex; a version above
# 00 may carry more after another "-" (the spec: parse the fields it knows, ignore the rest).
_TRACEPARENT = _re.compile(rb"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}(-.*)?", _re.S)


def valid_traceparent(value: bytes) -> bool:
    """A traceparent the gateway passes on (spaces and tabs around it not counted): version ``ff``
    is invalid, version ``00`` is exactly 55 characters, and an all-zero trace-id or parent-id
    means the header is to be ignored."""
    m = _TRACEPARENT.fullmatch(value.strip(b" \t"))
    if m is None:
        return False
    version, trace_id, parent_id, more = m.groups()
    return version != b"ff" and (more is None or version != b"00") and trace_id != b"0" * 32 and parent_id != b"0" * 16


# valid_host as one pattern: a name (letters, digits, "-", ".", "_") or an "[IPv6]" literal, then
# an optional ":" and 1 to 5 digits (the port, whose range valid_host checks).
_HOST_RE = _re.compile(rb"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+)(?::([0-9]{1,5}))?")
_HOSTS_SEEN: dict[bytes, bool] = {}


def valid_host(value: bytes) -> bool:
    """Host (or an absolute-form authority) is a name, IPv4 or ``[IPv6]`` literal with an
    optional port from 1 to 65535.

    Stricter than RFC 3986's reg-name on purpose: no sub-delimiters, ``%``, ``~`` or ``..``,
    which no DNS name contains and which downstream parsers read differently (``a.com,b.com``).
    No empty value (RFC 9112 §3.2 allows one only for a target without authority, which a
    gateway routing by host cannot serve; nginx answers 400 too) and no empty port or port 0 or
    above 65535, which no client connects to.
    """
    ok = _HOSTS_SEEN.get(value)
    if ok is None:
        m = _HOST_RE.fullmatch(value)
        ok = (
            m is not None
            and (value[0] == 0x5B or b".." not in value)
            and (m.group(1) is None or 1 <= int(m.group(1)) <= 65535)
        )
        if len(_HOSTS_SEEN) < 4096:  # Host values repeat: remember a bounded number of answers
            _HOSTS_SEEN[value] = ok
    return ok


def scan_request_line(data: bytes) -> int:
    """Checks the spacing of the request line at the start of ``data`` (after the empty lines
    RFC 9112 §2.2 lets a server skip): the offset just past its LF when it is complete and
    single-spaced, 0 when its end is not in ``data`` yet, -1 when it has two spaces in a row or
    starts with a space.

    llhttp accepts ``GET  /x  HTTP/1.1``; RFC 9112 §3 asks for single spaces, and a proxy that
    reads a request line differently from the next hop is where smuggling starts.
    """
    end = data.find(b"\n")
    if end > 0 and data[0] != 0x20 and data[0] != 0x0D and data.find(b"  ", 0, end) < 0:
        return end + 1  # the usual case, in two C-level scans
    start = 0
    while data.startswith(b"\r\n", start):
        start += 2
    end = data.find(b"\n", start)
    if end < 0:
        return 0
    if data.find(b"  ", start, end) >= 0 or data.startswith(b" ", start):
        return -1
    return end + 1


# read_request_head: the methods it reads (others go to llhttp), each returned as this one object.
_PLAIN_METHODS = {m: m for m in (b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"OPTIONS", b"PATCH")}
_TCHAR = frozenset(b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
# A request's names, without "_": a head naming one goes to llhttp, whose reader drops that field
# (fsmfast.proxy.downstream), so this reader needs no drop of its own.
_REQUEST_TCHAR = _TCHAR - {0x5F}
# RFC 3986 path and query characters: what every URL parser reads the same way.
_TARGET_CHAR = frozenset(b"-._~!$&'()*+,;=:@/?%0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
_VALUE_CHAR = frozenset(range(0x21, 0x7F)) | {0x20, 0x09}  # VCHAR, SP, HTAB: no obs-text, no CTL
# Headers whose presence sends a request to llhttp: framing and protocol switches it must decide.
_LLHTTP_DECIDES = frozenset({b"transfer-encoding", b"upgrade", b"proxy-connection"})


def read_request_head(
    data: bytes, start: int, max_head: int, max_headers: int
) -> tuple[int, bytes, bytes, bool, list[tuple[bytes, bytes]], bool] | None:
    """A plain request head that is whole in ``data[start:]``, read in one pass; None otherwise.

    Returns ``(end, method, target, http11, headers, keep_alive)``: ``end`` is the offset just
    past the empty line; header values lose their leading spaces and tabs (not the trailing
    ones), and ``keep_alive`` follows the Connection tokens and the version. Every field is
    what llhttp reports for the same bytes (tests/unit/test_plain_heads.py holds it to that).

    "Plain" is a strict subset of HTTP/1.1 on purpose: a common method, an origin-form target
    of RFC 3986 characters, HTTP/1.0 or 1.1, CRLF line ends, token names without ``_``, values
    of visible ASCII, spaces and tabs, at most ``max_headers`` fields and ``max_head`` bytes, at
    most one Content-Length of digits only (spaces and tabs around them allowed), no
    Transfer-Encoding, Upgrade or Proxy-Connection. Anything
    else returns None and goes to llhttp, which decides it as before: this only skips the
    per-header callbacks of the heads every client sends.
    """
    found = _plain_head(data, start, max_head)
    if found is None:
        return None
    head_end, line_end = found
    sp = data.find(b" ", start, line_end)
    method = _PLAIN_METHODS.get(data[start:sp]) if sp > start else None
    target_end = line_end - 9
    if method is None or target_end <= sp + 1 or data[target_end] != 0x20 or data[sp + 1] != 0x2F:
        return None
    version = data[target_end + 1 : line_end]
    if version == b"HTTP/1.1":
        http11 = True
    elif version == b"HTTP/1.0":
        http11 = False
    else:
        return None
    target = data[sp + 1 : target_end]
    if not _TARGET_CHAR.issuperset(target):
        return None
    fields = _plain_fields(data, line_end, head_end, _REQUEST_TCHAR)
    if fields is None or len(fields[0]) > max_headers:
        return None
    headers, close, keep, _length = fields
    return head_end + 4, method, target, http11, headers, (not close) if http11 else keep


class ResponseHead:
    """What ``read_response_head`` read of a head, for the ``relay_response_head`` call that usually
    follows on the same bytes, so that the head is split once, not twice.

    One per upstream connection, reused: a read fills it (or empties it when it returns None), the
    relay of the same ``buf[start:end]`` takes it once and empties it; a relay of anything else
    reads its head itself. The compiled twin keeps C records pointing into ``buf`` instead.
    """

    __slots__ = ("buf", "end", "headers", "reason", "start", "status")

    def __init__(self) -> None:
        self.buf: bytes | None = None  # the bytes read; None when there is nothing to take
        self.start = 0
        self.end = 0  # where the head's CRLF CRLF starts, as relay_response_head's ``end``
        self.status = 0
        self.reason = b""
        self.headers: list[tuple[bytes, bytes]] = []


def read_response_head(
    data: bytes, start: int, max_head: int, head: ResponseHead | None = None
) -> tuple[int, int, int, bool] | None:
    """A plain response head with a body length, whole in ``data[start:]``; None otherwise.

    Returns ``(end, status, content_length, keep_alive)`` as llhttp reports them, ``end`` just
    past the empty line. Plain as for ``read_request_head`` (line ends, names, values, the
    headers left to llhttp), plus: ``HTTP/1.x``, a status of 200-599 other than 204 and 304
    (interim and body-less responses stay with llhttp), a reason of visible ASCII, spaces and
    tabs, and one Content-Length (a response without one ends at EOF or is chunked: llhttp).
    ``head``, if given, is filled for ``relay_response_head`` (emptied when this returns None).
    """
    if head is not None:
        head.buf = None
    found = _plain_head(data, start, max_head)
    if found is None:
        return None
    head_end, line_end = found
    line = data[start:line_end]
    if (
        len(line) < 12
        or not line.startswith(b"HTTP/1.")
        or line[7] not in b"01"
        or line[8] != 0x20
        or not line[9:12].isdigit()
        or (len(line) > 12 and line[12] != 0x20)
        or not _VALUE_CHAR.issuperset(line[13:])
    ):
        return None
    status = int(line[9:12])
    if not 200 <= status <= 599 or status == 204 or status == 304:
        return None
    fields = _plain_fields(data, line_end, head_end, _TCHAR)
    if fields is None or fields[3] < 0:
        return None
    headers, close, keep, length = fields
    if head is not None:
        # As parse_response_head reads them: values trimmed at both ends (these lost their leading OWS).
        head.headers = [(name, value.rstrip(b" \t")) for name, value in headers]
        head.reason = line[13:]
        head.status = status
        head.start = start
        head.end = head_end
        head.buf = data
    return head_end + 4, status, length, (not close) if line[7] == 0x31 else keep


def _plain_head(data: bytes, start: int, max_head: int) -> tuple[int, int] | None:
    """Where the head at ``start`` ends (its CRLF CRLF) and its first line ends, if whole within
    ``max_head`` bytes."""
    if not 0 <= start <= len(data):
        raise ValueError("start outside the buffer")
    head_end = data.find(b"\r\n\r\n", start, start + max_head)
    if head_end < 0:
        return None
    return head_end, data.find(b"\r\n", start, head_end + 2)


def _plain_fields(
    data: bytes, line_end: int, head_end: int, tchar: frozenset[int]
) -> tuple[list[tuple[bytes, bytes]], bool, bool, int] | None:
    """The header lines between the first line and the empty line: ``(headers, close,
    keep_alive, content_length)`` from the Connection tokens and Content-Length (-1 if none);
    None when a line is not plain (names must be all ``tchar``)."""
    headers: list[tuple[bytes, bytes]] = []
    close = keep = False
    length = -1
    for line in data[line_end + 2 : head_end].split(b"\r\n") if head_end > line_end else ():
        colon = line.find(b":")
        name = line[:colon]
        value = line[colon + 1 :].lstrip(b" \t")
        if colon <= 0 or not tchar.issuperset(name) or not _VALUE_CHAR.issuperset(value):
            return None
        lname = name.lower()
        if lname in _LLHTTP_DECIDES:
            return None
        if lname == b"content-length":
            if length >= 0:
                return None
            length = parse_content_length(value.rstrip(b" \t"))
            if length < 0:
                return None
        elif lname == b"connection":
            tokens = connection_tokens([(name, value)])
            if b"upgrade" in tokens:
                return None
            close = close or b"close" in tokens
            keep = keep or b"keep-alive" in tokens
        headers.append((name, value))
    return headers, close, keep, length


def response_framing(headers: list[tuple[bytes, bytes]]) -> tuple[int, bool]:
    """``(content_length, chunked)`` of a response head: -1 when there is no valid length;
    chunked when the last Transfer-Encoding coding is ``chunked``."""
    length = -1
    chunked = False
    for name, value in headers:
        n = len(name)
        if n == 17 and name.lower() == b"transfer-encoding":
            chunked = value.rsplit(b",", 1)[-1].strip(b" \t").lower() == b"chunked"
        elif n == 14 and name.lower() == b"content-length":
            length = parse_content_length(value.strip(b" \t"))
    return length, chunked


def parse_response_head(buf: bytes, start: int, end: int) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
    """``(status, reason, headers)`` of the response head ``buf[start:end]`` (without its
    blank line), which llhttp has already validated.

    The upstream side does not use llhttp's per-header callbacks (a Python call for every
    header); it lets llhttp validate and frame, and reads the head here in one call.
    Values lose surrounding spaces and tabs; an obs-fold continuation line is joined to the
    previous value with one space (RFC 9112 §5.2).
    """
    line_end = buf.find(b"\r\n", start, end)
    if line_end < 0:
        line_end = end
    parts = buf[start:line_end].split(b" ", 2)
    if len(parts) < 2 or not parts[1]:
        raise ValueError("invalid status line")  # as the compiled twin; llhttp never lets one through
    status = int(parts[1])
    reason = parts[2] if len(parts) > 2 else b""
    headers: list[tuple[bytes, bytes]] = []
    pos = line_end + 2
    while pos < end:
        eol = buf.find(b"\r\n", pos, end)
        if eol < 0:
            eol = end
        line = buf[pos:eol]
        pos = eol + 2
        if not line:
            continue
        if line[0] in b" \t":
            if headers:
                name, value = headers[-1]
                headers[-1] = (name, value + b" " + line.strip(b" \t"))
            continue
        colon = line.find(b":")
        if colon <= 0:
            continue
        headers.append((line[:colon], line[colon + 1 :].strip(b" \t")))
    return status, reason, headers


def scan_response_head(buf: bytes, start: int, end: int) -> tuple[int, int, bool]:
    """``(status, content_length, chunked)`` of the response head ``buf[start:end]``: what
    ``parse_response_head`` then ``response_framing`` give, without building the header list
    (the compiled twin reads them off the buffer)."""
    status, _reason, headers = parse_response_head(buf, start, end)
    length, chunked = response_framing(headers)
    return status, length, chunked


def relay_response_head(
    buf: bytes,
    start: int,
    end: int,
    http11: bool,
    framing: int,
    keep_alive: bool,
    body_end: int = 0,
    head: ResponseHead | None = None,
) -> bytes:
    """The client's head for the response head ``buf[start:end]`` when no filter changes its
    headers: ``build_response_head`` over what ``parse_response_head`` reads, written by the
    compiled twin straight from the buffer.

    ``body_end`` past ``end + 4``: the body that followed the head's blank line in the same read,
    ``buf[end + 4:body_end]``, comes after the head in the same bytes (one object to write).
    ``head``: what ``read_response_head`` read, used (and emptied) when it read this very head."""
    if head is not None and head.buf is buf and head.start == start and head.end == end:
        head.buf = None
        status, reason, headers = head.status, head.reason, head.headers
    else:
        status, reason, headers = parse_response_head(buf, start, end)
    out = build_response_head(http11, status, reason, headers, framing, keep_alive)
    if body_end > end + 4:
        if body_end > len(buf):
            raise ValueError("body_end outside the buffer")
        out += buf[end + 4 : body_end]
    return out


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
    rid_prefix: bytes,
    rid: int,
) -> bytes:
    """The HTTP/1.1 request head sent upstream, ending with the blank line.

    ``host`` is the client's Host value (for X-Forwarded-Host); ``framing`` is FRAME_NONE,
    FRAME_CHUNKED or a Content-Length.

    ``rid`` 0 forwards the client's X-Request-Id as it came (``scan_request`` found one valid
    one). Otherwise the gateway made the id: the client's X-Request-Id headers are dropped and
    ``X-Request-Id: <rid_prefix><rid as 16 lowercase hex digits>`` is sent; ``rid`` is an
    unsigned 64-bit number. A traceparent passes unless ``valid_traceparent`` refuses it or there
    are several; then every traceparent and tracestate is dropped.
    """
    if not 0 <= rid < 1 << 64:
        raise OverflowError("rid is not an unsigned 64-bit number")
    listed = connection_tokens(headers)
    parents = [value for name, value in headers if len(name) == 11 and name.lower() == b"traceparent"]
    untraced = bool(parents) and (len(parents) > 1 or not valid_traceparent(parents[0]))
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
        if rid and lname == b"x-request-id":
            continue
        if lname in listed and lname not in GATEWAY_OWNED:
            continue
        if untraced and (lname == b"traceparent" or lname == b"tracestate"):
            continue
        out += (name, b": ", value, b"\r\n")
    xff.append(client_ip)
    out += (b"X-Forwarded-For: ", b", ".join(xff), b"\r\n")
    out += (b"X-Forwarded-Proto: ", proto, b"\r\n")
    if host:
        out += (b"X-Forwarded-Host: ", host, b"\r\n")
    if rid:
        out += (b"X-Request-Id: ", rid_prefix, b"%016x" % rid, b"\r\n")
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


def normalize_host(value: bytes) -> bytes:
    """Host header -> lower-case name without port, for matching only.

    ``[v6]:port`` keeps its brackets; a trailing dot is dropped (``foo.example.com.``).
    """
    if value.startswith(b"["):
        end = value.find(b"]")
        host = value[: end + 1] if end > 0 else value
    else:
        colon = value.rfind(b":")
        host = value[:colon] if colon >= 0 else value
    if host.endswith(b"."):
        host = host[:-1]
    return host.lower()
