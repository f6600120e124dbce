"""Client side: one ``ClientConnection`` per accepted connection, parsing with httptools.

Each complete request head becomes an ``Exchange`` in this connection's queue; the head of
the queue is the one being proxied, and responses go out in request order (pipelining).

httptools (llhttp) is permissive where a proxy must not be, so the checks that decide
whether a request may reach an upstream are made here, before anything is sent:
head size, header count, Host, Content-Length, Transfer-Encoding and version.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import TYPE_CHECKING

import httptools

from fsmfast._accel import scan_request
from fsmfast.proxy.exchange import DONE, Exchange
from fsmfast.proxy.headers import FRAME_CHUNKED, FRAME_NONE
from fsmfast.proxy.router import normalize_host

if TYPE_CHECKING:
    from fsmfast.worker.context import Context

WRITE_HIGH = 64 * 1024
WRITE_LOW = 16 * 1024
MAX_HEADERS = 100
# Requests parsed ahead of the one being answered before the client is paused.
MAX_QUEUED = 16


class RejectRequest(Exception):
    """Raised from a parser callback to stop parsing: the request is refused as is."""

    def __init__(self, status: int, text: str, code: str) -> None:
        super().__init__(text)
        self.status = status
        self.text = text
        self.code = code


class ClientConnection(asyncio.Protocol):
    PAUSE_UPSTREAM = 1  # the active upstream's write buffer is full
    PAUSE_PENDING = 2  # a waiting exchange holds too much body
    PAUSE_QUEUE = 4  # too many pipelined requests ahead

    def __init__(self, ctx: Context, port: int, scheme: bytes = b"http") -> None:
        self.ctx = ctx
        self.port = port
        self.scheme = scheme
        self.transport: asyncio.Transport | None = None
        self.client_ip = b"-"
        self.parser = httptools.HttpRequestParser(self)
        self.queue: deque[Exchange] = deque()
        self.out: list[bytes] = []
        self.closing = False  # the transport is closing: write nothing more
        self.stop_reading = False  # parse nothing more (refusal, upgrade, EOF)
        self._paused = 0
        # Per-request parse state.
        self.in_head = False
        self._head_room = 0  # bytes the current head may still take
        self._line_seen = False
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._parsing: Exchange | None = None
        # Timers, checked by the worker's tick.
        self.idle_since = time.monotonic()
        self.head_started = 0.0

    # -- asyncio.Protocol --------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses; they quack alike.
        self.transport = transport  # type: ignore[assignment]
        transport.set_write_buffer_limits(WRITE_HIGH, WRITE_LOW)
        peer = transport.get_extra_info("peername")
        if peer:
            self.client_ip = str(peer[0]).encode()
        self.ctx.connections.add(self)

    def data_received(self, data: bytes) -> None:
        if self.closing or self.stop_reading:
            return
        if not self.in_head and self._parsing is None:
            self._start_head()
        if self.in_head:
            room = self._head_room - len(data)
            if room >= 0:
                self._head_room = room
                if not self._line_seen and b"\n" in data:
                    self._line_seen = True
            elif not self._head_fits(data):
                return
        try:
            self.parser.feed_data(data)
        except RejectRequest as exc:
            self._refuse(exc.status, exc.text, exc.code)
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__
            if isinstance(cause, RejectRequest):
                self._refuse(cause.status, cause.text, cause.code)
            else:
                raise
        except httptools.HttpParserUpgrade:
            # Upgrade is hop-by-hop and not proxied yet: the request went upstream without it,
            # and nothing after the head is parsed (it would be the other protocol's bytes).
            self.stop_after_queue()
        except httptools.HttpParserError as exc:
            self._parser_error(exc)
        active = self.queue[0] if self.queue else None
        if active is not None:
            active.flush_up()
        self.flush()

    def eof_received(self) -> bool:
        # Half-close from the client: finish what is in flight, then close.
        if not self.queue:
            return False
        self.stop_after_queue()
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        self.ctx.connections.discard(self)
        for ex in self.queue:
            ex.client_lost()
        if self._parsing is not None and self._parsing not in self.queue:
            self._parsing.client_lost()
        self.queue.clear()
        self.transport = None

    def pause_writing(self) -> None:
        if self.queue:
            self.queue[0].client_write_paused()

    def resume_writing(self) -> None:
        if self.queue:
            self.queue[0].client_write_resumed()

    # -- httptools callbacks -----------------------------------------------------------

    def _start_head(self) -> None:
        self.in_head = True
        self._head_room = self.ctx.settings.max_header_bytes
        self._line_seen = False
        self.head_started = time.monotonic()

    def on_message_begin(self) -> None:
        if not self.in_head:
            self._start_head()
        self._url = b""
        self._headers = []

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        headers = self._headers
        if len(headers) >= MAX_HEADERS:
            raise RejectRequest(431, f"more than {MAX_HEADERS} header fields", "too_many_headers")
        headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.in_head = False
        parser = self.parser
        version = parser.get_http_version()
        if version not in ("1.1", "1.0"):
            raise RejectRequest(505, f"HTTP/{version} is not supported", "http_version_not_supported")
        http11 = version == "1.1"
        method = parser.get_method()
        target = self._url
        headers = self._headers
        host, content_length, te, expect, problem = scan_request(headers)
        if problem is not None:
            raise RejectRequest(400, problem, "bad_request")
        expect_continue = False
        if expect is not None:
            if expect.strip(b" \t").lower() == b"100-continue":
                expect_continue = http11
            else:
                raise RejectRequest(417, "only Expect: 100-continue is supported", "expectation_failed")
        if te is not None:
            if content_length >= 0:
                raise RejectRequest(400, "both Content-Length and Transfer-Encoding", "bad_request")
            if te.strip(b" \t").lower() != b"chunked":
                raise RejectRequest(501, "Transfer-Encoding other than chunked is not supported", "not_implemented")
            framing = FRAME_CHUNKED
        elif content_length >= 0:
            framing = content_length
        else:
            framing = FRAME_NONE
        if host is None:
            if http11:
                raise RejectRequest(400, "HTTP/1.1 request without Host", "bad_request")
            host = b""
        route_host = host
        path = target
        if not target.startswith(b"/"):
            if target.startswith((b"http://", b"https://")):
                # Absolute-form (RFC 9112 §3.2.2): its authority wins over Host, and the
                # upstream gets origin-form.
                try:
                    url = httptools.parse_url(target)
                except httptools.HttpParserInvalidURLError:
                    raise RejectRequest(400, "invalid request-target", "bad_request") from None
                route_host = url.host or b""
                if url.port:
                    route_host += b":%d" % url.port
                path = url.path or b"/"
                target = path + (b"?" + url.query if url.query else b"")
            elif target == b"*" and method == b"OPTIONS":
                path = b"*"
            else:
                raise RejectRequest(400, "unsupported request-target form", "bad_request")
        q = path.find(b"?")
        if q >= 0:
            path = path[:q]
        keep_alive = parser.should_keep_alive() and not self.ctx.draining
        ex = Exchange(self, method, target, http11, headers, host, framing, keep_alive, expect_continue)
        self._route(ex, route_host, path)
        self._parsing = ex
        self.queue.append(ex)
        if len(self.queue) == 1:
            ex.activate()
        elif len(self.queue) > MAX_QUEUED:
            self.pause_reading(self.PAUSE_QUEUE)

    def on_body(self, body: bytes) -> None:
        if self._parsing is not None:
            self._parsing.request_body(body)

    def on_message_complete(self) -> None:
        ex = self._parsing
        self._parsing = None
        if ex is not None:
            ex.request_complete()

    # -- routing ----------------------------------------------------------------------

    def _route(self, ex: Exchange, host: bytes, path: bytes) -> None:
        table = self.ctx.router.tables.get(self.port)
        vhost = table.find(normalize_host(host)) if table is not None else None
        if vhost is None:
            ex.set_local(404, f"no route for host {host.decode('latin-1')!r}", "no_route")
            return
        rule = vhost.match(path)
        if rule is None:
            ex.set_local(404, f"no route for {path.decode('latin-1')!r} on host {vhost.hostname}", "no_route")
            return
        ex.rule = rule
        choice = rule.pick()
        if choice is None:
            ex.set_local(500, f"route {rule.name} has no backend", "invalid_backend")
            return
        if choice.backend is None:
            ex.set_local(500, f"route {rule.name}: {choice.error}", "invalid_backend")
            return
        ex.backend = choice.backend

    # -- flow -------------------------------------------------------------------------

    def exchange_finished(self, ex: Exchange) -> None:
        if self.closing or not self.queue or self.queue[0] is not ex:
            return
        self.queue.popleft()
        if not ex.keep_alive:
            self.flush()
            self.close()
            return
        if self._paused:
            # Pauses belonged to the finished exchange's upstream and buffers.
            self.resume_reading(self.PAUSE_QUEUE | self.PAUSE_UPSTREAM | self.PAUSE_PENDING)
        if self.queue:
            self.queue[0].activate()
        else:
            self.idle_since = time.monotonic()
            if self.ctx.draining or self.stop_reading:
                self.flush()
                self.close()

    def stop_after_queue(self) -> None:
        """Parse nothing more: answer what is queued, then close."""
        self.stop_reading = True
        if self.queue:
            self.queue[-1].keep_alive = False
        else:
            self.flush()
            self.close()

    def flush(self) -> None:
        if self.out and self.transport is not None:
            self.transport.writelines(self.out)
        self.out = []

    def pause_reading(self, reason: int) -> None:
        if not self._paused and self.transport is not None and not self.transport.is_closing():
            self.transport.pause_reading()
        self._paused |= reason

    def resume_reading(self, reason: int) -> None:
        if not self._paused & reason:
            return
        self._paused &= ~reason
        if not self._paused and self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()

    def close(self) -> None:
        self.closing = True
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        self.closing = True
        self.out = []
        if self.transport is not None:
            self.transport.abort()

    # -- refusals ---------------------------------------------------------------------

    def _head_fits(self, data: bytes) -> bool:
        """The read overran the head allowance: accept it only if the head ends within it.

        llhttp has no limit of its own, so the request line plus headers are bounded here,
        before it buffers them.
        """
        limit = self.ctx.settings.max_header_bytes
        room = self._head_room
        if data.find(b"\r\n\r\n", 0, room + 4) >= 0:
            self._head_room = 0
            return True
        if self._line_seen or b"\n" in data[:room]:
            self._refuse(431, f"request header section exceeds {limit} bytes", "header_too_large")
        else:
            self._refuse(414, f"request line exceeds {limit} bytes", "uri_too_long")
        return False

    def refuse_slow_head(self) -> None:
        limit = self.ctx.settings.header_timeout
        self._refuse(408, f"request head not received within {limit:g}s", "header_timeout")
        self.flush()

    def _parser_error(self, exc: httptools.HttpParserError) -> None:
        text = str(exc)
        if self._parsing is None and any(n.lower() == b"transfer-encoding" for n, _ in self._headers):
            te = next(v for n, v in self._headers if n.lower() == b"transfer-encoding")
            if te.strip(b" \t").lower() != b"chunked" and not any(
                n.lower() == b"content-length" for n, _ in self._headers
            ):
                self._refuse(501, "Transfer-Encoding other than chunked is not supported", "not_implemented")
                return
        if "Invalid method" in text or "invalid method" in text.lower():
            self._refuse(400, "invalid method", "bad_request")
        elif any(m in text for m in ("Invalid HTTP version", "Invalid major version", "Invalid minor version")):
            self._refuse(505, "unsupported HTTP version", "http_version_not_supported")
        else:
            self._refuse(400, f"malformed request: {text}", "bad_request")

    def _refuse(self, status: int, text: str, code: str) -> None:
        """Answer a request that never reaches an upstream, then close the connection.

        Framing is in doubt after a refusal, so nothing after it on this connection is
        trusted. If responses for earlier pipelined requests are still pending, the refusal
        waits its turn behind them.
        """
        ex = self._parsing if self._parsing is not None and self._parsing.state != DONE else None
        if ex is not None and ex in self.queue:
            # The body of a request already being proxied turned out malformed.
            self.abort()
            return
        self.in_head = False
        method = b"-"
        try:
            method = self.parser.get_method()
        except httptools.HttpParserError:
            pass
        refused = Exchange(self, method, self._url or b"-", True, [], b"", FRAME_NONE, False, False)
        refused.request_done = True
        refused.set_local(status, text, code)
        self._parsing = None
        self.stop_reading = True
        self.queue.append(refused)
        if len(self.queue) == 1:
            refused.activate()
