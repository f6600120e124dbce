"""The master's admin listener: a small HTTP/1.1 server driven by the master's selector.

The master has no event loop (uvloop is not fork-safe, and a master that only forks, waits and
signals has little that can break), so this server is a set of non-blocking sockets registered
in the master's ``selectors`` loop: accept, read one request head, answer, close. Every answer
closes the connection: a scraper or a probe sends one request per connection anyway, and a
master that keeps no client state between loop turns cannot be held by a slow one.

What is asked for is decided elsewhere (``fsmfast.admin.endpoints``): this module only parses a
request head into a :class:`Request` and writes back the :class:`Response` it gets. A client gets
5 s to send its head (at most 8 KiB) and 10 s to take the answer; at most 64 are served at once.
"""

from __future__ import annotations

import contextlib
import errno
import selectors
import socket
import time
from collections.abc import Callable
from urllib.parse import parse_qs, urlsplit

import msgspec

from fsmfast import logs
from fsmfast.master import sockets

log = logs.get_logger("admin")

HEAD_LIMIT = 8192
READ_TIMEOUT = 5.0
WRITE_TIMEOUT = 10.0
MAX_CLIENTS = 64

_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


class Request(msgspec.Struct, frozen=True):
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-case names; a repeated header keeps its last value


class Response(msgspec.Struct, frozen=True):
    status: int
    body: bytes
    content_type: str = "text/plain; charset=utf-8"
    headers: tuple[tuple[str, str], ...] = ()


Handler = Callable[[Request], Response]


class _Client:
    __slots__ = ("deadline", "inbuf", "out", "sock")

    def __init__(self, sock: socket.socket, now: float) -> None:
        self.sock = sock
        self.inbuf = b""
        self.out = b""  # non-empty once answered: the rest of the response to write
        self.deadline = now + READ_TIMEOUT


class AdminServer:
    """Serves ``handler`` on ``host:port``; the owner calls :meth:`expire` once per loop turn."""

    def __init__(self, selector: selectors.BaseSelector, host: str, port: int, handler: Handler) -> None:
        self.selector = selector
        self.handler = handler
        self.sock = sockets.exclusive(host, port, 64)  # BindError names whoever holds the port
        self.sock.setblocking(False)
        self.address = sockets.format_address(host, self.sock.getsockname()[1])
        self.clients: dict[int, _Client] = {}
        selector.register(self.sock, selectors.EVENT_READ, self._accept)

    def close(self) -> None:
        """Close the listener and every client (the master's stop, and a forked worker's copies)."""
        for client in list(self.clients.values()):
            self._drop(client)
        with contextlib.suppress(KeyError, ValueError):
            self.selector.unregister(self.sock)
        self.sock.close()

    def close_in_child(self) -> None:
        """In a freshly forked child: close our descriptors without touching the shared selector."""
        for client in self.clients.values():
            client.sock.close()
        self.clients.clear()
        self.sock.close()

    def expire(self, now: float) -> None:
        for client in [c for c in self.clients.values() if now > c.deadline]:
            self._drop(client)

    # -- events ----------------------------------------------------------------------------

    def _accept(self) -> None:
        now = time.monotonic()
        for _ in range(16):
            try:
                sock, _addr = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                if e.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    return  # out of descriptors: the next turn tries again
                raise
            if len(self.clients) >= MAX_CLIENTS:
                sock.close()
                continue
            sock.setblocking(False)
            client = _Client(sock, now)
            self.clients[sock.fileno()] = client
            self.selector.register(sock, selectors.EVENT_READ, lambda c=client: self._readable(c))

    def _readable(self, client: _Client) -> None:
        try:
            data = client.sock.recv(HEAD_LIMIT + 1 - len(client.inbuf))
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._drop(client)
            return
        if not data:
            self._drop(client)
            return
        client.inbuf += data
        end = client.inbuf.find(b"\r\n\r\n")
        if end < 0:
            if len(client.inbuf) > HEAD_LIMIT:
                self._answer(client, Response(400, b"request head too large\n"), head_only=False)
            return
        request = parse_head(client.inbuf[:end])
        if request is None:
            self._answer(client, Response(400, b"malformed request\n"), head_only=False)
            return
        if request.method not in ("GET", "HEAD"):
            response = Response(405, b"only GET and HEAD\n", headers=(("Allow", "GET, HEAD"),))
        else:
            try:
                response = self.handler(request)
            except Exception as exc:
                # An admin page must never take the master down with it.
                log.exception("admin listener: %s %s failed: %s", request.method, request.path, exc)
                response = Response(500, b"internal error; see the gateway's error log\n")
        self._answer(client, response, head_only=request.method == "HEAD")

    def _answer(self, client: _Client, response: Response, head_only: bool) -> None:
        reason = _REASONS.get(response.status, "Unknown")
        lines = [
            f"HTTP/1.1 {response.status} {reason}",
            f"Content-Type: {response.content_type}",
            f"Content-Length: {len(response.body)}",
            "Cache-Control: no-store",
            "Connection: close",
        ]
        lines += [f"{name}: {value}" for name, value in response.headers]
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        client.out = head if head_only else head + response.body
        client.deadline = time.monotonic() + WRITE_TIMEOUT
        self.selector.modify(client.sock, selectors.EVENT_WRITE, lambda c=client: self._writable(c))
        self._writable(client)

    def _writable(self, client: _Client) -> None:
        try:
            sent = client.sock.send(client.out)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._drop(client)
            return
        client.out = client.out[sent:]
        if not client.out:
            with contextlib.suppress(OSError):
                client.sock.shutdown(socket.SHUT_WR)
            self._drop(client)

    def _drop(self, client: _Client) -> None:
        self.clients.pop(client.sock.fileno(), None)
        with contextlib.suppress(KeyError, ValueError):
            self.selector.unregister(client.sock)
        client.sock.close()


def parse_head(head: bytes) -> Request | None:
    """A request head (without its blank line) as a Request; None when it is not HTTP/1.x."""
    try:
        text = head.decode("latin-1")
    except UnicodeDecodeError:  # pragma: no cover - latin-1 decodes every byte
        return None
    lines = text.split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1.") or not parts[1].startswith("/"):
        return None
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            return None
        headers[name.lower()] = value.strip()
    url = urlsplit(parts[1])
    return Request(parts[0], url.path, parse_qs(url.query, keep_blank_values=True), headers)
