"""Client side: one ``ClientConnection`` per accepted connection.

Each complete request head becomes an ``Exchange`` in this connection's queue; the head of
the queue is the one being proxied, and responses go out in request order (pipelining).

Two readers share the work. A plain head that is whole in one read (what clients send almost
always) is read in one call by ``read_request_head``, and its Content-Length body is counted
here. Anything else goes to httptools (llhttp), created for the connection the first time it
is needed: partial heads, chunked bodies, Upgrade, unusual methods or characters. The plain
reader returns exactly what llhttp reports for the heads it accepts (tests/unit/
test_plain_heads.py), and both hand their heads to ``_request``, so the proxy behaves alike
whichever read a request.

llhttp is permissive where a proxy must not be, so the checks that decide whether a request
may reach an upstream are made in ``_request``, before anything is sent: head size, header
count, Host, Content-Length, Transfer-Encoding and version.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import TYPE_CHECKING, Any

import httptools

from fsmfast.codec import (
    FRAME_CHUNKED,
    FRAME_NONE,
    normalize_target,
    read_request_head,
    scan_request,
    scan_request_line,
)
from fsmfast.pipeline.decision import Delayed, LocalReply
from fsmfast.pipeline.head import refusal
from fsmfast.pipeline.route import choose, find
from fsmfast.pipeline.target import other_form
from fsmfast.proxy import mirror
from fsmfast.proxy.exchange import Exchange, Hold
from fsmfast.proxy.roles import ClientSide
from fsmfast.proxy.route_timer import RouteTimer
from fsmfast.proxy.router import Choice, RouteRule
from fsmfast.proxy.states import DONE, QUEUED, RESPONDING, StopParsing

if TYPE_CHECKING:
    from fsmfast.worker.context import Context

WRITE_HIGH = 64 * 1024
WRITE_LOW = 16 * 1024
# Requests parsed ahead of the one being answered before the client is paused.
MAX_QUEUED = 16
# After a refusal, how long what the client still sends is read and dropped (see linger()).
LINGER = 2.0
# Bytes a client may send after a WebSocket handshake before the upstream has answered it.
HELD_LIMIT = 64 * 1024


class RejectRequest(Exception):
    """Raised from a parser callback to stop parsing: the request is refused as is."""

    def __init__(self, status: int, text: str, code: str) -> None:
        super().__init__(text)
        self.status = status
        self.text = text
        self.code = code


class ClientConnection(ClientSide):
    # An asyncio protocol by shape, not by base class: compiled, it is a C type (see the .pxd), and
    # those cannot derive from a Python class. The loop only calls the methods below. To its exchanges
    # it is a ClientSide (fsmfast.proxy.roles), the C base that spares exchange.py a cycle back here.
    PAUSE_UPSTREAM = 1  # the active upstream's write buffer is full
    PAUSE_PENDING = 2  # a waiting exchange holds too much body
    PAUSE_QUEUE = 4  # too many pipelined requests ahead
    # TLS facts for the access log (SNI, version, client certificate); set by HTTPSConnection.
    tls_log: dict[str, Any] | None = None

    def __init__(self, ctx: Context, port: int, scheme: bytes = b"http") -> None:
        self.ctx = ctx
        self.port = port
        self.scheme = scheme
        self.transport: asyncio.Transport | None = None
        self.client_ip = b"-"
        # Made when a head needs llhttp (see _feed).
        self.parser: httptools.HttpRequestParser | None = None
        self.queue: deque[Exchange] = deque()
        self.out: list[bytes] = []
        self.closing = False  # the transport is closing: write nothing more
        self.stop_reading = False  # parse nothing more (refusal, upgrade, EOF)
        self.lingering = False
        self._eof = False
        # Client bytes after a WebSocket handshake, held until the upstream answers it.
        self.held: list[bytes] | None = None
        self._paused = 0
        # While the transport says pause_writing: what the client had yet to take at the last look
        # (-1: writing is not paused). The tick tells a slow reader from a stuck one by it.
        self.unsent = -1
        settings = ctx.settings
        self.max_request_line = settings.max_request_line
        self.max_field_size = settings.max_field_size
        self.max_header_count = settings.max_header_count
        self.max_header_bytes = settings.max_header_bytes
        # Per-request parse state.
        self.in_head = False
        self._head_room = 0  # bytes the current head may still take
        self._line_seen = False
        self._url = b""
        self._version: str | None = None  # set by data_received when it read the request line
        self._line_part: list[bytes] | None = None  # a request line not whole yet (see _check_line)
        self._headers: list[tuple[bytes, bytes]] = []
        self._parsing: Exchange | None = None
        # The plain reader's state: body bytes still due, and whether the last request it read
        # ended the connection (llhttp refuses what follows such a request; so does this).
        self._body_left = 0
        self._after_close = False
        # Set by HTTPSConnection, whose transport is TLS: each Host is checked against the
        # connection's listener (admit(), fsmfast.proxy.https); a connection keeps its Host, so the
        # last admitted one is remembered.
        self.over_tls = False
        self.admit_every = False  # admit() also rewrites headers: call it for every request
        self._admitted: bytes | None = None
        # Timers, checked by the worker's tick.
        self.idle_since = time.monotonic()
        self.head_started = 0.0
        self.body_at = 0.0  # the worker clock when the last request-body bytes arrived

    # -- asyncio.Protocol --------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports (and TLSLink) are not asyncio.Transport subclasses; they quack alike.
        self.transport = transport  # type: ignore[assignment]
        transport.set_write_buffer_limits(WRITE_HIGH, WRITE_LOW)  # type: ignore[attr-defined]
        peer = transport.get_extra_info("peername")
        if peer:
            self.client_ip = str(peer[0]).encode()
        ctx = self.ctx
        connections = ctx.connections
        # Counted before it joins: room made at the limit never closes the newcomer itself.
        ctx.admission.opened(len(connections) + len(ctx.tunnels) + 1)
        connections.add(self)
        ctx.stats.opened(self.port)

    def data_received(self, data: bytes) -> None:
        if self.closing or self.stop_reading:
            if self.held is not None and not self.closing:
                self._hold(data)
            return  # else: a refused or finished connection; what the client still sends is dropped
        pos = 0
        if self._body_left:
            pos = self._plain_body(data, 0)
        if pos < len(data) and not self.in_head and self._parsing is None:
            pos = self._read_plain(data, pos)
        if (
            pos < len(data)
            and not self.stop_reading
            and not self.closing
            and not self._feed(data[pos:] if pos else data)
        ):
            return
        self._flush_both()

    def _read_plain(self, data: bytes, pos: int) -> int:
        """Reads whole plain requests from ``data[pos:]``; returns where llhttp has to go on."""
        n = len(data)
        while pos < n and not self.stop_reading and not self.closing:
            if data.startswith(b"\r\n", pos):
                # An empty line before a request line (RFC 9112 §2.2): skipped here as llhttp skips it,
                # so that a client's trailing CRLF does not start a head (and its timer) for llhttp.
                pos += 2
                continue
            if self._after_close:
                self._url = b""  # the last request's: this one was not read at all
                self._refuse(400, "malformed request: Data after `Connection: close`", "bad_request")
                return n
            head = read_request_head(data, pos, self.max_header_bytes, self.max_header_count)
            if head is None:
                return pos
            end, method, target, http11, headers, keep_alive = head
            self._url = target
            try:
                self._request(method, target, http11, headers, keep_alive, None)
            except RejectRequest as exc:
                self._refuse(exc.status, exc.text, exc.code, method)
                return n
            self._after_close = not keep_alive
            pos = end
            framing = self._parsing.req_framing if self._parsing is not None else FRAME_NONE
            if framing > 0:
                self._body_left = framing
                pos = self._plain_body(data, pos)
            else:
                self._message_done()
        return pos

    def _plain_body(self, data: bytes, pos: int) -> int:
        """Passes on what ``data[pos:]`` holds of a plain request's body; returns where it ended."""
        left = self._body_left
        take = len(data) - pos
        if take > left:
            take = left
        if take:
            self.on_body(data if take == len(data) else data[pos : pos + take])
        self._body_left = left - take
        if not self._body_left:
            self._message_done()
        return pos + take

    def _feed(self, data: bytes) -> bool:
        """Hands ``data`` to llhttp, from the start of a request or within one it is reading;
        False when it was refused before llhttp saw it (the refusal is flushed already)."""
        if self.parser is None:
            self.parser = httptools.HttpRequestParser(self)
        if not self.in_head and self._parsing is None:
            self._start_head()
            # The request line starts this read (the usual case): llhttp accepts what a proxy must
            # not, so the line is checked here (_check_line). A pipelined head starting mid-read
            # skips this check; its request line is re-serialized upstream anyway.
            line_end = self._check_line(data)
            if line_end < 0:
                return False
            # Seen within the head allowance, as below (_head_fits tells 414 from 431 by it).
            self._line_seen = 0 < line_end <= self._head_room
        elif self._line_part is not None:
            # The request line began in an earlier read: checked once it is whole (a list, so that
            # a line sent a byte at a time is joined once, not once per read).
            if b"\n" not in data:
                self._line_part.append(data)
            elif self._check_line(b"".join(self._line_part) + data) < 0:
                return False
        if self.in_head:
            room = self._head_room - len(data)
            if room >= 0:
                self._head_room = room
                if not self._line_seen and b"\n" in data:
                    self._line_seen = True
            elif not self._head_fits(data):
                return False
        try:
            self.parser.feed_data(data)
        except RejectRequest as exc:
            self._refuse(exc.status, exc.text, exc.code)
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__
            if isinstance(cause, RejectRequest):
                self._refuse(cause.status, cause.text, cause.code)
            elif not isinstance(cause, StopParsing):
                raise
        except httptools.HttpParserUpgrade as exc:
            ex = self.queue[-1] if self.queue else None
            if ex is not None and ex.upgrade is not None:
                # A WebSocket handshake its route allows (see fsmfast.proxy.websocket): what follows
                # the head is held until the upstream answers, and nothing more is parsed.
                self.stop_reading = True
                ex.request_done = False  # no pooling, and the client connection ends with it
                self.held = []
                rest = data[exc.args[0] :] if exc.args else b""
                if rest:
                    self._hold(rest)
            else:
                # Any other Upgrade is not proxied: the request went upstream without it, and
                # nothing after the head is parsed (it would be the other protocol's bytes).
                self.stop_after_queue()
        except httptools.HttpParserError as exc:
            self._parser_error(exc)
        return True

    def _check_line(self, data: bytes) -> int:
        """Checks the request line at the start of ``data`` (llhttp reads it too, and takes what
        a proxy must not: runs of spaces, ``RTSP/1.0`` for a version). Returns where it ends, 0
        when it is not whole yet (kept in ``_line_part`` until it is), -1 after refusing it."""
        line_end = scan_request_line(data)
        if line_end == 0:
            self._line_part = [_after_empty_lines(data)]
            return 0
        self._line_part = None
        if line_end < 0:
            why = "repeated or leading spaces"
        # The version of this head, read off its request line when it ends like llhttp's usual
        # case: httptools' get_http_version() formats a new string per call, which costs more.
        elif line_end > 11 and data.startswith(b" HTTP/1.1\r\n", line_end - 11):
            self._version = "1.1"
            return line_end
        elif line_end > 11 and data.startswith(b" HTTP/1.0\r\n", line_end - 11):
            self._version = "1.0"
            return line_end
        elif _http_version(data[:line_end]):
            return line_end  # HTTP/2.0, 0.9, ...: refused as unsupported once llhttp has read the head
        else:
            why = "the version is not HTTP/<digit>.<digit>"
        method = data.lstrip(b"\r\n").split(b" ", 1)[0][:16] or b"-"
        self._refuse(400, f"malformed request line: {why}", "bad_request", method)
        self.flush()
        return -1

    def eof_received(self) -> bool:
        # Half-close from the client: finish what is in flight, then close.
        self._eof = True
        if not self.queue:
            return False
        self.stop_after_queue()
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        if self.transport is not None:  # once, whoever reports the loss (a WebSocket tunnel does too)
            self.ctx.stats.closed(self.port)
        self.closing = True
        connections = self.ctx.connections
        connections.discard(self)
        self.ctx.admission.closed(len(connections) + len(self.ctx.tunnels))
        for ex in self.queue:
            ex.client_lost()
        if self._parsing is not None and self._parsing not in self.queue:
            self._parsing.client_lost()
        self._parsing = None
        self.queue.clear()
        self.transport = None
        # The parser holds this protocol's bound methods: dropping it breaks the reference cycle,
        # so the connection is freed now rather than by the cyclic GC (one cycle per connection).
        self.parser = None

    def pause_writing(self) -> None:
        if self.unsent < 0 and self.transport is not None:
            self.unsent = self.transport.get_write_buffer_size()
        if self.queue:
            self.queue[0].client_write_paused()

    def resume_writing(self) -> None:
        self.unsent = -1
        if self.queue:
            self.queue[0].client_write_resumed()

    def took_bytes(self) -> bool:
        """While writing is paused: whether the client took bytes since the last look (the
        transport's write backlog, a port's byte-rate backlog included, shrank); Exchange.timed_out
        asks."""
        left = self.transport.get_write_buffer_size() if self.transport is not None else 0
        if left < self.unsent:
            self.unsent = left
            return True
        return False

    # -- httptools callbacks -----------------------------------------------------------

    def _start_head(self) -> None:
        self.in_head = True
        self._url = b""  # the last request's target is not this one's (see _refuse)
        self._head_room = self.ctx.settings.max_header_bytes
        self._line_seen = False
        self.head_started = time.monotonic()

    def on_message_begin(self) -> None:
        if not self.in_head:
            self._start_head()
        self._url = b""
        if self._headers:  # trailers of the previous message (on_headers_complete left a fresh list)
            self._headers = []

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        if b"_" in name:
            # Dropped, as nginx does by default (underscores_in_headers off): many backends read
            # "_" and "-" as one (CGI, WSGI, PHP and Rack name headers HTTP_X_FORWARDED_FOR), so
            # X_Forwarded_For would pass for the gateway's own X-Forwarded-For and
            # Transfer_Encoding for framing. Dropping rather than refusing keeps working the
            # clients that send such a header harmlessly; the plain reader leaves these heads to
            # llhttp, so this is the one place that decides.
            return
        headers = self._headers
        if len(headers) >= self.max_header_count:
            raise RejectRequest(431, f"more than {self.max_header_count} header fields", "too_many_headers")
        headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.in_head = False
        parser = self.parser
        assert parser is not None
        version = self._version
        if version is None:
            version = parser.get_http_version()
        else:
            self._version = None
        if version != "1.1" and version != "1.0":
            if version == "0.9":
                raise RejectRequest(400, "HTTP/0.9 is not supported", "bad_request")
            raise RejectRequest(505, f"HTTP/{version} is not supported", "http_version_not_supported")
        headers = self._headers
        # A chunked body's trailers arrive through on_header as well: they go to a fresh list,
        # never into this head (a queued request's head is built from it later).
        self._headers = []
        keep_alive = parser.should_keep_alive()
        # llhttp refuses what follows a request that ends the connection; a later read that the
        # plain reader would take must be refused alike.
        self._after_close = not keep_alive
        self._request(parser.get_method(), self._url, version == "1.1", headers, keep_alive, parser)

    def _request(
        self,
        method: bytes,
        target: bytes,
        http11: bool,
        headers: list[tuple[bytes, bytes]],
        keep_alive: bool,
        parser: httptools.HttpRequestParser | None,
    ) -> None:
        """A request head from either reader becomes an Exchange, or raises RejectRequest.

        ``parser`` is llhttp's when it read the head (only it can say an Upgrade is due).
        """
        if len(target) > self.max_request_line:
            raise RejectRequest(414, f"request-target exceeds {self.max_request_line} bytes", "uri_too_long")
        host, content_length, te, expect, upgrade, problem, request_id = scan_request(headers, self.max_field_size)
        if problem is not None:
            status, text = problem
            raise RejectRequest(status, text, "bad_request" if status == 400 else "header_too_large")
        expect_continue = False
        if expect is not None:
            if expect.strip(b" \t").lower() == b"100-continue":
                expect_continue = http11
            else:
                raise RejectRequest(417, "only Expect: 100-continue is supported", "expectation_failed")
        if te is not None:
            if not http11:
                # RFC 9112 §6.1: such framing is faulty; nginx refuses it too.
                raise RejectRequest(400, "Transfer-Encoding in an HTTP/1.0 request", "bad_request")
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
        # The target stage (fsmfast.pipeline.target): origin-form, the usual case, is normalized
        # here by the same codec call that stage makes, without a Python call or a tuple of its own.
        if target.startswith(b"/"):
            path, target, bad = normalize_target(target)
            if bad is not None:
                raise RejectRequest(400, bad, "bad_request")
        else:
            form = other_form(method, target, host, headers)
            if isinstance(form, LocalReply):
                raise RejectRequest(form.status, form.text, form.code)
            path, target, host = form
        tunnel = False
        if upgrade is not None and parser is not None and parser.should_upgrade():
            # llhttp hands everything after this head to the new protocol, so a body announced
            # here would never be parsed: refuse rather than forward a head that lies.
            if framing != FRAME_NONE:
                raise RejectRequest(400, "Upgrade request with a body", "bad_request")
            tunnel = True
        keep_alive = keep_alive and not self.ctx.draining
        ex = Exchange.start(
            self, method, target, http11, headers, host, framing, keep_alive, expect_continue, request_id
        )
        self._route(ex, host, path)
        if (tunnel or framing != FRAME_NONE) and self.ctx.rule_options and ex.rule is not None:
            self._rule_options(ex, upgrade if tunnel else None)
        self._parsing = ex
        self.queue.append(ex)
        if len(self.queue) == 1:
            ex.activate()
        elif len(self.queue) > MAX_QUEUED:
            self.pause_reading(self.PAUSE_QUEUE)

    def on_body(self, body: bytes) -> None:
        self.body_at = self.ctx.clock
        if self._parsing is not None:
            self._parsing.request_body(body)

    def on_message_complete(self) -> None:
        self._url = b""  # llhttp may refuse what follows without a new on_message_begin
        self._message_done()

    def _message_done(self) -> None:
        ex = self._parsing
        self._parsing = None
        if ex is not None:
            ex.request_complete()

    def _rule_options(self, ex: Exchange, upgrade: bytes | None) -> None:
        """Per-rule data-plane knobs (fsmfast.io annotations): body size limit, WebSocket."""
        assert ex.rule is not None
        opts = self.ctx.rule_options.get(ex.rule.name)
        if opts is None:
            return
        limit = opts.max_body_size
        if limit is not None:
            if ex.req_framing > limit:
                if ex.local is None:
                    ex.set_local(413, f"request body exceeds {limit} bytes", "request_too_large")
            elif ex.req_framing == FRAME_CHUNKED:
                ex.body_room = limit
        if (
            upgrade is not None
            and opts.websocket
            and ex.local is None
            and ex.method == b"GET"
            and ex.http11
            and upgrade.strip(b" \t").lower() == b"websocket"
        ):
            ex.upgrade = b"websocket"

    # -- routing ----------------------------------------------------------------------

    def admit(self, ex: Exchange, host: bytes) -> bool:
        """Whether ``host`` may be served on this connection; False after answering ``ex`` itself.
        Only called when ``over_tls`` is set (HTTPSConnection overrides it)."""
        return True

    def _route(self, ex: Exchange, host: bytes, path: bytes) -> None:
        """Stages 3-5 of fsmfast.pipeline (the ones ``fsmfast explain`` runs too), then what the
        decision means for ``ex``: an answer of its own, or the backend and plan to forward with."""
        if self.over_tls and (self.admit_every or host != self._admitted):
            if not self.admit(ex, host):
                return
            self._admitted = host
        # The router is set before the worker accepts its first connection.
        tables = self.ctx.router.tables  # type: ignore[union-attr]
        found = find(tables.get(self.port), host, path, ex.method, ex.headers, ex.target)
        if not isinstance(found, RouteRule):
            ex.answer(found)
            return
        rule = found
        ex.rule = rule
        decision = choose(rule, self.scheme, host, self.port, ex.method, ex.headers, ex.target, path, self.client_ip)
        if not isinstance(decision, Choice):
            if type(decision) is Delayed:
                self._delayed(ex, rule, decision)
            else:
                ex.answer(decision)  # type: ignore[arg-type]
            return
        _forward(self, ex, rule, decision)

    def _delayed(self, ex: Exchange, rule: RouteRule, delayed: Delayed) -> None:
        """A route policy's delay (fault injection): what follows it is decided now, and the exchange
        holds it until the delay is over (``Exchange.local``; it waits in its connection's queue)."""
        then = delayed.then
        if isinstance(then, Choice):
            _forward(self, ex, rule, then)
        else:
            ex.answer(then)
        # answer set a tuple, or nothing (None)
        ex.local = Hold(delayed.seconds, ex.local, delayed.future, delayed.resolve)  # type: ignore[arg-type]

    # -- flow -------------------------------------------------------------------------

    def exchange_finished(self, finished: Exchange) -> None:
        ex = finished  # typed here (the .pxd): the role's signature (ClientSide) cannot name Exchange
        if self.closing or not self.queue or self.queue[0] is not ex:
            return
        self.queue.popleft()
        if not ex.keep_alive:
            self.flush()
            if self.stop_reading or not ex.request_done:
                self.linger()  # the client may still be sending what we refused to read
            else:
                self.close()
            return
        if self._paused:
            # Pauses belonged to the finished exchange's upstream and buffers.
            self.resume_reading(self.PAUSE_QUEUE | self.PAUSE_UPSTREAM | self.PAUSE_PENDING)
        if self.queue:
            self.queue[0].activate()
        else:
            self.idle_since = self.ctx.clock_upper  # the keep-alive timeout may end a tick late, never early
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

    def _flush_both(self) -> None:
        """After a read: what the active exchange holds for the upstream, then what the client is owed."""
        if self.queue:
            active = self.queue[0]  # typed in the .pxd: flush_up is a C call
            active.flush_up()
        self.flush()

    def flush(self) -> None:
        out = self.out
        if out and self.transport is not None:
            self.transport.writelines(out)  # over TLS, the link makes small pieces one record
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

    def linger(self) -> None:
        """Close after an answer the client may not have finished sending for (a refusal, a
        413, an error before the body ended) without losing that answer.

        Closing a socket with unread input makes the kernel send a reset, which can destroy
        the response before the client reads it. So our side is shut down (FIN after the
        response) and what the client still sends is read and dropped until it closes, or for
        LINGER seconds (nginx's lingering close).
        """
        transport = self.transport
        if transport is None or transport.is_closing() or self._eof or not transport.can_write_eof():
            self.close()
            return
        self.stop_reading = True
        self.lingering = True
        self.held = None
        transport.write_eof()
        if self._paused:
            self._paused = 0
            transport.resume_reading()
        self.ctx.loop.call_later(LINGER, self.close)

    def _hold(self, data: bytes) -> None:
        held = self.held
        assert held is not None
        held.append(data)
        if sum(len(b) for b in held) > HELD_LIMIT:
            self.pause_reading(self.PAUSE_PENDING)  # resumed when the tunnel opens

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

    def body_stalled(self, now: float, limit: float) -> bool:
        """A request body is being read, its exchange is active, and the client has sent none
        of it for ``limit`` seconds. Time the gateway itself stopped reading does not count."""
        ex = self._parsing
        if ex is None or ex.state == QUEUED:
            return False
        if self._paused:
            self.body_at = now
            return False
        return now - max(self.body_at, ex.started) > limit

    def refuse_slow_body(self) -> None:
        limit = self.ctx.settings.body_timeout
        self._refuse(408, f"request body stalled for {limit:g}s", "body_timeout")
        self.flush()

    def refuse_slow_head(self, limit: float) -> None:
        self._refuse(408, f"request head not received within {limit:g}s", "header_timeout")
        self.flush()

    def _parser_error(self, exc: httptools.HttpParserError) -> None:
        reply = refusal(str(exc), self._headers, self._parsing is not None)
        self._refuse(reply.status, reply.text, reply.code)

    def _refuse(self, status: int, text: str, code: str, method: bytes | None = None) -> None:
        """Answer a request that never reaches an upstream, then close the connection.

        Framing is in doubt after a refusal, so nothing after it on this connection is
        trusted. If responses for earlier pipelined requests are still pending, the refusal
        waits its turn behind them.
        """
        ex = self._parsing if self._parsing is not None and self._parsing.state != DONE else None
        if ex is not None and ex in self.queue:
            # The body of a request already queued or proxied turned out malformed: what waits
            # for the upstream is dropped and its connection reset, so it never holds a whole
            # request; the client gets the refusal unless its response has already begun.
            self._parsing = None
            self.stop_reading = True
            ex.up_out = []
            ex.pending = []
            ex.keep_alive = False
            if ex.state == QUEUED:
                ex.set_local(status, text, code)  # answered in turn
                return
            conn = ex.conn
            ex.conn = None
            if conn is not None:
                conn.abort()
            if ex.state == RESPONDING:
                self.abort()
            else:
                ex.reply(status, text, code)
            return
        self.in_head = False
        if method is None:
            method = b"-"
            # llhttp reports method 0 (DELETE) until it has read one, and the last request's after
            # it: its method is this request's only once it has also read some of its target, which
            # follows the method (on_url; _url is reset at every head's start and message's end).
            try:
                if self.parser is not None and self._url:
                    method = self.parser.get_method()
            except httptools.HttpParserError:
                pass
        elif not method or method.translate(None, _TCHARS):
            method = b"-"  # the first word of a line that is no request line: not a method
        refused = Exchange.start(self, method, self._url or b"-", True, [], b"", FRAME_NONE, False, False, None)
        refused.request_done = True
        refused.set_local(status, text, code)
        self._parsing = None
        self.stop_reading = True
        self.queue.append(refused)
        if len(self.queue) == 1:
            refused.activate()


