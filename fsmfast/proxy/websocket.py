"""WebSocket tunnels: after the upstream's 101, bytes flow both ways unparsed, with back-pressure.

Only a ``GET`` with ``Connection: upgrade`` and ``Upgrade: websocket``, on a rule whose route
allows it (annotation ``fsmfast.io/websocket``), gets here; every other Upgrade (``h2c``
above all) is stripped like any hop-by-hop header and the connection closes after the
response. The steps:

1. The client side marks the exchange (``ex.upgrade``); its head goes upstream ending with
   ``Connection: upgrade`` / ``Upgrade: websocket`` (the client's own are hop-by-hop).
2. Whatever the client sends after its head is held (``ClientConnection.held``) until the
   upstream answers. It never goes upstream before a 101: to an upstream that refuses the
   upgrade it would read as the next request on that connection.
3. On a 101 (``UpstreamConnection`` sees llhttp stop at the upgrade), ``open_tunnel`` sends the
   101 head to the client, then gives both transports an ``_End`` protocol: each writes what it
   reads to the other, and a full write buffer on one side pauses reading on the other.
4. Either side closing closes the other once its buffered bytes are written (a reset aborts
   it). No byte for ``response_timeout`` seconds in either direction closes both, like
   nginx's ``proxy_read_timeout``. The access-log line (status 101, bytes sent to the client)
   is written when the tunnel ends.

On any other answer the exchange is an ordinary one: the response is relayed, the held bytes
are dropped, and neither connection is reused.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, cast

from fsmfast.codec import FRAME_NONE, build_response_head
from fsmfast.proxy import states
from fsmfast.proxy.states import DONE

if TYPE_CHECKING:
    from fsmfast.proxy.downstream import ClientConnection
    from fsmfast.proxy.exchange import Exchange
    from fsmfast.proxy.upstream import UpstreamConnection

log = logging.getLogger("fsmfast.proxy")

# Ends the upstream head of a WebSocket handshake (Connection and Upgrade are hop-by-hop, so
# build_request_head drops the client's), and the 101 to the client.
UPGRADE_WEBSOCKET = b"Connection: upgrade\r\nUpgrade: websocket\r\n\r\n"
# How often an idle tunnel is looked at; the limit itself is the response timeout.
CHECK_EVERY = 1.0


def open_tunnel(
    ex: Exchange, conn: UpstreamConnection, reason: bytes, headers: list[tuple[bytes, bytes]], early: bytes
) -> None:
    """The upstream answered ``ex``'s handshake with 101: answer the client and splice the two."""
    client = cast("ClientConnection", ex.client)  # only a client connection's exchanges upgrade
    client_t = client.transport
    up_t = conn.transport
    conn.exchange = None
    conn.pool.discard(conn)
    if client_t is None or up_t is None or client.closing:
        conn.abort()
        return
    ex.status = 101
    # DONE for the worker's tick and the exchange's own timers: the tunnel owns it from here.
    if states.CHECK_STATES:
        states.transition(ex, ex.state, "upgrade", DONE)
    ex.state = DONE
    ex._record()  # the request is answered (101): counted now, its duration the handshake's, not the tunnel's
    if ex.plan is not None:
        headers = ex.plan.response(headers)  # ResponseHeaderModifier: the 101 is the route's response
    client.out.append(build_response_head(True, 101, reason, headers, FRAME_NONE, True)[:-2] + UPGRADE_WEBSOCKET)
    client.flush()
    tunnel = WebSocketTunnel(ex, client, conn)
    if early:
        client_t.write(early)
    held = client.held or []
    client.held = None
    if held:
        up_t.writelines(held)
        tunnel.up_bytes += sum(len(b) for b in held)
    client_t.set_protocol(_End(tunnel, up_t, downstream=True))
    up_t.set_protocol(_End(tunnel, client_t, downstream=False))
    for transport in (client_t, up_t):
        if not transport.is_closing():
            transport.resume_reading()


class WebSocketTunnel:
    __slots__ = ("client", "closed", "conn", "ctx", "down_bytes", "ex", "last", "reason", "timer", "up_bytes")

    def __init__(self, ex: Exchange, client: ClientConnection, conn: UpstreamConnection) -> None:
        self.ex = ex
        self.client = client
        self.conn = conn
        self.ctx = client.ctx
        self.last = self.ctx.clock
        self.up_bytes = 0
        self.down_bytes = 0
        self.closed = False
        self.reason: str | None = None
        self.timer: asyncio.TimerHandle | None = self.ctx.loop.call_later(CHECK_EVERY, self._check)

    def _check(self) -> None:
        self.timer = None
        if self.closed:
            return
        limit = self.ctx.settings.response_timeout
        if self.ctx.clock - self.last > limit:
            self.reason = "tunnel_idle_timeout"
            log.info("closing WebSocket tunnel of %s: idle for %gs", self.client.client_ip.decode(), limit)
            self._close(None, None)
            return
        self.timer = self.ctx.loop.call_later(CHECK_EVERY, self._check)

    def end_lost(self, end: _End, exc: Exception | None) -> None:
        if end.downstream:
            # The client connection's own bookkeeping (worker connection count, drain).
            self.client.connection_lost(exc)
        if not self.closed:
            if exc is not None:
                self.reason = "downstream_reset" if end.downstream else "upstream_reset"
            self._close(end, exc)

    def _close(self, first: _End | None, exc: Exception | None) -> None:
        self.closed = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        # What one side sent before closing still reaches the other; a reset is passed on.
        for transport in (self.client.transport, self.conn.transport):
            if transport is None or transport.is_closing():
                continue
            if exc is not None or first is None:
                transport.abort()
            else:
                transport.close()
        ex = self.ex
        ex.body_bytes = self.down_bytes
        ex.reason = self.reason
        if self.ctx.access_log.enabled:
            ex._log()


class _End(asyncio.Protocol):
    """One side of a tunnel: what it reads goes to ``peer``."""

    __slots__ = ("downstream", "peer", "tunnel")

    def __init__(self, tunnel: WebSocketTunnel, peer: asyncio.BaseTransport, downstream: bool) -> None:
        self.tunnel = tunnel
        self.peer = peer
        self.downstream = downstream

    def data_received(self, data: bytes) -> None:
        tunnel = self.tunnel
        if tunnel.closed:
            return
        self.peer.write(data)  # type: ignore[attr-defined]
        tunnel.last = tunnel.ctx.clock
        if self.downstream:
            tunnel.up_bytes += len(data)
        else:
            tunnel.down_bytes += len(data)

    def eof_received(self) -> bool:
        return False  # WebSocket ends with close frames; TCP EOF just closes both sides

    def connection_lost(self, exc: Exception | None) -> None:
        self.tunnel.end_lost(self, exc)

    def pause_writing(self) -> None:
        self.peer.pause_reading()  # type: ignore[attr-defined]

    def resume_writing(self) -> None:
        self.peer.resume_reading()  # type: ignore[attr-defined]
