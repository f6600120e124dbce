"""One proxied request/response: an explicit state machine driven by protocol callbacks.

Theory of operation
-------------------
A client connection parses requests with httptools and queues one ``Exchange`` per
request. Only the head of the queue is active; the others wait in QUEUED with their
bodies buffered up to a bound (pipelined clients get answers in order). The transitions, as
fsmfast.proxy.states.TRANSITIONS has them (a test keeps this list and the table the same; each
move is checked against the table when state checks are on, see ``check_states``):

    QUEUED     --upstream_ready-----> SENDING
    QUEUED     --connect------------> CONNECTING
    QUEUED     --reply--------------> DONE
    QUEUED     --client_lost--------> DONE
    CONNECTING --upstream_ready-----> SENDING
    CONNECTING --reply--------------> DONE
    CONNECTING --client_lost--------> DONE
    CONNECTING --backoff------------> WAITING
    SENDING    --response_head------> RESPONDING
    SENDING    --retry--------------> CONNECTING
    SENDING    --reply--------------> DONE
    SENDING    --upgrade------------> DONE
    SENDING    --client_lost--------> DONE
    SENDING    --backoff------------> WAITING
    RESPONDING --response_complete--> DONE
    RESPONDING --upstream_eof-------> DONE
    RESPONDING --abort--------------> DONE
    RESPONDING --client_lost--------> DONE
    WAITING    --upstream_ready-----> SENDING
    WAITING    --connect------------> CONNECTING
    WAITING    --reply--------------> DONE
    WAITING    --client_lost--------> DONE

- SENDING: the request head went upstream, the body streams as it arrives; the response
  timeout runs. A reused (pooled) connection that dies here before any response byte is
  retried once on a fresh connection when the request is idempotent and has no body.
- RESPONDING: the response head went to the client; the body streams re-framed
  (Content-Length kept, otherwise chunked for HTTP/1.1 clients or close-delimited for
  HTTP/1.0). An upstream failure now aborts the client connection, so a truncated body
  can never pass for a complete one.
- WAITING: a retry policy (``fsmfast.resilience.retry``) decided to try again: a failed connect,
  a reset or timeout of an idempotent request, or a listed status before anything of it reached
  the client. The failed attempt is settled with the backend (passive health, in-flight count),
  and after the backoff another endpoint is picked (one not tried yet when there is one). The
  request's body is kept for the replay (``replay``, at most REPLAY_LIMIT bytes); a larger body
  is streamed as without a policy and never retried.

Back-pressure is linked both ways: a full client write buffer pauses upstream reading,
a full upstream write buffer pauses client reading.

Errors the gateway produces carry a reason code (access log) and a one-line text body. The body
says what failed (connect refused, TLS verification, timeout, invalid response, no healthy
upstream); the namespace, Service, endpoint address and parser messages go to the error and
access logs, and into the body only where detailed errors are on (``detailed_errors``): the
text is chosen where the error is produced, so the request path pays nothing for it.
"""

from __future__ import annotations

import logging
import os
import time
from typing import TYPE_CHECKING, Any, cast

from fsmfast.codec import (
    FRAME_CHUNKED,
    FRAME_CLOSE,
    FRAME_NONE,
    build_request_head,
    build_response_head,
    chunk,
    parse_response_head,
    relay_response_head,
)
from fsmfast.pipeline.decision import LocalReply, Redirect
from fsmfast.proxy import mirror, states
from fsmfast.proxy.local_reply import CONTINUE_100, error_response
from fsmfast.proxy.roles import ClientSide, UpstreamUser
from fsmfast.proxy.states import (
    CHECK_STATES,
    CONNECTING,
    DONE,
    QUEUED,
    RESPONDING,
    SENDING,
    WAITING,
    StopParsing,
    UpstreamError,
    transition,
)
from fsmfast.proxy.upstream import BackendState, Pool, UpstreamConnection
from fsmfast.proxy.websocket import UPGRADE_WEBSOCKET
from fsmfast.resilience.retry import Attempts

if TYPE_CHECKING:
    from fsmfast.proxy.downstream import ClientConnection
    from fsmfast.proxy.filters import RequestPlan
    from fsmfast.proxy.route_timer import RouteTimer
    from fsmfast.proxy.router import RouteRule
    from fsmfast.resilience.retry import RetryPlan

log = logging.getLogger("fsmfast.proxy")

IDEMPOTENT = frozenset({b"GET", b"HEAD", b"OPTIONS", b"TRACE", b"PUT", b"DELETE"})
# Body bytes a waiting exchange may hold before the client is paused.
PENDING_LIMIT = 256 * 1024
# An upstream that gives up (closes, or lets the response timeout run out) while the request body is
# still due, from a client that has sent none of it for this long, was waiting for that client: the
# answer is the client's timeout (408), not an upstream failure. Servers' read timeouts are seconds.
CLIENT_STALL = 1.0
LAST_CHUNK = b"0\r\n\r\n"
# A request body a retry policy may replay is kept up to this size; a larger one streams as without
# a policy, and its request is not retried (nginx keeps none in memory either past its buffer).
REPLAY_LIMIT = 64 * 1024
# Failures of an attempt that a retry may follow whatever the method: the request never reached
# the upstream. After a reset, a timeout or a status, only idempotent requests are tried again.
NOT_SENT = frozenset(
    {"upstream_connect_refused", "upstream_connect_failed", "upstream_connect_timeout", "upstream_tls_error"}
)