def _http_version(line: bytes) -> bool:
    """The request line (its line end included) ends with `` HTTP/<digit>.<digit>``. llhttp also
    takes RTSP's and ICE's protocol names there, and forwarded as HTTP such a request would mean
    something else to the gateway than to the client; nginx answers 400 too."""
    v = line.rstrip(b"\r\n")[-9:]
    return len(v) == 9 and v.startswith(b" HTTP/") and v[6] in _DIGITS and v[7] == 0x2E and v[8] in _DIGITS


_DIGITS = b"0123456789"


def _after_empty_lines(data: bytes) -> bytes:
    """``data`` without the empty lines a request may start with (RFC 9112 §2.2): what is kept of
    a request line that is not whole yet stays as short as the line."""
    i = 0
    while data.startswith(b"\r\n", i):
        i += 2
    return data[i:] if i else data


# A method is a token (RFC 9110 §9.1): bytes.translate deleting these leaves nothing of one.
_TCHARS = b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def _forward(conn: ClientConnection, ex: Exchange, rule: RouteRule, choice: Choice) -> None:
    """Forward ``ex`` as ``choice`` says: its backend, and the rule's filters, mirrors and timeouts."""
    ex.backend = choice.backend
    # HTTPRoute filters and timeouts: precomputed, None for a plain rule.
    if choice.plan is not None:
        ex.plan = choice.plan
        if choice.plan.mirrors:
            ex.mirrors = mirror.start(ex, choice.plan, choice.plan.mirrors)
    if rule.timeouts is not None:
        ex.timer = RouteTimer(ex, conn.ctx.loop, rule.timeouts)
