"""RequestMirror: fire-and-forget copies of requests to another backend, bounded per worker.

What is mirrored: the request head exactly as the chosen backend receives it (after the
request filters, X-Forwarded-* and X-Request-Id included: a copy has its original's id), and the
body when the whole body is at most ``MAX_BODY`` bytes; it is buffered and sent with a
Content-Length once the client has sent all of it. A request with a larger body is not mirrored
at all (a cut body would be another request). The mirror's response is read and dropped.

A mirror never slows or fails the request it copies: it starts without waiting for it, has
its own connection from the backend's pool, and every failure (no endpoint, refused,
timeout, bad response) only ends the mirror. At most ``MAX_INFLIGHT`` mirrors run at once per
worker; beyond that, and when a body grows past the limit, copies are dropped, never queued.
Each mirror gets the worker's response timeout to finish.

``MirrorRequest`` plays the role ``Pool`` and ``UpstreamConnection`` expect of an exchange
(``fsmfast.proxy.roles.UpstreamUser``), so mirrors reuse the upstream pools (and their TLS) unchanged. Being one small
object (and one timer) per mirrored request, it is one of the few per-request allocations
off the fast path.
"""

from __future__ import annotations

import logging
import random
from typing import TYPE_CHECKING

from fsmfast.codec import FRAME_NONE, build_request_head
from fsmfast.proxy.roles import UpstreamUser

if TYPE_CHECKING:
    import asyncio

    from fsmfast.proxy.exchange import Exchange
    from fsmfast.proxy.filters import MirrorTarget, RequestPlan
    from fsmfast.proxy.states import UpstreamError
    from fsmfast.proxy.upstream import Pool, UpstreamConnection

log = logging.getLogger("fsmfast.proxy")

MAX_INFLIGHT = 64
MAX_BODY = 64 * 1024

_inflight = 0  # per worker process: one event loop per process


def inflight() -> int:
    return _inflight


class MirrorRequest(UpstreamUser):
    __slots__ = ("body", "conn", "done", "framing", "head_args", "id_args", "pool", "size", "timer")

    def __init__(
        self,
        pool: Pool,
        head_args: tuple[bytes, bytes, list[tuple[bytes, bytes]], bytes, bytes, bytes],
        framing: int,
        id_args: tuple[bytes, int],
    ) -> None:
        global _inflight
        _inflight += 1
        self.pool = pool
        self.head_args = head_args  # build_request_head arguments before the framing
        self.id_args = id_args  # ... and after it: the request id of the exchange copied
        self.framing = framing  # FRAME_NONE, or the body is buffered and sent with its length
        self.body: list[bytes] = []
        self.size = 0
        self.conn: UpstreamConnection | None = None
        self.deadline = 0.0
        self.is_head = False  # the response is read whole and dropped, whatever the method
        self.upgrade = None  # a mirror never asks for a protocol switch (Upgrade is hop-by-hop)
        self.done = False
        ctx = pool.ctx
        self.timer: asyncio.TimerHandle | None = ctx.loop.call_later(ctx.settings.response_timeout, self._expire)

    # -- fed by the exchange it copies --------------------------------------------------

    def feed(self, data: bytes) -> None:
        if self.done:
            return
        self.size += len(data)
        if self.size > MAX_BODY:
            self.finish(None)  # too big to mirror: drop the copy
            return
        self.body.append(data)

    def send(self) -> None:
        """The whole request is here: connect (or reuse) and send it."""
        if self.done:
            return
        conn = self.pool.take()
        if conn is not None:
            self.upstream_ready(conn, reused=True)
        else:
            self.pool.connect(self)

    # -- the exchange interface of Pool and UpstreamConnection -----------------------------

    def upstream_ready(self, conn: UpstreamConnection, reused: bool) -> None:
        if self.done:
            conn.pool.give_back(conn)
            return
        conn.exchange = self
        conn.got_bytes = False
        self.conn = conn
        framing = self.size if self.framing != FRAME_NONE else FRAME_NONE
        head = build_request_head(*self.head_args, framing, *self.id_args)
        if conn.transport is None:
            self.finish(None)
            return
        conn.transport.writelines([head, *self.body])
        self.body = []

    def upstream_failed(self, err: UpstreamError, pool: Pool) -> None:
        log.debug("mirror to %s (%s) failed: %s", pool.backend_name, pool.address, err.message)
        self.conn = None
        self.finish(None)

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
        pass

    def response_body(self, data: bytes) -> None:
        pass

    def whole_response(
        self, conn: UpstreamConnection, status: int, data: bytes, end: int, length: int, up_keep_alive: bool
    ) -> None:
        self.response_complete(conn, up_keep_alive and end + length == len(data))

    def response_complete(self, conn: UpstreamConnection, up_keep_alive: bool) -> None:
        self.conn = None
        conn.exchange = None
        if up_keep_alive:
            conn.pool.give_back(conn)
        else:
            conn.close()
        self.finish(None)

    def upstream_lost(self, conn: UpstreamConnection, exc: Exception | None) -> None:
        self.conn = None
        self.finish(None)

    def upstream_protocol_error(self, message: str) -> None:
        self.finish(self.conn)

    def upstream_write_paused(self) -> None:
        pass

    def upstream_write_resumed(self) -> None:
        pass

    def flush_client(self) -> None:
        pass

    # -- endings --------------------------------------------------------------------------

    def _expire(self) -> None:
        self.timer = None
        self.finish(self.conn)

    def finish(self, abort: UpstreamConnection | None) -> None:
        global _inflight
        if self.done:
            return
        self.done = True
        _inflight -= 1
        self.body = []
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if abort is not None:
            self.conn = None
            abort.abort()


def start(ex: Exchange, plan: RequestPlan, targets: tuple[MirrorTarget, ...]) -> list[MirrorRequest] | None:
    """Start the mirrors of ``ex``; those still waiting for the request body are returned."""
    waiting = None
    headers, target = ex.headers, ex.target
    if plan.request_ops or plan.host is not None or plan.path is not None:
        headers, target = plan.request(headers, target)
    client = ex.client
    args = (ex.method, target, headers, client.client_ip, client.scheme, ex.host)
    id_args = ex.request_id_args()
    for t in targets:
        if _inflight >= MAX_INFLIGHT or (t.percent < 100.0 and random.random() * 100.0 >= t.percent):
            continue
        pool = t.backend.pick()
        if pool is None:
            continue
        framing = FRAME_NONE if ex.req_framing == FRAME_NONE else 0
        mirror = MirrorRequest(pool, args, framing, id_args)
        if ex.request_done:
            mirror.send()
        else:
            if waiting is None:
                waiting = []
            waiting.append(mirror)
    return waiting


def feed(mirrors: list[MirrorRequest], data: bytes) -> None:
    for m in mirrors:
        m.feed(data)


def complete(mirrors: list[MirrorRequest]) -> None:
    for m in mirrors:
        m.send()
