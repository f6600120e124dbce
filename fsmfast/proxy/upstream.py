"""Upstream side: per-endpoint keep-alive pools and the response-parsing protocol.

Theory of operation
-------------------
Each worker keeps one ``Pool`` per (endpoint, TLS settings). A pool hands out idle
connections last-in-first-out (the warmest socket; the cold tail times out), and opens a
new connection when none is idle. Opening is the only place with a coroutine: one task
per *new connection*, never per request.

An ``UpstreamConnection`` serves one exchange at a time (no upstream pipelining, like
nginx and HAProxy). Its states:

    CONNECTING -> BUSY -> IDLE -> BUSY -> ... -> CLOSED
                      \\-> CLOSED (Connection: close, an error, a protocol violation)

It goes back to IDLE only when the response was complete, the request was fully sent
and both sides allow keep-alive; anything else closes it. Idle connections that see data
or EOF are dropped from the pool at once.

Responses are read like requests on the client side: a plain head with a Content-Length that
arrives whole in one read (``read_response_head``) is taken in one call and its body counted
here; everything else (partial heads, chunked or close-delimited bodies, interim responses,
answers to HEAD) goes through httptools.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import ssl
import time
from typing import TYPE_CHECKING, Any
from zlib import crc32

import httptools

from fsmfast import codec
from fsmfast.codec import parse_response_head, read_response_head, scan_response_head
from fsmfast.proxy.roles import UpstreamUser, WorkerState
from fsmfast.proxy.states import UpstreamError
from fsmfast.resilience.session import SessionPlan
from fsmfast.snapshot import Backend, UpstreamTLS
from fsmfast.tls import upstream as tlsmod
from fsmfast.tls.link import Opened, TLSLink

if TYPE_CHECKING:
    from fsmfast.resilience.breaker import Breaker
    from fsmfast.resilience.health import EndpointHealth
    from fsmfast.resilience.retry import RetryPlan
    from fsmfast.resilience.session import Session

log = logging.getLogger("fsmfast.proxy")

WRITE_HIGH = 64 * 1024
WRITE_LOW = 16 * 1024
MAX_RESPONSE_HEAD = 64 * 1024
# What a client reads when the TLS settings of its upstream cannot be used (the log names them).
_TLS_CONFIG = "upstream TLS is misconfigured"


class BackendState:
    """A Service port at run time: its endpoints in round robin, and their pools.

    Round robin per request is also what a LoadBalancerPolicy's ``RoundRobinLoadBalancer`` asks
    for: endpoints carry no weights, so a smooth weighted round robin over equal weights is this.
    ``keyed`` is False here: a backend without resilience policies costs the request path nothing
    more. ``PolicyBackend`` sets it, and only then does the exchange call ``pick_for`` instead of
    ``pick``, ``settle`` after a failed attempt it retries and ``ended`` when it ends.
    """

    __slots__ = ("_next", "backend", "keyed", "name", "pools", "retry", "retry_requests", "tls")

    def __init__(self, backend: Backend, pools: list[Pool]) -> None:
        self.backend = backend
        self.name = backend.name
        self.tls = backend.tls
        self.pools = pools
        self._next = 0
        self.keyed = False
        self.retry: RetryPlan | None = None
        # Requests a retry policy covered since the worker's last tick, which hands them to the
        # machine's retry budget (one compare-and-swap a tick, not one a request).
        self.retry_requests = 0

    def pick(self) -> Pool | None:
        pools = self.pools
        if not pools:
            return None
        i = self._next
        self._next = (i + 1) % len(pools)
        return pools[i]

    def pick_for(self, ex: Any) -> Pool | None:
        """The endpoint for the request of exchange ``ex`` (a policy may read its client, headers,
        the pools it already tried, and give it a session cookie to set)."""
        return self.pick()

    def settle(self, pool: Pool, failed: bool) -> None:
        """An attempt on ``pool`` ended, and the exchange will try again elsewhere."""

    def ended(self, ex: Any) -> None:
        """The exchange ``ex`` that ``pick_for`` served has ended."""

    def unavailable(self) -> str:
        """Why ``pick`` found no endpoint, for a detailed error body."""
        return "has no ready endpoints"


# PolicyBackend.lb: how it chooses among the endpoints it may use.
ROUND_ROBIN, HASHING, LEAST_CONN = 0, 1, 2


class PolicyBackend(BackendState):
    """A backend with resilience policies (issue 19), each optional, built by
    ``fsmfast.resilience.runtime`` from the snapshot and the machine-wide arena:

    - load balancing (``lb``): round robin; ``HASHING``, CRC-32 of the client address modulo the
      endpoints (the same in every worker and process: the snapshot's order, not a salted hash);
      ``LEAST_CONN``, the fewest requests in flight on the whole machine (each worker adds +1/-1 in
      its own row of the arena's counters at ``slots``; ties go round robin; two workers choosing at
      once may choose alike: the counts steer, they do not lock);
    - ``health`` (``fsmfast.resilience.health.EndpointHealth``): endpoints out of service (active
      checks, or passive failures seen by any worker) are not chosen; failures and successes of the
      requests sent here count as passive checks;
    - ``breaker`` (``fsmfast.resilience.breaker.Breaker``): the backend's policy hook (in
      ``policies``, run by the pipeline before the request is queued) answers while it is open;
      every ended request is recorded in its window;
    - ``retry`` (``fsmfast.resilience.retry.RetryPlan``), read by the exchange;
    - ``session`` (``fsmfast.resilience.session.Session``): a request whose cookie or header names
      a usable endpoint goes there; any other gets an endpoint as above and the session to keep.

    An endpoint already tried by the exchange (``ex.tried``, retries) is passed over unless every
    usable one was tried. A hashed client whose endpoint is out goes round robin among the rest.
    """

    __slots__ = ("breaker", "counters", "health", "index_of", "lb", "policies", "row", "session", "slots")

    def __init__(self, backend: Backend, pools: list[Pool], lb: int = ROUND_ROBIN) -> None:
        super().__init__(backend, pools)
        self.keyed = True
        self.lb = lb
        self.counters: Any = None
        self.row = 0
        self.slots: list[int] = []
        self.index_of = {pool: i for i, pool in enumerate(pools)}
        self.health: EndpointHealth | None = None
        self.breaker: Breaker | None = None
        self.session: Session | None = None
        self.policies: tuple[Any, ...] = ()

    def count_in_flight(self, counters: Any, row: int, slots: tuple[int, ...]) -> None:
        """Least connections over the arena's ``counters`` (this worker's ``row``)."""
        self.lb = LEAST_CONN
        self.counters = counters
        self.row = row
        self.slots = list(slots)

    def with_policies(self, retry: RetryPlan | None, session: Session | None) -> PolicyBackend:
        """The same endpoints, pools, health and breaker, with a route rule's own retry and session
        (Gateway API: the rule's fields win over the backend's policies)."""
        other = PolicyBackend(self.backend, self.pools, self.lb)
        other.counters, other.row, other.slots = self.counters, self.row, self.slots
        other.health, other.breaker, other.policies = self.health, self.breaker, self.policies
        other.retry = retry if retry is not None else self.retry
        other.session = session if session is not None else self.session
        return other

    def _usable(self, i: int, now_ms: int, tried: list[Pool] | None) -> bool:
        health = self.health
        if health is not None and not health.usable(i, now_ms):
            return False
        return tried is None or self.pools[i] not in tried

    def pick(self) -> Pool | None:
        """Round robin over the usable endpoints, for requests without a client to key on (L4
        routes, mirrors)."""
        n = len(self.pools)
        if not n:
            return None
        i = self._rotate(n, int(self.pools[0].ctx.clock * 1000), None)
        return self.pools[i] if i >= 0 else None

    def _rotate(self, n: int, now_ms: int, tried: list[Pool] | None) -> int:
        start = self._next
        for step in range(n):
            i = (start + step) % n
            if self._usable(i, now_ms, tried):
                self._next = (i + 1) % n
                return i
        return -1

    def _choose(self, ex: Any, n: int, now_ms: int, tried: list[Pool] | None) -> int:
        lb = self.lb
        if lb == HASHING:
            i = crc32(ex.client.client_ip) % n
            if self._usable(i, now_ms, tried):
                return i
            return self._rotate(n, now_ms, tried)
        if lb == LEAST_CONN:
            counters = self.counters
            slots = self.slots
            start = self._next
            best = -1
            fewest = 0
            for step in range(n):
                i = (start + step) % n
                if not self._usable(i, now_ms, tried):
                    continue
                count = counters.total(slots[i])
                if best < 0 or count < fewest:
                    best, fewest = i, count
            self._next = (start + 1) % n
            return best
        return self._rotate(n, now_ms, tried)

    def pick_for(self, ex: Any) -> Pool | None:
        pools = self.pools
        n = len(pools)
        if not n:
            return None
        now_ms = int(ex.client.ctx.clock * 1000)
        attempts = ex.attempts
        tried = attempts.tried if attempts is not None and attempts.tried else None
        session = self.session
        i = -1
        issued = None
        wall = 0.0
        if session is not None:
            wall = time.time()  # sessions outlive processes: their times are the wall clock's
            i, issued = session.pinned(ex.headers, wall)
            if i >= n or (i >= 0 and not self._usable(i, now_ms, tried)):
                i = -1  # gone or out: a new endpoint, and a new session there
                issued = None
            elif i >= 0 and not session.refresh:
                session = None  # the session stands: nothing to set on the response
            elif i < 0:
                issued = None
        if i < 0:
            i = self._choose(ex, n, now_ms, tried)
            if i < 0 and tried:
                i = self._choose(ex, n, now_ms, None)  # every usable endpoint was tried: try one again
            if i < 0:
                return None
        if self.lb == LEAST_CONN:
            self.counters.add(self.row, self.slots[i], 1)
        if session is not None:
            plan = ex.plan
            if type(plan) is SessionPlan:  # a retry's new endpoint: the session names it instead
                plan = plan.inner
            ex.plan = session.plan(plan, i, wall, ex.client.scheme == b"https", issued)
        return pools[i]

    def _release(self, pool: Pool) -> int:
        """``pool``'s endpoint index (-1: not one of this backend's), its request no longer in flight."""
        i = self.index_of.get(pool, -1)
        if i >= 0 and self.lb == LEAST_CONN:
            self.counters.add(self.row, self.slots[i], -1)
        return i

    def settle(self, pool: Pool, failed: bool) -> None:
        i = self._release(pool)
        health = self.health
        if i >= 0 and health is not None:
            if failed:
                if health.failed(i, int(pool.ctx.clock * 1000)):
                    pool.ctx.stats.event("endpoint", self.name, "out")
                    log.warning(
                        "backend %s endpoint %s is out of service: %d failures in a row [passive health check]",
                        self.name,
                        pool.address,
                        health.max_fails,
                    )
            else:
                health.succeeded(i)

    def ended(self, ex: Any) -> None:
        pool = ex.pool
        if pool is None:
            return  # answered without an upstream (no endpoint, or the breaker's own answer)
        status = ex.status
        reason = ex.reason
        # No response: the gateway's 502/504 name the upstream's failure in ``reason``.
        no_response = reason is not None and reason.startswith("upstream_")
        if status == 499 and not no_response:
            self._release(pool)  # the client left: that says nothing about the upstream
        else:
            self.settle(pool, status >= 500 or no_response)  # a failure: no response, or a 5xx of its own
        breaker = self.breaker
        if breaker is not None and status != 499:
            now = time.monotonic()
            breaker.record(0 if no_response else status, now - ex.started, now)

    def unavailable(self) -> str:
        if self.pools and self.health is not None:
            return "has no endpoint in service (all failed their health checks)"
        return "has no ready endpoints"


class Pool:
    __slots__ = (
        "_ssl_ctx",
        "_ssl_error",
        "address",
        "backend_name",
        "ctx",
        "host",
        "idle",
        "port",
        "tls",
    )

    def __init__(self, ctx: WorkerState, host: str, port: int, tls: UpstreamTLS | None, backend_name: str) -> None:
        self.ctx = ctx  # the worker's Context
        self.host = host
        self.port = port
        self.address = f"{host}:{port}"
        self.tls = tls
        self.backend_name = backend_name
        self.idle: list[UpstreamConnection] = []
        self._ssl_ctx: tlsmod.ResumingContext | None = None
        self._ssl_error: str | None = None

    # -- connections ---------------------------------------------------------------

    def take(self) -> UpstreamConnection | None:
        idle = self.idle
        while idle:
            conn = idle.pop()
            if conn.transport is not None and not conn.transport.is_closing():
                return conn
        return None

    def give_back(self, conn: UpstreamConnection) -> None:
        if len(self.idle) >= self.ctx.settings.pool_idle_limit or self.ctx.draining:
            conn.close()
            return
        conn.idle_since = self.ctx.clock
        if conn.paused:
            # Paused for a slow client; an idle connection must read to notice the server
            # closing it.
            conn.resume_reading()
        self.idle.append(conn)

    def discard(self, conn: UpstreamConnection) -> None:
        try:
            self.idle.remove(conn)
        except ValueError:
            pass

    def expire_idle(self, now: float, idle_timeout: float) -> None:
        if not self.idle:
            return
        keep = []
        for conn in self.idle:
            if now - conn.idle_since > idle_timeout:
                conn.close()
            else:
                keep.append(conn)
        self.idle[:] = keep

    def close_idle(self) -> None:
        for conn in self.idle:
            conn.close()
        self.idle.clear()

    def connect(self, exchange: UpstreamUser) -> None:
        """Open a new connection for ``exchange``; it hears back through ``upstream_ready``
        or ``upstream_failed``."""
        self.ctx.loop.create_task(self._connect(exchange))

    def _context(self) -> ssl.SSLContext | None:
        if self.tls is None:
            return None
        if self._ssl_ctx is None and self._ssl_error is None:
            try:
                self._ssl_ctx = tlsmod.client_context(self.tls)
            except (ssl.SSLError, ValueError, OSError) as exc:
                self._ssl_error = f"cannot load TLS material of {self.tls.policy}: {tlsmod.describe_error(exc)}"
        return self._ssl_ctx

    async def _connect(self, exchange: UpstreamUser) -> None:
        loop = self.ctx.loop
        settings = self.ctx.settings
        tls = self.tls
        try:
            if tls is not None and tls.error:
                raise UpstreamError("upstream_tls_error", f"{tls.policy}: {tls.error}", public=_TLS_CONFIG)
            sslctx = self._context()
            if tls is not None and sslctx is None:
                raise UpstreamError(
                    "upstream_tls_error", self._ssl_error or "TLS context unavailable", public=_TLS_CONFIG
                )
            if sslctx is not None:
                opening = self._open_tls(sslctx)
            else:
                # Compiled, the protocols are cdef classes: asyncio.Protocol's methods without its base class.
                opening = loop.create_connection(  # type: ignore[assignment,type-var]
                    lambda: UpstreamConnection(self), self.host, self.port
                )
            transport, conn = await asyncio.wait_for(opening, settings.connect_timeout)
        except UpstreamError as exc:
            exchange.upstream_failed(exc, self)
            return
        except asyncio.TimeoutError:
            exchange.upstream_failed(
                UpstreamError(
                    "upstream_connect_timeout",
                    f"connect to {self.address} timed out after {settings.connect_timeout:g}s",
                    504,
                    public=f"connect to upstream timed out after {settings.connect_timeout:g}s",
                ),
                self,
            )
            return
        except ssl.SSLError as exc:
            # The client reads what failed, not the names OpenSSL's verify message may quote.
            what = "certificate verify failed" if isinstance(exc, ssl.SSLCertVerificationError) else None
            reason = tlsmod.describe_error(exc)
            exchange.upstream_failed(
                UpstreamError(
                    "upstream_tls_error",
                    f"TLS handshake failed: {reason}",
                    public=f"upstream TLS handshake failed: {what or reason}",
                ),
                self,
            )
            return
        except OSError as exc:
            code = "upstream_connect_refused" if exc.errno == errno.ECONNREFUSED else "upstream_connect_failed"
            reason = exc.strerror or str(exc)
            exchange.upstream_failed(
                UpstreamError(
                    code, f"connect to {self.address} failed: {reason}", public=f"connect to upstream failed: {reason}"
                ),
                self,
            )
            return
        except Exception as exc:
            exchange.upstream_failed(
                UpstreamError(
                    "upstream_connect_failed", f"connect failed: {exc!r}", public="connect to upstream failed"
                ),
                self,
            )
            return
        if tls is not None:
            sslobj = transport.get_extra_info("ssl_object")
            problem = tlsmod.check_subject_alt_names(tls, sslobj) if sslobj is not None else None
            if problem:
                conn.close()
                exchange.upstream_failed(
                    UpstreamError(
                        "upstream_tls_error",
                        f"TLS verification failed: {problem}",
                        public="upstream TLS verification failed: the certificate's names do not match",
                    ),
                    self,
                )
                return
        exchange.upstream_ready(conn, reused=False)

    async def _open_tls(self, sslctx: ssl.SSLContext) -> tuple[TLSLink, UpstreamConnection]:
        """TCP, then the TLS handshake (the link's; SNI and the session to resume come from the
        context's wrap_bio). Cancelled by a timeout, the half-open connection is dropped."""
        loop = self.ctx.loop
        ready: asyncio.Future[None] = loop.create_future()

        def open_bios(_transport: asyncio.BaseTransport) -> Opened:
            incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
            return sslctx.wrap_bio(incoming, outgoing), incoming, outgoing

        conn = UpstreamConnection(self)
        # Compiled, TLSLink is a cdef class: asyncio.Protocol's methods without its base class.
        _raw, link = await loop.create_connection(  # type: ignore[type-var]
            lambda: TLSLink(loop, conn, open_bios, None, ready), self.host, self.port
        )
        try:
            await ready
        except BaseException:
            link.abort()
            raise
        return link, conn

    def remember_session(self, conn: UpstreamConnection) -> None:
        """Keep the session of a connection that completed an exchange, for resumption.

        TLS 1.3 tickets arrive after the handshake, so only a connection that has read a
        response carries a resumable session.
        """
        if self._ssl_ctx is None or conn.transport is None:
            return
        sslobj = conn.transport.get_extra_info("ssl_object")
        session = sslobj.session if sslobj is not None else None
        if session is not None and (session.has_ticket or sslobj.version() != "TLSv1.3"):
            self._ssl_ctx.session_to_resume = session


class UpstreamConnection:
    # An asyncio protocol by shape, not by base class: compiled, it is a C type (see the .pxd), and
    # those cannot derive from a Python class. The loop only calls the methods below.
    __slots__ = (
        "_body_left",
        "_head",
        "_head_pos",
        "_in_head",
        "_informational",
        "_keep_alive",
        "_skip_body",
        "_switched",
        "error",
        "exchange",
        "got_bytes",
        "idle_since",
        "parser",
        "paused",
        "plain_head",
        "pool",
        "served",
        "transport",
    )

    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.exchange: UpstreamUser | None = None  # a client's Exchange or a MirrorRequest
        self.served = 0
        self.error: Exception | None = None  # connection_lost's, for an exchange that attaches after it
        self.paused = False
        self.idle_since = 0.0
        self.got_bytes = False
        # The response head is read from the received bytes in one call once llhttp says it
        # is complete (see parse_response_head): bytes since the head began, and where it began.
        self._head = b""
        self._head_pos = 0
        self._in_head = True
        self._informational = False
        self._skip_body = False
        self._switched: tuple[bytes, list[tuple[bytes, bytes]]] | None = None
        # A plain response's body bytes still due, and its keep-alive (see _plain_body).
        self._body_left = 0
        self._keep_alive = False
        # What read_response_head read of a plain head, for the exchange's relay_response_head: one
        # object per connection, refilled by every read.
        self.plain_head = codec.ResponseHead()

    # -- asyncio.Protocol ------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports (and TLSLink) are not asyncio.Transport subclasses; they quack alike.
        self.transport = transport  # type: ignore[assignment]
        transport.set_write_buffer_limits(WRITE_HIGH, WRITE_LOW)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        exchange = self.exchange
        if exchange is None:
            # Bytes on an idle connection: the server is confused or closing; never reuse.
            self.close()
            return
        self.got_bytes = True
        ctx = self.pool.ctx
        exchange.deadline = ctx.clock + ctx.response_window
        if self._body_left:
            self._plain_body(data, 0)
            exchange.flush_client()
            return
        if self._in_head and not self._head and not exchange.is_head:
            plain = read_response_head(data, 0, MAX_RESPONSE_HEAD, self.plain_head)
            if plain is not None:
                end, status, length, keep_alive = plain
                if end + length <= len(data):
                    # The whole response in one read, the common case for small answers: one call
                    # instead of head, body, end and flush (each a Python-level call from here).
                    # Whether bytes follow the body is checked there, in typed C code.
                    exchange.whole_response(self, status, data, end, length, keep_alive)
                    return
                self._in_head = False
                self._keep_alive = keep_alive
                self._body_left = length
                exchange.response_head(status, length, False, data, 0, end - 4, keep_alive)
                self._plain_body(data, end)
                exchange.flush_client()
                return
        if self._in_head:
            head = self._head = self._head + data if self._head else data
            pos = self._head_pos
            if len(head) - pos > MAX_RESPONSE_HEAD and head.find(b"\r\n\r\n", pos, pos + MAX_RESPONSE_HEAD) < 0:
                exchange.upstream_protocol_error(f"upstream response head exceeds {MAX_RESPONSE_HEAD} bytes")
                self.close()
                return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            if self.exchange is not None:
                self.exchange.upstream_protocol_error(f"invalid HTTP response from upstream: {exc}")
            self.close()
            return
        except httptools.HttpParserUpgrade as exc:
            # A 101: only a WebSocket handshake the gateway forwarded may get one.
            switched = self._switched
            self._switched = None
            if switched is not None and self.exchange is not None and self.exchange.upgrade is not None:
                from fsmfast.proxy.websocket import open_tunnel

                rest = data[exc.args[0] :] if exc.args else b""
                # Only an Exchange asks for an upgrade; importing its type here would close a cycle.
                open_tunnel(self.exchange, self, switched[0], switched[1], rest)  # type: ignore[arg-type]
            else:
                if self.exchange is not None:
                    self.exchange.upstream_protocol_error("upstream switched protocols unasked")
                self.close()
            return
        if self._skip_body:
            # A HEAD response ended at its head; llhttp would wait for a body, so start afresh.
            self._skip_body = False
            self._in_head = True
            self.parser = httptools.HttpResponseParser(self)
        exchange.flush_client()

    def _plain_body(self, data: bytes, pos: int) -> None:
        """Passes on what ``data[pos:]`` holds of a plain response's body; completes the exchange
        at its end. Bytes past the end mean a confused server: the connection is not reused."""
        left = self._body_left
        take = len(data) - pos
        if take > left:
            take = left
        exchange = self.exchange
        if take and exchange is not None:
            exchange.response_body(data if take == len(data) else data[pos : pos + take])
        self._body_left = left = left - take
        if not left:
            self._in_head = True
            if self.exchange is not None:
                self.exchange.response_complete(self, self._keep_alive and pos + take == len(data))

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.error = exc
        # Breaks the parser <-> protocol cycle (see ClientConnection.connection_lost); nothing parses after this.
        self.parser = None  # type: ignore[assignment]
        self.pool.discard(self)
        exchange = self.exchange
        if exchange is not None:
            self.exchange = None
            exchange.upstream_lost(self, exc)
            exchange.flush_client()

    def pause_writing(self) -> None:
        if self.exchange is not None:
            self.exchange.upstream_write_paused()

    def resume_writing(self) -> None:
        if self.exchange is not None:
            self.exchange.upstream_write_resumed()

    # -- httptools callbacks -----------------------------------------------------------

    def on_headers_complete(self) -> None:
        head = self._head
        start = self._head_pos
        end = head.find(b"\r\n\r\n", start)
        if end < 0:  # llhttp accepted a head we cannot find: never guess at framing
            raise httptools.HttpParserError("response head without CRLF CRLF")
        self._head_pos = end + 4
        status, length, chunked = scan_response_head(head, start, end)
        if 100 <= status < 200:
            # Interim responses (103 Early Hints, a stray 100) are not forwarded: Expect is
            # answered by the gateway itself. A 101 is kept for the tunnel (see data_received).
            self._informational = True
            if status == 101:
                _status, reason, headers = parse_response_head(head, start, end)
                self._switched = (reason, headers)
            return
        self._in_head = False
        self._head = b""
        self._head_pos = 0
        exchange = self.exchange
        if exchange is None:
            return
        keep_alive = self.parser.should_keep_alive()
        if exchange.is_head:
            self._skip_body = True
        exchange.response_head(status, length, chunked, head, start, end, keep_alive)
        if self._skip_body and self.exchange is not None:
            self.exchange.response_complete(self, keep_alive)

    def on_body(self, body: bytes) -> None:
        if self.exchange is not None and not self._skip_body:
            self.exchange.response_body(body)

    def on_message_complete(self) -> None:
        if self._informational:
            self._informational = False
            return
        self._in_head = True
        if self.exchange is not None and not self._skip_body:
            self.exchange.response_complete(self, self.parser.should_keep_alive())

    # -- control -------------------------------------------------------------------------

    def write(self, pieces: list[bytes]) -> None:
        if self.transport is not None:
            self.transport.writelines(pieces)  # over TLS, the link makes small pieces one record

    def pause_reading(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.paused = False
            self.transport.resume_reading()

    def close(self) -> None:
        self.exchange = None
        if self.transport is not None:
            self.transport.close()
        self.pool.discard(self)

    def abort(self) -> None:
        self.exchange = None
        if self.transport is not None:
            self.transport.abort()
        self.pool.discard(self)
