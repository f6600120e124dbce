"""A real HTTP/1.1 upstream and raw-socket HTTP client helpers for data-plane tests.

The upstream is written with plain sockets and threads and parses HTTP itself, so the
tests control framing byte for byte (no http.server quirks such as adding headers,
lowercasing, or reading bodies behind our back). It records every request head it
received, which lets a test assert what reached the upstream and, as importantly, what
did not.

Routes (any method; HEAD gets the same head without a body):

- ``/echo``: JSON of the request as received (method, target, version, headers in order,
  body length and sha256);
- ``/bytes/N``: N bytes of ``pattern_chunks`` with Content-Length, streamed in 64 KiB pieces;
- ``/chunked/N``: the same bytes with ``Transfer-Encoding: chunked``;
- ``/close/N``: the same bytes delimited by closing the connection (no length, no chunking);
- ``/upload``: JSON ``{length, sha256}`` of the request body, read as a stream;
- ``/slow?s=X``: answers 200 after X seconds;
- ``/status/N``: status N with an empty body (no Content-Length for 204 and 304);
- ``/header?Name=value&...``: 200 with the query's pairs added as response headers, in order;
- ``/hang-up``: closes the connection without answering;
- ``/garbage``: writes ``not http`` and closes;
- ``/close-after?s=X``: answers keep-alive, then closes the idle connection after X seconds;
- ``/drop-next``: answers keep-alive, then drops the NEXT request on this connection
  unanswered (a server closing a keep-alive connection just as a request arrives).

With ``echo_all=True`` every other path answers like ``/echo`` (what the routing tests use to
see the path, Host and headers that reached the upstream), instead of 404.

Every response carries ``X-Upstream: <name>`` so routing tests can tell upstreams apart.
"""

from __future__ import annotations

import hashlib
import json
import random
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from http import HTTPStatus
from typing import Any, NamedTuple
from urllib.parse import parse_qsl, urlsplit

PIECE = 64 * 1024
# The body pattern repeats with a prime period, so a piece that is duplicated, dropped or
# shifted by the proxy changes the digest even when the lengths still add up.
_PATTERN_LEN = 65521
_PATTERN = random.Random(0x5EED).randbytes(_PATTERN_LEN)
_PATTERN3 = _PATTERN * 3

# A request head larger than this is refused by the upstream; the gateway's own limit is
# 64 KiB, so anything bigger reaching us is already a gateway bug worth seeing as a 431.
_MAX_HEAD = 1024 * 1024


def pattern_chunks(n: int, piece: int = PIECE, offset: int = 0) -> Iterator[bytes]:
    """Yield the first ``n`` bytes of the test pattern (from ``offset``) in ``piece``-sized bytes."""
    if not 0 < piece <= 2 * _PATTERN_LEN:
        raise ValueError(f"piece must be in 1..{2 * _PATTERN_LEN}")
    pos = offset
    end = offset + n
    while pos < end:
        k = min(piece, end - pos)
        start = pos % _PATTERN_LEN
        yield _PATTERN3[start : start + k]
        pos += k


def pattern_bytes(n: int) -> bytes:
    """The pattern as one object: only for small ``n``."""
    return b"".join(pattern_chunks(n))


@lru_cache(maxsize=32)
def pattern_sha256(n: int) -> str:
    h = hashlib.sha256()
    for piece in pattern_chunks(n, 2 * _PATTERN_LEN):
        h.update(piece)
    return h.hexdigest()


class Request(NamedTuple):
    """One request head as the upstream received it (names keep their case and order)."""

    method: str
    target: str
    headers: list[tuple[str, str]]
    body_len: int

    def header_all(self, name: str) -> list[str]:
        low = name.lower()
        return [v for k, v in self.headers if k.lower() == low]

    def header(self, name: str) -> str | None:
        values = self.header_all(name)
        return values[0] if values else None


class _BadRequest(Exception):
    pass


class _Closed(Exception):
    """The peer closed (or reset) the connection."""