# Request ids the gateway makes (a client's valid X-Request-Id is kept instead): 32 lowercase hex
# digits, this worker's random 64-bit prefix then its count of ids made, as nginx's counter-based
# $request_id. Unique across workers and restarts by the prefix, drawn when a worker starts
# (seed_request_ids); the count makes them unique within the worker. An exchange holds only its
# number (``rid``): the id's bytes are written by build_request_head into the head it builds anyway,
# and its text is made only for the access log.
RID_TEXT = "0" * 16
RID_PREFIX = RID_TEXT.encode()
RID_SEQ = 0


def seed_request_ids(prefix: int) -> None:
    """Start this process's request ids over from a new 64-bit prefix (a worker, once it is forked)."""
    global RID_TEXT, RID_PREFIX, RID_SEQ
    RID_TEXT = f"{prefix & 0xFFFFFFFFFFFFFFFF:016x}"
    RID_PREFIX = RID_TEXT.encode()
    RID_SEQ = 0


seed_request_ids(int.from_bytes(os.urandom(8), "big"))


# What the gateway answers itself (Exchange.local): status, text, reason code, Location, more headers.
LocalAnswer = tuple[int, str, str, bytes, tuple[tuple[bytes, bytes], ...]]


class Hold:
    """What ``Exchange.local`` holds while a request waits out a route policy's delay: the seconds,
    then the local answer to give after it (None: forward the request); or, with ``future``, until
    that is done and ``resolve(future)`` says what now (fsmfast.pipeline.decision.Delayed)."""

    __slots__ = ("future", "resolve", "seconds", "then")

    def __init__(self, seconds: float, then: LocalAnswer | None, future: Any = None, resolve: Any = None) -> None:
        self.seconds = seconds
        self.then = then
        self.future = future
        self.resolve = resolve


def check_states(on: bool) -> None:
    """Check every transition against fsmfast.proxy.states.TRANSITIONS (debug builds, tests).

    The flag is a module global (a C one when compiled), read where each transition is taken.
    """
    global CHECK_STATES
    CHECK_STATES = on
    states.CHECK_STATES = on  # for the modules that read it there (websocket)