class _ConnReader:
    """Buffered reads from one accepted socket."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = bytearray()

    def _fill(self) -> bool:
        try:
            data = self.sock.recv(256 * 1024)
        except (ConnectionError, OSError):
            return False
        if not data:
            return False
        self.buf += data
        return True

    def read_head(self) -> bytes | None:
        """The bytes of one head up to and including CRLFCRLF; None on a clean EOF."""
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end >= 0:
                head = bytes(self.buf[: end + 4])
                del self.buf[: end + 4]
                return head
            if len(self.buf) > _MAX_HEAD:
                raise _BadRequest("head too large")
            if not self._fill():
                if self.buf:
                    raise _Closed()
                return None

    def read_line(self, limit: int = 65536) -> bytes:
        while True:
            end = self.buf.find(b"\r\n")
            if end >= 0:
                line = bytes(self.buf[:end])
                del self.buf[: end + 2]
                return line
            if len(self.buf) > limit:
                raise _BadRequest("line too long")
            if not self._fill():
                raise _Closed()

    def read_into(self, n: int, sink: Callable[[bytes], None]) -> None:
        """Feed exactly ``n`` body bytes to ``sink`` without holding them all."""
        while n > 0:
            if not self.buf and not self._fill():
                raise _Closed()
            k = min(n, len(self.buf))
            sink(bytes(self.buf[:k]))
            del self.buf[:k]
            n -= k


# Paths with their own behaviour, which echo_all leaves alone.
_ROUTES = frozenset({"/upload", "/slow", "/header", "/hang-up", "/garbage", "/close-after", "/drop-next", "/overlong"})
_PREFIXES = ("/bytes/", "/chunked/", "/close/", "/status/")


def _is_digits(s: str) -> bool:
    # str.isdigit() accepts non-ASCII digits; int() accepts "+", "_" and spaces.
    return bool(s) and all("0" <= c <= "9" for c in s)


def _tokens(headers: list[tuple[str, str]], name: str) -> list[str]:
    low = name.lower()
    out: list[str] = []
    for k, v in headers:
        if k.lower() == low:
            out.extend(t.strip().lower() for t in v.split(",") if t.strip())
    return out


class Upstream:
    """Threaded HTTP/1.1 origin on 127.0.0.1:<ephemeral>, used as a context manager."""

    def __init__(self, name: str = "upstream", host: str = "127.0.0.1", echo_all: bool = False) -> None:
        self.name = name
        self.host = host
        self.echo_all = echo_all
        self.port = 0
        self.requests: list[Request] = []
        self._connections = 0
        self._bytes_sent = 0
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._listener: socket.socket | None = None
        self._open: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []
        # Misbehaviour a test switches on while traffic runs (resilience tests): every request
        # answered with this status and an empty body, or answered after this many seconds.
        self.fail_status: int | None = None
        self.delay = 0.0

    # -- observation -------------------------------------------------------------------

    @property
    def connections(self) -> int:
        """Connections accepted so far."""
        return self._connections

    @property
    def bytes_sent(self) -> int:
        """Response body bytes written by the streaming routes so far."""
        return self._bytes_sent

    def requests_for(self, path_prefix: str) -> list[Request]:
        return [r for r in list(self.requests) if r.target.startswith(path_prefix)]

    def clear(self) -> None:
        with self._lock:
            self.requests.clear()

    # -- lifecycle -----------------------------------------------------------------------

    def __enter__(self) -> Upstream:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, 0))
        sock.listen(512)
        # Polling accept lets stop() end the thread without relying on close() waking accept().
        sock.settimeout(0.1)
        self._listener = sock
        self.port = sock.getsockname()[1]
        t = threading.Thread(target=self._accept_loop, name=f"upstream-{self.name}", daemon=True)
        t.start()
        self._threads.append(t)

    def stop(self) -> None:
        self._stopping.set()
        if self._listener is not None:
            self._listener.close()
        with self._lock:
            socks = list(self._open)
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for t in list(self._threads):
            t.join(timeout=2)

    def _accept_loop(self) -> None:
        assert self._listener is not None
        while not self._stopping.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.settimeout(300)
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                self._connections += 1
                self._open.add(conn)
            t = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            t.start()
            with self._lock:
                self._threads = [x for x in self._threads if x.is_alive()]
                self._threads.append(t)

    # -- one connection ------------------------------------------------------------------

    def _serve(self, conn: socket.socket) -> None:
        reader = _ConnReader(conn)
        state: dict[str, Any] = {"drop_next": False}
        try:
            while not self._stopping.is_set():
                try:
                    if not self._one(conn, reader, state):
                        break
                except _BadRequest as e:
                    self._send_simple(conn, 400, f"upstream: {e}\n", keep_alive=False)
                    break
                except (_Closed, ConnectionError, TimeoutError, OSError):
                    break
        finally:
            with self._lock:
                self._open.discard(conn)
            try:
                conn.close()
            except OSError:
                pass

    def _record(self, req: Request) -> None:
        with self._lock:
            self.requests.append(req)

    def _one(self, conn: socket.socket, reader: _ConnReader, state: dict[str, Any]) -> bool:
        """Serve one request; False when the connection must close."""
        head = reader.read_head()
        if head is None:
            return False
        lines = head[:-4].decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            self._record(Request("", lines[0], [], 0))
            raise _BadRequest(f"bad request line {lines[0]!r}")
        method, target, version = parts
        headers: list[tuple[str, str]] = []
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if not sep or not name or name != name.strip():
                self._record(Request(method, target, headers, 0))
                raise _BadRequest(f"bad header line {line!r}")
            headers.append((name, value.strip(" \t")))

        body_len = 0
        hasher = hashlib.sha256()

        def sink(b: bytes) -> None:
            nonlocal body_len
            body_len += len(b)
            hasher.update(b)

        te = _tokens(headers, "transfer-encoding")
        cls = [v for k, v in headers if k.lower() == "content-length"]
        if te:
            if te[-1] != "chunked" or cls:
                self._record(Request(method, target, headers, 0))
                raise _BadRequest("unsupported or ambiguous framing")
            self._read_chunked(reader, sink)
        elif cls:
            if len(set(cls)) != 1 or not _is_digits(cls[0]):
                self._record(Request(method, target, headers, 0))
                raise _BadRequest(f"bad Content-Length {cls!r}")
            reader.read_into(int(cls[0]), sink)
        self._record(Request(method, target, headers, body_len))

        if state["drop_next"]:
            # The request arrived on a connection we already decided to close.
            return False
        if self.delay and self._stopping.wait(self.delay):
            return False
        fail = self.fail_status
        if fail is not None:
            self._send_head(conn, fail, [("Content-Length", "0")])
            return True

        conn_tokens = _tokens(headers, "connection")
        if version == "HTTP/1.1":
            keep = "close" not in conn_tokens
        else:
            keep = "keep-alive" in conn_tokens
        ka_header = [("Connection", "keep-alive")] if keep and version != "HTTP/1.1" else []
        if not keep:
            ka_header = [("Connection", "close")]
        is_head = method == "HEAD"

        url = urlsplit(target)
        path = url.path
        query = parse_qsl(url.query, keep_blank_values=True)

        if path == "/echo" or (self.echo_all and path not in _ROUTES and not path.startswith(_PREFIXES)):
            payload = {
                "upstream": self.name,
                "method": method,
                "target": target,
                "version": version,
                "headers": [[k, v] for k, v in headers],
                "body_length": body_len,
                "body_sha256": hasher.hexdigest(),
            }
            self._send_body(conn, 200, json.dumps(payload).encode(), ka_header, is_head, "application/json")
            return keep
        if path == "/upload":
            payload = {"upstream": self.name, "length": body_len, "sha256": hasher.hexdigest()}
            self._send_body(conn, 200, json.dumps(payload).encode(), ka_header, is_head, "application/json")
            return keep
        if path.startswith("/bytes/") and _is_digits(path[7:]):
            n = int(path[7:])
            self._send_head(
                conn, 200, [("Content-Type", "application/octet-stream"), ("Content-Length", str(n)), *ka_header]
            )
            if not is_head:
                for piece in pattern_chunks(n):
                    conn.sendall(piece)
                    self._count(len(piece))
            return keep
        if path.startswith("/chunked/") and _is_digits(path[9:]):
            n = int(path[9:])
            self._send_head(
                conn, 200, [("Content-Type", "application/octet-stream"), ("Transfer-Encoding", "chunked"), *ka_header]
            )
            if not is_head:
                for piece in pattern_chunks(n):
                    conn.sendall(b"%x\r\n%b\r\n" % (len(piece), piece))
                    self._count(len(piece))
                conn.sendall(b"0\r\n\r\n")
            return keep
        if path.startswith("/close/") and _is_digits(path[7:]):
            n = int(path[7:])
            self._send_head(conn, 200, [("Content-Type", "application/octet-stream"), ("Connection", "close")])
            if not is_head:
                for piece in pattern_chunks(n):
                    conn.sendall(piece)
                    self._count(len(piece))
            return False
        if path == "/slow":
            delay = float(dict(query).get("s", "1"))
            if self._stopping.wait(delay):
                return False
            self._send_body(conn, 200, b"slow\n", ka_header, is_head)
            return keep
        if path.startswith("/status/") and _is_digits(path[8:]):
            status = int(path[8:])
            if status < 200:
                raise _BadRequest("1xx is not a final status")
            extra = [] if status in (204, 304) else [("Content-Length", "0")]
            self._send_head(conn, status, extra + ka_header)
            return keep
        if path == "/header":
            extra = list(query)
            self._send_body(conn, 200, b"ok\n", extra + ka_header, is_head)
            return keep and "close" not in _tokens(extra, "connection")
        if path == "/hang-up":
            return False
        if path == "/garbage":
            conn.sendall(b"not http\r\n\r\n")
            return False
        if path == "/close-after":
            delay = float(dict(query).get("s", "0.1"))
            self._send_body(conn, 200, b"ok\n", [], is_head)
            # Close while idle: the gateway's pooled connection goes stale.
            self._stopping.wait(delay)
            return False
        if path == "/overlong":
            # A whole response and then bytes nobody asked for, in one write; the connection stays
            # open, as a confused server's would.
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nhello\nJUNK")
            return True
        if path == "/drop-next":
            self._send_body(conn, 200, b"ok\n", [], is_head)
            state["drop_next"] = True
            return True
        self._send_body(conn, 404, b"no such upstream route\n", ka_header, is_head)
        return keep

    def _read_chunked(self, reader: _ConnReader, sink: Callable[[bytes], None]) -> None:
        while True:
            line = reader.read_line().decode("latin-1")
            size_s = line.split(";", 1)[0].strip(" \t")
            if not size_s or not all(c in "0123456789abcdefABCDEF" for c in size_s):
                raise _BadRequest(f"bad chunk size {line!r}")
            size = int(size_s, 16)
            if size == 0:
                while reader.read_line():  # trailers, up to the empty line
                    pass
                return
            reader.read_into(size, sink)
            if reader.read_line() != b"":
                raise _BadRequest("chunk not followed by CRLF")

    def _count(self, n: int) -> None:
        with self._lock:
            self._bytes_sent += n

    def _send_head(self, conn: socket.socket, status: int, headers: list[tuple[str, str]]) -> None:
        try:
            reason = HTTPStatus(status).phrase
        except ValueError:
            reason = "Unknown"
        out = [f"HTTP/1.1 {status} {reason}", f"X-Upstream: {self.name}"]
        out += [f"{k}: {v}" for k, v in headers]
        conn.sendall(("\r\n".join(out) + "\r\n\r\n").encode("latin-1"))

    def _send_body(
        self,
        conn: socket.socket,
        status: int,
        body: bytes,
        headers: list[tuple[str, str]],
        is_head: bool = False,
        content_type: str = "text/plain",
    ) -> None:
        head = [("Content-Type", content_type), ("Content-Length", str(len(body))), *headers]
        self._send_head(conn, status, head)
        if not is_head:
            conn.sendall(body)

    def _send_simple(self, conn: socket.socket, status: int, text: str, keep_alive: bool) -> None:
        try:
            self._send_body(conn, status, text.encode(), [] if keep_alive else [("Connection", "close")])
        except OSError:
            pass


class TlsServer:
    """A stdlib TLS server that never answers HTTP: plain text sent to it is a handshake failure.

    Stands in for "an upstream that speaks TLS while the gateway speaks plaintext".
    """

    def __init__(self, certfile: str, keyfile: str) -> None:
        self._ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._ctx.load_cert_chain(certfile, keyfile)
        self._stopping = threading.Event()
        self._sock = socket.socket()
        self.port = 0
        self.handshake_errors = 0

    def __enter__(self) -> TlsServer:
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(64)
        self._sock.settimeout(0.1)
        self.port = self._sock.getsockname()[1]
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stopping.set()
        self._thread.join(timeout=2)
        self._sock.close()

    def _loop(self) -> None:
        while not self._stopping.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            conn.settimeout(5)
            try:
                with self._ctx.wrap_socket(conn, server_side=True) as tls:
                    tls.recv(1)
            except (ssl.SSLError, OSError):
                self.handshake_errors += 1
            finally:
                conn.close()


# -- client side ---------------------------------------------------------------------------


@dataclass
class Response:
    version: str
    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes = b""
    # False when the connection ended before the framing said the body was over.
    complete: bool = True
    # How the body was delimited: "length", "chunked", "close" or "none".
    framing: str = "none"
    trailers: list[tuple[str, str]] = field(default_factory=list)

    def header_all(self, name: str) -> list[str]:
        low = name.lower()
        return [v for k, v in self.headers if k.lower() == low]

    def header(self, name: str) -> str | None:
        values = self.header_all(name)
        return values[0] if values else None

    def tokens(self, name: str) -> list[str]:
        return _tokens(self.headers, name)

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


class ProtocolError(AssertionError):
    """The bytes from the server are not HTTP/1.x responses."""


class ResponseReader:
    """Incremental HTTP/1.x response parser over any ``recv() -> bytes`` (b"" means EOF)."""

    def __init__(self, recv: Callable[[], bytes]) -> None:
        self._recv = recv
        self.buf = bytearray()
        self.eof = False

    def _fill(self) -> bool:
        if self.eof:
            return False
        data = self._recv()
        if not data:
            self.eof = True
            return False
        self.buf += data
        return True

    def _line(self) -> bytes | None:
        while True:
            end = self.buf.find(b"\r\n")
            if end >= 0:
                line = bytes(self.buf[:end])
                del self.buf[: end + 2]
                return line
            if not self._fill():
                return None

    def read_head(self) -> Response | None:
        """Status line and headers; None on EOF before any byte of a new response."""
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end >= 0:
                break
            if not self._fill():
                if self.buf:
                    raise ProtocolError(f"truncated response head: {bytes(self.buf[:200])!r}")
                return None
        raw = bytes(self.buf[:end]).decode("latin-1")
        del self.buf[: end + 4]
        lines = raw.split("\r\n")
        parts = lines[0].split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not _is_digits(parts[1]):
            raise ProtocolError(f"not an HTTP/1.x status line: {lines[0][:200]!r}")
        headers = []
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if not sep:
                raise ProtocolError(f"bad response header line {line!r}")
            headers.append((name, value.strip(" \t")))
        return Response(parts[0], int(parts[1]), parts[2] if len(parts) > 2 else "", headers)

    def iter_body(self, resp: Response, method: str = "GET") -> Iterator[bytes]:
        """Yield body pieces; sets ``resp.framing`` and ``resp.complete``."""
        if method == "HEAD" or resp.status < 200 or resp.status in (204, 304):
            resp.framing = "none"
            return
        te = resp.tokens("transfer-encoding")
        cl = resp.header_all("content-length")
        if te:
            if te[-1] != "chunked":
                raise ProtocolError(f"unsupported response Transfer-Encoding {te!r}")
            resp.framing = "chunked"
            yield from self._iter_chunked(resp)
            return
        if cl:
            if len(set(cl)) != 1 or not _is_digits(cl[0]):
                raise ProtocolError(f"bad response Content-Length {cl!r}")
            resp.framing = "length"
            left = int(cl[0])
            while left > 0:
                if not self.buf and not self._fill():
                    resp.complete = False
                    return
                k = min(left, len(self.buf))
                yield bytes(self.buf[:k])
                del self.buf[:k]
                left -= k
            return
        resp.framing = "close"
        while True:
            if self.buf:
                yield bytes(self.buf)
                self.buf.clear()
            if not self._fill():
                return

    def _iter_chunked(self, resp: Response) -> Iterator[bytes]:
        while True:
            line = self._line()
            if line is None:
                resp.complete = False
                return
            size_s = line.split(b";", 1)[0].strip(b" \t")
            if not size_s or not all(c in b"0123456789abcdefABCDEF" for c in size_s):
                raise ProtocolError(f"bad chunk size line {line[:100]!r}")
            left = int(size_s, 16)
            if left == 0:
                while True:
                    t = self._line()
                    if t is None:
                        resp.complete = False
                        return
                    if not t:
                        return
                    name, _, value = t.decode("latin-1").partition(":")
                    resp.trailers.append((name, value.strip(" \t")))
            while left > 0:
                if not self.buf and not self._fill():
                    resp.complete = False
                    return
                k = min(left, len(self.buf))
                yield bytes(self.buf[:k])
                del self.buf[:k]
                left -= k
            crlf = self._line()
            if crlf is None:
                resp.complete = False
                return
            if crlf != b"":
                raise ProtocolError("chunk data not followed by CRLF")

    def read_response(self, method: str = "GET", interim: bool = False) -> Response | None:
        """One complete response; 1xx interim responses (100 Continue) are skipped unless ``interim``."""
        while True:
            resp = self.read_head()
            if resp is None:
                return None
            resp.body = b"".join(self.iter_body(resp, method))
            if interim or not 100 <= resp.status < 200 or resp.status == 101:
                return resp


def parse_responses(data: bytes, methods: Iterable[str] = ()) -> list[Response]:
    """Every response in ``data`` (the whole byte stream a server sent on one connection).

    ``methods`` gives the request method of each response in order (HEAD responses have no
    body); missing entries mean GET.
    """
    chunks = [data]
    reader = ResponseReader(lambda: chunks.pop() if chunks else b"")
    todo = list(methods)
    out: list[Response] = []
    while True:
        method = todo.pop(0) if todo else "GET"
        resp = reader.read_response(method)
        if resp is None:
            return out
        out.append(resp)


def parse_response(data: bytes, method: str = "GET") -> Response:
    """Exactly one response; anything after it is an error."""
    responses = parse_responses(data, [method])
    if len(responses) != 1:
        raise ProtocolError(f"expected one response, got {len(responses)}: {data[:300]!r}")
    return responses[0]


def raw_exchange(
    port: int, data: bytes, timeout: float = 5.0, host: str = "127.0.0.1", split: Iterable[int] = ()
) -> tuple[bytes, bool]:
    """Send ``data`` and read until the server closes or ``timeout`` passes.

    Returns (everything received, whether the server closed the connection). Nothing is
    half-closed: a server that waits for more input keeps the connection open. ``split``: offsets
    in ``data`` where the client pauses (0.1 s, no Nagle), so that the server reads the bytes
    between them separately.
    """
    deadline = time.monotonic() + timeout
    received = bytearray()
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            at = 0
            for cut in split:
                sock.sendall(data[at:cut])
                at = cut
                time.sleep(0.1)
            sock.sendall(data[at:])
        except (BrokenPipeError, ConnectionResetError):
            # The server may refuse early (e.g. 431) and close before we finished sending;
            # its answer can still be waiting in our receive queue.
            pass
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return bytes(received), False
            sock.settimeout(left)
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                return bytes(received), False
            except ConnectionResetError:
                return bytes(received), True
            if not chunk:
                return bytes(received), True
            received += chunk


def raw_http(port: int, data: bytes, timeout: float = 5.0) -> bytes:
    """Send raw bytes to 127.0.0.1:port; everything received until close or timeout."""
    return raw_exchange(port, data, timeout)[0]


def build_request(
    method: str,
    target: str,
    headers: Iterable[tuple[str, str]] = (),
    body: bytes = b"",
    version: str = "HTTP/1.1",
) -> bytes:
    """Serialise a request exactly as given (no headers are added)."""
    lines = [f"{method} {target} {version}"] + [f"{k}: {v}" for k, v in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


class Client:
    """One client connection with explicit control of every byte sent."""

    def __init__(self, port: int, host: str = "127.0.0.1", timeout: float = 10.0, rcvbuf: int | None = None) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:
            # Set before connect so the advertised window is small from the start.
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(timeout)
        self.sock.connect((host, port))
        self.reader = ResponseReader(self._recv)
        self.recv_size = 65536

    def _recv(self) -> bytes:
        try:
            return self.sock.recv(self.recv_size)
        except ConnectionResetError:
            return b""

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def request(
        self,
        method: str,
        target: str,
        headers: Iterable[tuple[str, str]] = (),
        body: bytes = b"",
        version: str = "HTTP/1.1",
    ) -> Response:
        self.send(build_request(method, target, headers, body, version))
        return self.read_response(method)

    def read_response(self, method: str = "GET") -> Response:
        resp = self.reader.read_response(method)
        if resp is None:
            raise ProtocolError("connection closed before a response")
        return resp

    def read_head(self) -> Response:
        resp = self.reader.read_head()
        if resp is None:
            raise ProtocolError("connection closed before a response")
        return resp

    def iter_body(self, resp: Response, method: str = "GET") -> Iterator[bytes]:
        return self.reader.iter_body(resp, method)

    def closed_by_peer(self, wait: float = 2.0) -> bool:
        """True when the server closes within ``wait`` seconds with no further bytes."""
        if self.reader.buf:
            return False
        old = self.sock.gettimeout()
        self.sock.settimeout(wait)
        try:
            data = self.sock.recv(1)
        except TimeoutError:
            return False
        except ConnectionResetError:
            return True
        finally:
            self.sock.settimeout(old)
        if data:
            self.reader.buf += data
            return False
        return True