class Exchange(UpstreamUser):
    __slots__ = (
        "attempts",
        "backend",
        "body_bytes",
        "body_room",
        "client",
        "close_delimited",
        "conn",
        "expect_continue",
        "headers",
        "host",
        "http11",
        "keep_alive",
        "local",
        "method",
        "mirrors",
        "pending",
        "pending_size",
        "plan",
        "pool",
        "reason",
        "req_framing",
        "request_done",
        "request_id",
        "resp_framing",
        "retried",
        "retry",
        "reused",
        "rid",
        "rule",
        "started",
        "state",
        "status",
        "target",
        "timer",
        "up_out",
        "up_paused",
    )

    # The fields, for the type checker (exchange.pxd declares them for C): ``start`` sets them all.
    client: ClientSide
    method: bytes
    target: bytes
    http11: bool
    headers: list[tuple[bytes, bytes]]
    host: bytes
    req_framing: int
    keep_alive: bool
    expect_continue: bool
    state: int
    started: float
    local: LocalAnswer | Hold | None  # or a route policy's delay
    rule: RouteRule | None
    backend: BackendState | None
    plan: RequestPlan | None
    timer: RouteTimer | None
    mirrors: list[mirror.MirrorRequest] | None
    pool: Pool | None
    conn: UpstreamConnection | None
    reused: bool
    retried: bool
    request_done: bool
    pending: list[bytes]
    pending_size: int
    up_out: list[bytes]
    up_paused: bool
    status: int
    resp_framing: int
    close_delimited: bool
    body_bytes: int
    reason: str | None
    body_room: int
    request_id: bytes | None  # the client's X-Request-Id when valid (scan_request), else None
    rid: int  # with request_id None: the number of the id this worker made for the request
    # A retry policy's plan (None without one, or once the body outgrew REPLAY_LIMIT), and the
    # request's retries once it needs them (the body kept, the attempts made): two fields, so that
    # an exchange without a policy pays two stores.
    retry: RetryPlan | None
    attempts: Attempts | None

    @staticmethod
    def start(
        client: ClientSide,
        method: bytes,
        target: bytes,
        http11: bool,
        headers: list[tuple[bytes, bytes]],
        host: bytes,
        req_framing: int,
        keep_alive: bool,
        expect_continue: bool,
        request_id: bytes | None,
    ) -> Exchange:
        """A new exchange: the one constructor. A static method rather than ``__init__``: compiled,
        it is a C call with C arguments, where a constructor call parses ten arguments per request.
        ``request_id``: the client's valid X-Request-Id, or None for one made here."""
        global RID_SEQ
        self = Exchange.__new__(Exchange)
        self.client = client
        self.method = method
        self.target = target
        self.http11 = http11
        self.headers = headers
        self.host = host
        self.req_framing = req_framing
        self.keep_alive = keep_alive
        self.expect_continue = expect_continue
        self.request_id = request_id
        if request_id is None:
            RID_SEQ += 1
            self.rid = RID_SEQ
        else:
            self.rid = 0
        self.is_head = method == b"HEAD"
        self.state = QUEUED
        # Where the request's duration starts (metrics, the access log). Compiled, this is a C read of
        # the clock, not a Python call: exchange.pxd cimports Cython's cpython.time as ``time``.
        self.started = time.monotonic()
        self.deadline = 0.0
        self.local = None
        self.rule = None
        self.backend = None
        # HTTPRoute filters, timeouts and mirrors of the chosen rule and backendRef (None: none).
        self.plan = None
        self.timer = None
        self.mirrors = None
        self.pool = None
        self.conn = None
        self.reused = False
        self.retried = False
        # A request without a body is complete once its head is parsed.
        self.request_done = req_framing == FRAME_NONE
        self.pending = []
        self.pending_size = 0
        self.up_out = []
        self.up_paused = False
        self.status = 0
        self.resp_framing = FRAME_NONE
        self.close_delimited = False
        self.body_bytes = 0
        self.reason = None
        # Hardening knobs of the rule (fsmfast.proxy.options), set by the client side when used:
        # body bytes still allowed for a chunked body (-1: no limit), and b"websocket" for a
        # handshake the rule lets through.
        self.body_room = -1
        self.upgrade = None
        self.retry = None
        self.attempts = None
        return self

    # -- the request id -------------------------------------------------------------------

    def request_id_text(self) -> str:
        """The request's id as the access log shows it (and the upstream received it)."""
        if self.request_id is not None:
            return self.request_id.decode("latin-1")
        return f"{RID_TEXT}{self.rid:016x}"

    def request_id_args(self) -> tuple[bytes, int]:
        """``build_request_head``'s ``rid_prefix`` and ``rid`` for a copy of this request (a mirror)."""
        return RID_PREFIX, self.rid

    # -- decisions made when the head is parsed ---------------------------------------

    def set_local(
        self, status: int, text: str, code: str, location: bytes = b"", headers: tuple[tuple[bytes, bytes], ...] = ()
    ) -> None:
        self.local = (status, text, code, location, headers)

    def answer(self, decision: LocalReply | Redirect) -> None:
        """A pipeline decision the gateway answers itself (a refusal, a redirect), kept to be sent in
        its turn; a refusal's detail replaces its text where detailed errors are on."""
        if isinstance(decision, Redirect):
            self.set_local(decision.status, decision.text, "redirect", decision.location)
        elif decision.detail is not None and self.detailed_errors():
            self.set_local(decision.status, decision.detail, decision.code, b"", decision.headers)
        else:
            self.set_local(decision.status, decision.text, decision.code, b"", decision.headers)

    # -- the client side ----------------------------------------------------------------

    def activate(self) -> None:
        """Called when this exchange reaches the head of its connection's queue."""
        if self.state != QUEUED:
            return
        if self.local is not None:
            if type(self.local) is Hold:
                self._hold()
                return
            self.reply(*self.local)  # type: ignore[misc]  # a tuple: a Hold was taken above
            return
        backend = self.backend
        if backend is None:
            pool = None
        elif backend.keyed:  # resilience policies (fsmfast.resilience): health, sessions, retries...
            if backend.retry is not None:
                self._keep_for_retry(backend.retry)
            pool = backend.pick_for(self)
        else:
            pool = backend.pick()
        if pool is None:
            self._no_endpoint()
            return
        self.pool = pool
        if self.expect_continue and not self.request_done:
            self.client.out.append(CONTINUE_100)
        conn = pool.take()
        if conn is not None:
            self.upstream_ready(conn, reused=True)
        else:
            if CHECK_STATES:
                transition(self, self.state, "connect", CONNECTING)
            self.state = CONNECTING
            pool.connect(self)

    def _hold(self) -> None:
        """A route policy asked this request to wait (fault injection's delay): it stays first in its
        connection's queue until then."""
        hold = self.local
        assert isinstance(hold, Hold)
        if hold.future is not None:
            hold.future.add_done_callback(self._settled)
        else:
            self.client.ctx.loop.call_later(hold.seconds, self._held)

    def _settled(self, future: Any) -> None:
        """What the request waited for is known (a fleet-wide rate limit's decision)."""
        hold = self.local
        if type(hold) is Hold and hold.future is future:
            outcome = hold.resolve(future)
            if type(outcome) is LocalReply:
                self.answer(outcome)  # refused
            else:
                wait = max(outcome or 0.0, hold.seconds)
                self.local = Hold(wait, hold.then) if wait > 0 else hold.then
                if wait > 0 and self.state == QUEUED:
                    self._hold()
                    return
        if self.state == QUEUED:
            self.activate()
            self.client.flush()

    def _held(self) -> None:
        hold = self.local
        if type(hold) is Hold:  # else a route timeout answered meanwhile: that answer goes instead
            self.local = hold.then
        if self.state == QUEUED:  # not if the client left meanwhile
            self.activate()
            self.client.flush()

    def _no_endpoint(self) -> None:
        backend = self.backend
        text = "no healthy upstream"
        if self.detailed_errors():
            why = backend.unavailable() if backend is not None else "no backend"
            text += f": service {getattr(backend, 'name', '?')} {why}"
        self.reply(503, text, "no_healthy_upstream")  # the access log names the backend

    def _keep_for_retry(self, retry: RetryPlan) -> None:
        """A retry policy applies: count the request for the retry budget (the worker's tick hands
        the counts to the machine's budget) and keep its body for a replay, when it is small enough."""
        backend = self.backend
        assert backend is not None
        backend.retry_requests += 1
        if self.req_framing > REPLAY_LIMIT or self.pending_size > REPLAY_LIMIT:
            return  # too big to keep: streamed, never retried
        self.retry = retry
        if self.pending:
            # What arrived while the exchange waited its turn; from now on the body goes to the kept
            # one (upstream_ready sends it), not to ``pending``.
            self.attempts = Attempts(self.pending, self.pending_size)
            self.pending = []
            self.pending_size = 0

    def request_body(self, data: bytes) -> None:
        if self.body_room >= 0:
            self.body_room -= len(data)
            if self.body_room < 0:
                self.body_too_large()
                return
        if self.mirrors is not None:
            mirror.feed(self.mirrors, data)
        if self.req_framing == FRAME_CHUNKED:
            pieces = chunk(data)
        else:
            pieces = [data]
        self._send_up(pieces, len(data))

    def request_complete(self) -> None:
        self.request_done = True
        if self.mirrors is not None:
            mirror.complete(self.mirrors)
            self.mirrors = None
        if self.req_framing == FRAME_CHUNKED:
            self._send_up([LAST_CHUNK], 0)
        if self.state == DONE and self.keep_alive:
            # The response finished first; the connection can move on now.
            self.client.exchange_finished(self)

    def _send_up(self, pieces: list[bytes], size: int) -> None:
        state = self.state
        if self.retry is not None:
            self._keep(pieces, size, state)
            return
        if state in (SENDING, RESPONDING):
            if self.conn is not None:
                self.up_out.extend(pieces)
        elif state in (QUEUED, CONNECTING, WAITING):
            self.pending.extend(pieces)
            self.pending_size += size
            if self.pending_size > PENDING_LIMIT:
                self.client.pause_reading(self.client.PAUSE_PENDING)
        # DONE: the response is already complete; the rest of the body is dropped.

    def _keep(self, pieces: list[bytes], size: int, state: int) -> None:
        """Body pieces of a request a retry may replay: kept, and sent on when an upstream has the head."""
        a = self.attempts
        if a is None:
            a = self.attempts = Attempts([], 0)
        body = a.body
        assert body is not None  # ``retry`` is None once the body is no longer kept
        a.size += size
        if a.size <= REPLAY_LIMIT:
            body.extend(pieces)
            if state in (SENDING, RESPONDING) and self.conn is not None:
                self.up_out.extend(pieces)
            return
        # Too big to keep: no retry from now on. What is still due upstream is all of it when no
        # upstream has the head yet, else just these pieces.
        a.body = None
        self.retry = None
        if state in (SENDING, RESPONDING):
            if self.conn is not None:
                self.up_out.extend(pieces)
        elif state != DONE:
            body.extend(pieces)
            self.pending = body
            self.pending_size = a.size
            if self.pending_size > PENDING_LIMIT:
                self.client.pause_reading(self.client.PAUSE_PENDING)

    def flush_up(self) -> None:
        if self.up_out and self.conn is not None:
            self.conn.write(self.up_out)
            self.up_out = []
            # A long upload keeps the exchange alive: the response timeout counts from the
            # last byte exchanged with the upstream, in either direction (nginx's send/read).
            self.touch()
        elif self.up_out:
            self.up_out = []

    def flush_client(self) -> None:
        self.client.flush()

    def touch(self) -> None:
        ctx = self.client.ctx
        self.deadline = ctx.clock + ctx.response_window

    def client_lost(self) -> None:
        """The client went away. Nothing more will be written to it."""
        if self.state == DONE:
            return
        conn = self.conn
        self.conn = None
        if conn is not None:
            conn.abort()  # mid-exchange: the upstream connection cannot be reused
        if self.timer is not None:
            self.timer.cancel()
        if self.attempts is not None and self.attempts.timer is not None:
            self.attempts.timer.cancel()  # in a retry's backoff
            self.attempts.timer = None
        if self.status == 0:
            self.status = 499  # nginx's code for "client closed request"
        self.reason = self.reason or "downstream_disconnect"
        if CHECK_STATES:
            transition(self, self.state, "client_lost", DONE)
        self.state = DONE
        self._record()
        if self.client.ctx.access_log.enabled:
            self._log()

    def client_write_paused(self) -> None:
        if self.conn is not None:
            self.conn.pause_reading()

    def client_write_resumed(self) -> None:
        if self.conn is not None:
            self.conn.resume_reading()
        if self.state == RESPONDING:
            self.touch()  # the upstream was not read while the client was behind: its window starts now

    # -- the upstream side ----------------------------------------------------------------

    def upstream_ready(self, connection: UpstreamConnection, reused: bool) -> None:
        conn = connection  # typed here (the .pxd): the role's signature cannot name this module's types
        if self.state == DONE:
            # The client left while we connected: a fresh connection is still useful.
            conn.pool.give_back(conn)
            return
        conn.exchange = self
        conn.got_bytes = False
        self.conn = conn
        self.reused = reused
        if CHECK_STATES:
            transition(self, self.state, "upstream_ready", SENDING)
        self.state = SENDING
        self.touch()
        target, headers = self.target, self.headers
        if self.plan is not None:
            headers, target = self.plan.request(headers, target)
        if self.timer is not None:
            self.timer.backend_started()
        head = build_request_head(
            self.method,
            target,
            headers,
            self.client.client_ip,
            self.client.scheme,
            self.host,
            self.req_framing,
            RID_PREFIX,
            self.rid,
        )
        if self.upgrade is not None:
            head = head[:-2] + UPGRADE_WEBSOCKET
        transport = conn.transport
        if transport is None:
            # Lost between its handshake and now: a TLS 1.3 server that refuses our certificate
            # sends its alert only after the handshake completed on our side. connection_lost()
            # found no exchange to tell then, so its news is taken here.
            conn.exchange = None
            self.upstream_lost(conn, conn.error)
            self.flush_client()
            return
        if self.attempts is not None and self.attempts.body:
            conn.write([head, *self.attempts.body])  # the body so far, kept for a retry (see _keep)
        elif self.pending:
            conn.write([head, *self.pending])
            self.pending = []
            self.pending_size = 0
            self.client.resume_reading(self.client.PAUSE_PENDING)
        elif self.request_done or self.upgrade is not None:
            transport.write(head)
        else:
            # The body is still to come: the head waits for it in up_out, which the client side
            # flushes after parsing each read. A body that turns out malformed in the same read
            # (a bad chunk size) is then refused before the upstream has seen a single byte.
            self.up_out.append(head)

    def upstream_failed(self, err: UpstreamError, pool: Pool) -> None:
        if self.state == DONE:
            return
        self.conn = None
        if self.retry is not None and self._may_retry(err.code in NOT_SENT):
            log.info(
                "upstream %s endpoint %s: %s [%s]; retrying", pool.backend_name, pool.address, err.message, err.code
            )
            self._backoff(pool, err.code)
            return
        log.warning(
            "upstream %s endpoint %s: %s [%s]",
            pool.backend_name,
            pool.address,
            err.message,
            err.code,
        )
        if self.detailed_errors():
            self.reply(err.status, f"upstream {pool.backend_name} ({pool.address}): {err.message}", err.code)
        else:
            self.reply(err.status, err.public, err.code)
        self.client.flush()

    def upstream_write_paused(self) -> None:
        self.up_paused = True
        self.client.pause_reading(self.client.PAUSE_UPSTREAM)

    def upstream_write_resumed(self) -> None:
        self.up_paused = False
        self.client.resume_reading(self.client.PAUSE_UPSTREAM)

    def response_head(
        self,
        status: int,
        length: int,
        chunked: bool,
        head: bytes,
        start: int,
        end: int,
        up_keep_alive: bool,
        body_end: int = 0,
    ) -> None:
        """The upstream's response head ``head[start:end]``: its status and framing already read
        (``scan_response_head``), its headers still in the buffer. ``body_end`` past ``end + 4``:
        the whole body follows the head in ``head`` (``whole_response``) and goes out with it."""
        if self.state != SENDING:
            return
        retry = self.retry
        if (
            retry is not None
            and status >= retry.floor
            and retry.retriable(status)
            and self.conn is not None
            and self._may_retry(False)
        ):
            conn = self.conn
            self.conn = None
            conn.abort()  # the rest of its response is not read: the connection cannot be reused
            self._backoff(conn.pool, f"status_{status}")
            return
        if CHECK_STATES:
            transition(self, SENDING, "response_head", RESPONDING)
        self.state = RESPONDING
        self.status = status
        self.touch()
        if status == 204 or status == 304:
            framing = FRAME_NONE
        elif self.is_head:
            framing = length if length >= 0 else (FRAME_CHUNKED if chunked and self.http11 else FRAME_NONE)
        elif chunked:
            framing = FRAME_CHUNKED if self.http11 else FRAME_CLOSE
        elif length >= 0:
            framing = length
        else:
            self.close_delimited = True
            framing = FRAME_CHUNKED if self.http11 else FRAME_CLOSE
        self.resp_framing = framing
        client = self.client
        if framing == FRAME_CLOSE or not self.request_done or client.ctx.draining:
            self.keep_alive = False
        if self.is_head or status == 204 or status == 304:
            self.resp_framing = FRAME_NONE  # nothing follows the head
        if self.plan is not None:
            # ResponseHeaderModifier: the one case that needs the headers as a list.
            _status, reason, headers = parse_response_head(head, start, end)
            headers = self.plan.response(headers)
            client.out.append(build_response_head(self.http11, status, reason, headers, framing, self.keep_alive))
            if body_end > end + 4:
                client.out.append(head[end + 4 : body_end])
        else:
            # The body, when whole, in the head's own bytes object: one piece fewer to write. The
            # connection's plain_head has what its read_response_head found in this head, if it read it.
            plain = self.conn.plain_head if self.conn is not None else None
            client.out.append(
                relay_response_head(head, start, end, self.http11, framing, self.keep_alive, body_end, plain)
            )
        if body_end > end + 4:
            self.body_bytes += body_end - end - 4

    def whole_response(
        self, conn: UpstreamConnection, status: int, data: bytes, end: int, length: int, up_keep_alive: bool
    ) -> None:
        """A plain response whose head (up to ``end``) and whole ``length``-byte body are all in
        ``data``; bytes after the body mean a confused server, whose connection is not reused."""
        self.response_head(status, length, False, data, 0, end - 4, up_keep_alive, end + length)
        self.response_complete(conn, up_keep_alive and end + length == len(data))
        self.client.flush()

    def response_body(self, data: bytes) -> None:
        self.body_bytes += len(data)
        if self.resp_framing == FRAME_CHUNKED:
            self.client.out.extend(chunk(data))
        else:
            self.client.out.append(data)

    def response_complete(self, connection: UpstreamConnection, up_keep_alive: bool) -> None:
        conn = connection  # typed (see upstream_ready)
        if self.state != RESPONDING:
            return
        if CHECK_STATES:
            transition(self, RESPONDING, "response_complete", DONE)
        if self.resp_framing == FRAME_CHUNKED:
            self.client.out.append(LAST_CHUNK)
        self.conn = None
        conn.exchange = None
        conn.served += 1
        pool = conn.pool
        # After HEAD, a server that wrongly sends a body would poison the next exchange:
        # HEAD connections are not reused.
        if up_keep_alive and self.request_done and not self.close_delimited and not self.is_head:
            if pool.tls is not None and conn.served == 1:
                # Reading the session is costly (OpenSSL serializes it): once per connection,
                # after its first response, when a TLS 1.3 ticket has arrived.
                pool.remember_session(conn)
            pool.give_back(conn)
        else:
            conn.close()
        self._finish()

    def upstream_lost(self, connection: UpstreamConnection, exc: Exception | None) -> None:
        conn = connection  # typed (see upstream_ready)
        self.conn = None
        state = self.state
        if state == RESPONDING:
            if self.close_delimited:
                # EOF is how a close-delimited body ends: the response is complete.
                if CHECK_STATES:
                    transition(self, RESPONDING, "upstream_eof", DONE)
                if self.resp_framing == FRAME_CHUNKED:
                    self.client.out.append(LAST_CHUNK)
                self._finish()
                return
            self._abort_client("upstream_reset_mid_body", "upstream closed the connection mid-body")
            return
        if state != SENDING:
            return
        if (
            self.reused
            and not conn.got_bytes
            and not self.retried
            and self.req_framing == FRAME_NONE
            and self.method in IDEMPOTENT
            and self.pool is not None
        ):
            # A pooled connection the server had already closed: retry once, fresh.
            self.retried = True
            if CHECK_STATES:
                transition(self, SENDING, "retry", CONNECTING)
            self.state = CONNECTING
            self.pool.connect(self)
            return
        if self._client_stalled():
            self._blame_client("closed the connection")
            return
        detail = f": {exc}" if exc else ""
        pool = conn.pool
        if pool.tls is None:
            # The classic cause: plain HTTP sent to a TLS port. FSM answered with an empty
            # reply here; say what to check instead.
            detail += " (if this port speaks TLS, attach an UpstreamTLSPolicy or BackendTLSPolicy to the service)"
        self.upstream_failed(
            UpstreamError(
                "upstream_reset",
                f"upstream closed the connection before responding{detail}",
                public="upstream closed the connection before responding",
            ),
            pool,
        )

    # -- retries (a retry policy applies: ``retry`` is set) ----------------------------------

    def _may_retry(self, not_sent: bool) -> bool:
        """Whether the attempt that just failed may be followed by another: retries left, the body
        kept, an idempotent method unless the request never reached the upstream, and room in the
        retry budget (which counts the retry when it allows it)."""
        retry = self.retry
        if retry is None or (self.attempts.tries if self.attempts is not None else 0) >= retry.attempts:
            return False
        if not not_sent and self.method not in IDEMPOTENT:
            return False
        if retry.budget is not None and not retry.budget.allow(self.client.ctx.clock):
            self.client.ctx.stats.event("retry_refused", self.backend.name if self.backend else "", "budget_exhausted")
            log.warning("retry budget of %s exhausted: not retrying", self.backend.name if self.backend else "?")
            return False
        return True

    def _backoff(self, pool: Pool, why: str) -> None:
        """Settle the failed attempt on ``pool`` and try again after the plan's backoff."""
        retry = self.retry
        backend = self.backend
        assert retry is not None and backend is not None
        backend.settle(pool, True)
        self.pool = None
        a = self.attempts
        if a is None:
            a = self.attempts = Attempts([], 0)
        a.tries += 1
        a.tried.append(pool)
        a.why.append(f"{pool.address} {why}")  # the access log: which endpoint failed, and how
        self.client.ctx.stats.event("retry", backend.name, why)
        if CHECK_STATES:
            transition(self, self.state, "backoff", WAITING)
        self.state = WAITING
        a.timer = self.client.ctx.loop.call_later(retry.delay(a.tries), self._again)

    def _again(self) -> None:
        """The backoff is over: the next attempt, on another endpoint when there is one."""
        if self.attempts is not None:
            self.attempts.timer = None
        if self.state != WAITING:
            return
        backend = self.backend
        assert backend is not None
        pool = backend.pick_for(self)
        if pool is None:
            self._no_endpoint()
            self.client.flush()
            return
        self.pool = pool
        conn = pool.take()
        if conn is not None:
            self.upstream_ready(conn, reused=True)
        else:
            if CHECK_STATES:
                transition(self, WAITING, "connect", CONNECTING)
            self.state = CONNECTING
            pool.connect(self)
        self.client.flush()

    def upstream_protocol_error(self, message: str) -> None:
        conn = self.conn
        self.conn = None
        if self.state == SENDING and conn is not None:
            self.upstream_failed(
                UpstreamError("upstream_invalid_response", message, public="invalid HTTP response from upstream"),
                conn.pool,
            )
        elif self.state == RESPONDING:
            self._abort_client("upstream_invalid_response", message)

    def timed_out(self, now: float) -> None:
        """Called by the worker's tick when ``deadline`` passed.

        Mid-response, the upstream is not read while the client is behind (its socket full, or a
        port's byte rate holding bytes), so that silence is ours: a client that took bytes since the
        last look goes on, one that took nothing for the whole window is the one cut (nginx's
        send_timeout), as a client that stops sending its body is blamed below."""
        client = cast("ClientConnection", self.client)  # beyond the role, by name (see _client_stalled)
        behind = self.state == RESPONDING and client.unsent >= 0
        if behind and client.took_bytes():
            self.touch()
            return
        conn = self.conn
        self.conn = None
        timeout = self.client.ctx.settings.response_timeout
        if conn is not None:
            conn.abort()
        if behind:
            self._abort_client("downstream_send_timeout", f"client took no response bytes for {timeout:g}s")
        elif self.state == SENDING and self._client_stalled():
            self._blame_client(f"sent nothing for {timeout:g}s")
        elif self.state == SENDING:
            pool = self.pool
            name = pool.backend_name if pool else "?"
            address = pool.address if pool else "?"
            log.warning("upstream %s endpoint %s: no response within %gs [upstream_timeout]", name, address, timeout)
            if pool is not None and self.retry is not None and self.retry.retriable(504) and self._may_retry(False):
                self._backoff(pool, "upstream_timeout")
                return
            if self.detailed_errors():
                self.reply(504, f"upstream {name} ({address}): no response within {timeout:g}s", "upstream_timeout")
            else:
                self.reply(504, f"no response from upstream within {timeout:g}s", "upstream_timeout")
            self.client.flush()
        elif self.state == RESPONDING:
            self._abort_client("upstream_timeout", f"upstream sent nothing for {timeout:g}s mid-response")

    def detailed_errors(self) -> bool:
        """Whether this client's error bodies may name the namespace, Service and endpoint that
        failed: ``--detailed-errors``, or ``fsmfast.io/detailed-errors`` on a Gateway of its port.
        Asked only when an error is produced."""
        client = self.client
        ctx = client.ctx
        return ctx.settings.detailed_errors or client.port in ctx.detailed_ports

    def _client_stalled(self) -> bool:
        """This request's body is still due from a client that has sent none of it for
        CLIENT_STALL seconds (time the gateway paused the client does not count)."""
        # Beyond the role, by name: only where an upstream gave up or timed out.
        client = cast("ClientConnection", self.client)
        return (
            not self.request_done
            and not self.up_paused
            and client._parsing is self
            and client.body_stalled(client.ctx.clock, CLIENT_STALL)
        )

    def _blame_client(self, what: str) -> None:
        """The upstream gave up waiting for the body the client stopped sending: 408, as the body
        timeout would have answered; the error log says what the upstream did."""
        client = cast("ClientConnection", self.client)  # beyond the role (see _client_stalled)
        idle = client.ctx.clock - max(client.body_at, self.started)
        pool = self.pool
        log.info(
            "upstream %s endpoint %s %s while the client %s had sent no request body for %.1fs [body_timeout]",
            pool.backend_name if pool is not None else "?",
            pool.address if pool is not None else "?",
            what,
            client.client_ip.decode(),
            idle,
        )
        client._parsing = None
        client.stop_reading = True  # the rest of the body is not read: the connection closes after this
        self.reply(408, f"request body stalled for {idle:.1f}s", "body_timeout")
        client.flush()

    def route_timed_out(self, text: str) -> None:
        """An HTTPRoute timeout expired (``fsmfast.proxy.route_timer``): 504, or abort mid-response."""
        state = self.state
        if state == DONE:
            return
        if state == QUEUED:
            # Waiting behind a pipelined request: answer 504 in turn, without an upstream.
            self.set_local(504, text, "route_timeout")
            return
        conn = self.conn
        self.conn = None
        if conn is not None:
            conn.abort()
        if state == RESPONDING:
            self._abort_client("route_timeout", f"{text} mid-response")
            return
        self.reply(504, text, "route_timeout")
        self.client.flush()

    def body_too_large(self) -> None:
        """A chunked body outgrew the rule's limit: 413 if nothing was answered yet, else abort.

        The upstream (if any) loses its connection before the body is complete, so it can
        never take the part it got for a whole request.
        """
        client = self.client
        client.stop_reading = True
        limit = client.ctx.rule_options[self.rule.name].max_body_size if self.rule is not None else 0
        text = f"request body exceeds {limit} bytes"
        conn = self.conn
        self.conn = None
        if conn is not None:
            conn.abort()
        if self.state == RESPONDING:
            self._abort_client("request_too_large", text)
        elif self.state == QUEUED:
            self.set_local(413, text, "request_too_large")
        elif self.state != DONE:
            self.reply(413, text, "request_too_large")
            client.flush()
        raise StopParsing  # out of the parser callback: nothing after this body is parsed

    # -- endings --------------------------------------------------------------------------

    def reply(
        self, status: int, text: str, code: str, location: bytes = b"", headers: tuple[tuple[bytes, bytes], ...] = ()
    ) -> None:
        """A response produced by the gateway itself (``location``: a redirect's Location; ``headers``:
        more fields, a rate limit's)."""
        if CHECK_STATES:
            transition(self, self.state, "reply", DONE)
        if self.attempts is not None and self.attempts.timer is not None:
            self.attempts.timer.cancel()  # a route timeout or a 413 during a retry's backoff
            self.attempts.timer = None
        if not self.request_done:
            # The body is still coming and we will not read it: close after replying.
            self.keep_alive = False
        if self.client.ctx.draining:
            self.keep_alive = False
        self.status = status
        self.reason = code
        self.resp_framing = FRAME_NONE
        self.client.out.append(
            error_response(
                status,
                text,
                http11=self.http11,
                close=not self.keep_alive,
                location=location,
                head=self.is_head,
                headers=headers,
            )
        )
        self._finish()

    def _abort_client(self, code: str, message: str) -> None:
        self.reason = code
        log.warning("aborting client %s: %s [%s]", self.client.client_ip.decode(), message, code)
        self.keep_alive = False
        if CHECK_STATES:
            transition(self, self.state, "abort", DONE)
        self.state = DONE
        if self.timer is not None:
            self.timer.cancel()
        self._record()
        if self.client.ctx.access_log.enabled:
            self._log()
        self.client.abort()

    def _finish(self) -> None:
        self.state = DONE
        if self.timer is not None:
            self.timer.cancel()
        self._record()
        if self.client.ctx.access_log.enabled:
            self._log()
        if self.request_done or not self.keep_alive:
            self.client.exchange_finished(self)
        # else: request_complete() will call exchange_finished once the body has arrived.

    def _record(self) -> None:
        """Count this exchange in the worker's metrics (fsmfast.metrics.counters): once, as it ends
        (_finish, _abort_client, client_lost; a WebSocket handshake when its 101 goes out), whether
        or not the access log is on."""
        client = self.client
        stats = client.ctx.stats
        stats.request(client.port, self.rule, self.backend, self.status, self.started)
        backend = self.backend
        if backend is not None and backend.keyed:
            backend.ended(self)  # resilience policies: in-flight counts, passive health, the breaker
        if self.reason is not None:
            stats.ended(self.backend.name if self.backend is not None else "", self.reason)

    def _log(self) -> None:
        ctx = self.client.ctx
        pool = self.pool
        entry = {
                "pid": ctx.pid,
                "worker": ctx.index,
                "port": self.client.port,
                "client": self.client.client_ip.decode(),
                "method": self.method.decode("latin-1"),
                "path": self.target.decode("latin-1"),
                "host": self.host.decode("latin-1"),
                "http": "1.1" if self.http11 else "1.0",
                "status": self.status,
                "bytes": self.body_bytes,
                "duration_ms": round((time.monotonic() - self.started) * 1000, 3),
                "route": self.rule.name if self.rule is not None else None,
                "backend": pool.backend_name if pool is not None else getattr(self.backend, "name", None),
                "upstream": pool.address if pool is not None and self.reason != "no_healthy_upstream" else None,
                "reason": self.reason,
                "request_id": self.request_id_text(),
                # Only on TLS connections: sni, tls (version), client_cert (subject). ClientConnection's,
                # not the role's: read by name (a cast would cost a call per logged request).
                **(getattr(self.client, "tls_log", None) or {}),
        }
        if self.attempts is not None and self.attempts.tries:  # the attempts made, why each retry was
            entry["attempts"] = self.attempts.tries + 1
            entry["retries"] = self.attempts.why
        ctx.access_log.write(entry, self.headers)  # headers: the combined format's Referer and User-Agent
