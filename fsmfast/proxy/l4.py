"""L4 connections: TCP, TLS passthrough (routed by SNI) and TLS terminated to plain TCP.

Theory of operation
-------------------
A ``Tunnel`` is the client side; once it knows where to go it opens one upstream connection
(the only coroutine: one task per connection, for connecting) and from then on two protocols
copy bytes to each other from their callbacks, no task per chunk:

    passthrough:  HELLO --ClientHello parsed, TLSRoute chosen--> CONNECTING --> SPLICING --> CLOSED
    TCP, terminate:                       (route known at once) CONNECTING --> SPLICING --> CLOSED

- HELLO: bytes are buffered until ``clienthello.parse`` finds the SNI (bounded in size, and
  in time by the worker tick: ``--header-timeout``); they are replayed upstream unchanged, so
  the backend terminates TLS itself and the client verifies the backend's certificate.
- CONNECTING: client bytes wait in ``pending``; past ``PENDING_LIMIT`` the client is paused.
- SPLICING: back-pressure is linked both ways: a full write buffer on one side pauses reading
  on the other. A half-close (EOF) is passed on with ``write_eof`` where the transport can
  (plain TCP); a TLS client side cannot half-close, so the tunnel then closes after flushing.
  On a port with a byte rate (RateLimitPolicy ``ports[].bps``, issue 20) the client's transport
  is a ``fsmfast.edge.throttle.ThrottledTransport``, as on every kind of port: the tunnel reads
  the client's bytes as the rate lets them in, from the first one (a ClientHello, what waits
  while connecting), and its writes to the client pause it like a full write buffer.

Backends are chosen per connection: smooth weighted round robin over the route's
backendRefs, then round robin over the Service's endpoints. Every tunnel writes one
access-log line when it ends.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, cast

from fsmfast.snapshot import L4Route
from fsmfast.tls import clienthello
from fsmfast.tls.listener import client_subject, failure_reason, handshake_of, most_specific

if TYPE_CHECKING:
    from fsmfast.proxy.ports import PortRuntime
    from fsmfast.worker.context import Context

log = logging.getLogger("fsmfast.l4")

WRITE_HIGH = 256 * 1024
WRITE_LOW = 64 * 1024
PENDING_LIMIT = 256 * 1024
# An established tunnel with no byte either way for this long is closed (Envoy's tcp_proxy default).
IDLE_TIMEOUT = 3600.0

TCP, PASSTHROUGH, TERMINATE = range(3)
_PAUSE_UPSTREAM = 1  # the upstream's write buffer is full
_PAUSE_PENDING = 2  # too much buffered while connecting


class L4Target:
    """A TLSRoute or TCPRoute at run time: smooth weighted round robin over its backends."""

    __slots__ = ("_current", "_total", "choices", "name")

    def __init__(self, route: L4Route, states: Mapping[str, Any]) -> None:
        self.name = route.name
        self.choices: list[tuple[int, Any, str | None]] = []
        for ref in route.backends:
            if ref.weight <= 0:
                continue
            state = states.get(ref.backend) if ref.backend is not None else None
            error = ref.error if state is None else None
            if state is None and error is None:
                error = f"backend {ref.backend} is not in the snapshot"
            self.choices.append((ref.weight, state, error))
        self._current = [0] * len(self.choices)
        self._total = sum(w for w, _, _ in self.choices)

    def pick(self) -> tuple[Any, str | None]:
        """(backend state, None) or (None, why not)."""
        choices = self.choices
        if not choices:
            return None, f"route {self.name} has no backend"
        best = 0
        if len(choices) > 1:
            current = self._current
            for i, (weight, _, _) in enumerate(choices):
                current[i] += weight
                if current[i] > current[best]:
                    best = i
            current[best] -= self._total
        _, state, error = choices[best]
        return state, error


class SNITable:
    """TLSRoutes of a passthrough port by hostname: exact, longest wildcard, then ``*``."""

    __slots__ = ("any", "exact", "wildcard")

    def __init__(self, routes: tuple[L4Route, ...], states: Mapping[str, Any]) -> None:
        self.exact: dict[str, L4Target] = {}
        self.wildcard: dict[str, L4Target] = {}
        self.any: L4Target | None = None
        for route in routes:
            target = L4Target(route, states)
            if route.hostname == "*":
                self.any = target
            elif route.hostname.startswith("*."):
                self.wildcard[route.hostname[1:]] = target
            else:
                self.exact[route.hostname] = target

    def find(self, server_name: str) -> L4Target | None:
        return most_specific(self.exact, self.wildcard, self.any, server_name)


class Tunnel(asyncio.Protocol):
    """The client side of one L4 connection (see the module docstring)."""

    __slots__ = (
        "_paused",
        "_up_paused",
        "backend",
        "bytes_down",
        "bytes_up",
        "client",
        "client_cert",
        "closed",
        "ctx",
        "eof_down",
        "eof_up",
        "hello",
        "hello_deadline",
        "last",
        "logged",
        "mode",
        "pending",
        "pending_size",
        "port",
        "reason",
        "route",
        "server_name",
        "started",
        "transport",
        "up",
        "upstream",
    )

    def __init__(self, ctx: Context, port: PortRuntime, mode: int) -> None:
        self.ctx = ctx
        self.port = port
        self.mode = mode
        self.transport: asyncio.Transport | None = None
        self.up: Upstream | None = None
        self.client = "-"
        self.client_cert: str | None = None
        self.hello = b""
        self.hello_deadline = 0.0
        self.pending: list[bytes] = []
        self.pending_size = 0
        self._paused = 0
        self._up_paused = False  # the client's transport said pause_writing
        self.route: str | None = None
        self.backend: str | None = None
        self.upstream: str | None = None
        self.server_name: str | None = None
        self.bytes_up = 0
        self.bytes_down = 0
        self.eof_up = False  # the client sent EOF
        self.eof_down = False  # the upstream sent EOF
        self.closed = False
        self.logged = False
        self.reason: str | None = None
        self.started = time.monotonic()
        self.last = ctx.clock

    # -- client side ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream's transport: uvloop's are not asyncio.Transport subclasses but quack alike.
        self.transport = transport = cast(asyncio.Transport, transport)
        transport.set_write_buffer_limits(WRITE_HIGH, WRITE_LOW)
        peer = transport.get_extra_info("peername")
        if peer:
            self.client = f"{peer[0]}"
        ctx = self.ctx
        ctx.tunnels.add(self)
        ctx.admission.opened(len(ctx.connections) + len(ctx.tunnels))  # the worker's connection limit
        ctx.stats.opened(self.port.port)
        if self.mode == PASSTHROUGH:
            self.hello_deadline = ctx.clock + ctx.settings.header_timeout
        elif self.mode == TERMINATE:
            hs, sslobj = handshake_of(transport)
            self.client_cert = client_subject(sslobj)
            listener = hs.listener if hs is not None else None
            self.server_name = hs.server_name if hs is not None else None
            self._go(listener.route if listener is not None else None, "no TCPRoute attached to this TLS listener")
        else:
            self._go(self.port.tcp, "no TCPRoute attached to this TCP port")

    def data_received(self, data: bytes) -> None:
        up = self.up
        if up is not None and up.transport is not None:
            self.bytes_up += len(data)
            self.last = self.ctx.clock
            up.transport.write(data)
            return
        if self.closed:
            return
        if self.mode == PASSTHROUGH and self.route is None:
            self._hello(data)
            return
        self._hold(data)

    def _hold(self, data: bytes) -> None:
        self.pending.append(data)
        self.pending_size += len(data)
        if self.pending_size > PENDING_LIMIT:
            self._pause(_PAUSE_PENDING)

    def _hello(self, data: bytes) -> None:
        hello = self.hello = self.hello + data if self.hello else data
        try:
            parsed = clienthello.parse(hello)
        except clienthello.ClientHelloError as exc:
            self._refuse("client_hello_invalid", f"not a valid TLS ClientHello: {exc}")
            return
        if parsed is None:
            return
        self.hello = b""
        self._hold(hello)  # replayed to the backend as received
        self.server_name = parsed.server_name
        if parsed.server_name is None:
            self._refuse("no_sni", "the ClientHello has no server name (SNI); passthrough needs one to route")
            return
        target = self.port.sni.find(parsed.server_name) if self.port.sni is not None else None
        self._go(target, f"no TLSRoute for server name {parsed.server_name!r}")

    def _go(self, target: L4Target | None, missing: str) -> None:
        if target is None:
            self._refuse("no_route", missing)
            return
        self.route = target.name
        state, error = target.pick()
        if state is None:
            self._refuse("invalid_backend", f"route {target.name}: {error}")
            return
        self.backend = state.name
        pool = state.pick()
        if pool is None:
            self._refuse("no_healthy_upstream", f"service {state.name} has no ready endpoints")
            return
        self.upstream = pool.address
        self.ctx.loop.create_task(self._connect(pool.host, pool.port))

    async def _connect(self, host: str, port: int) -> None:
        ctx = self.ctx
        timeout = ctx.settings.connect_timeout
        try:
            transport, _ = await asyncio.wait_for(
                ctx.loop.create_connection(lambda: Upstream(self), host, port), timeout
            )
        except asyncio.TimeoutError:
            self._refuse("upstream_connect_timeout", f"connect to {self.upstream} timed out after {timeout:g}s")
            return
        except OSError as exc:
            code = "upstream_connect_refused" if exc.errno == errno.ECONNREFUSED else "upstream_connect_failed"
            self._refuse(code, f"connect to {self.upstream} failed: {exc.strerror or exc}")
            return
        if self.closed:
            transport.close()
            return
        up = self.up
        assert up is not None and up.transport is not None
        if self.pending:
            self.bytes_up += self.pending_size
            up.transport.writelines(self.pending)
            self.pending = []
            self.pending_size = 0
        self._resume(_PAUSE_PENDING)
        if self.eof_up and up.transport.can_write_eof():
            up.transport.write_eof()

    def eof_received(self) -> bool:
        self.eof_up = True
        up = self.up
        if up is None or up.transport is None:
            return self.route is not None and not self.closed  # still connecting: pass it on later
        if self.eof_down:
            self.close()
            return False
        if up.transport.can_write_eof():
            up.transport.write_eof()
            return True
        self.close()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        ctx = self.ctx
        if self.transport is not None:
            ctx.stats.closed(self.port.port)
        ctx.tunnels.discard(self)
        ctx.admission.closed(len(ctx.connections) + len(ctx.tunnels))
        up = self.up
        if up is not None and up.transport is not None:
            if exc is None:
                up.transport.close()
            else:
                up.transport.abort()
        self.transport = None
        if exc is not None and self.reason is None:
            self.reason = "downstream_disconnect"
        if self.reason is not None:
            ctx.stats.ended(self.backend or "", self.reason)  # counted when an upstream failed
        self._log()

    def tls_failed(self, exc: BaseException) -> None:
        """The TLS handshake of a terminating listener failed (the link tells; fsmfast.tls.link)."""
        self.ctx.stats.tls_failed(self.port.port, failure_reason(exc))

    def pause_writing(self) -> None:
        # The client's write buffer is full, or its byte rate holds what was written (a throttle may
        # say so again while it holds): the upstream is not read.
        up = self.up
        if not self._up_paused and up is not None and up.transport is not None and not up.transport.is_closing():
            up.transport.pause_reading()
        self._up_paused = True

    def resume_writing(self) -> None:
        if not self._up_paused:
            return
        self._up_paused = False
        up = self.up
        if up is not None and up.transport is not None and not up.transport.is_closing():
            up.transport.resume_reading()

    # -- control ---------------------------------------------------------------------------

    def _pause(self, reason: int) -> None:
        t = self.transport
        if not self._paused and t is not None and not t.is_closing():
            t.pause_reading()
        self._paused |= reason

    def _resume(self, reason: int) -> None:
        if not self._paused & reason:
            return
        self._paused &= ~reason
        t = self.transport
        if not self._paused and t is not None and not t.is_closing():
            t.resume_reading()

    def _refuse(self, code: str, message: str) -> None:
        self.reason = code
        where = f"port {self.port.port}" + (f" (SNI {self.server_name})" if self.server_name else "")
        log.warning("closing connection from %s on %s: %s [%s]", self.client, where, message, code)
        self.pending = []
        self.close()

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def tick(self, now: float) -> None:
        """Called by the worker tick: ClientHello deadline, idle timeout, draining."""
        if self.closed:
            return
        if self.route is None and self.mode == PASSTHROUGH and now > self.hello_deadline:
            limit = self.ctx.settings.header_timeout
            self._refuse("client_hello_timeout", f"no complete ClientHello within {limit:g}s")
        elif now - self.last > IDLE_TIMEOUT:
            self.reason = "idle_timeout"
            self.close()
        elif self.ctx.draining:
            self.reason = self.reason or "draining"
            self.close()

    def _log(self) -> None:
        if self.logged or not self.ctx.access_log.enabled:
            return
        self.logged = True
        ctx = self.ctx
        entry: dict[str, Any] = {
            "pid": ctx.pid,
            "worker": ctx.index,
            "port": self.port.port,
            "client": self.client,
            "protocol": ("tcp", "tls-passthrough", "tls-terminate")[self.mode],
            "sni": self.server_name,
            "route": self.route,
            "backend": self.backend,
            "upstream": self.upstream,
            "bytes_up": self.bytes_up,
            "bytes": self.bytes_down,
            "duration_ms": round((time.monotonic() - self.started) * 1000, 3),
            "reason": self.reason,
        }
        if self.client_cert:
            entry["client_cert"] = self.client_cert
        ctx.access_log.write(entry)

    # -- upstream side (called by Upstream) ------------------------------------------------

    def upstream_lost(self, exc: Exception | None) -> None:
        self.up = None
        t = self.transport
        if t is None:
            return
        if exc is not None:
            self.reason = self.reason or "upstream_reset"
            t.abort()
        else:
            self.close()


class Upstream(asyncio.Protocol):
    """The backend side of a tunnel."""

    __slots__ = ("transport", "tunnel")

    def __init__(self, tunnel: Tunnel) -> None:
        self.tunnel = tunnel
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport = cast(asyncio.Transport, transport)
        transport.set_write_buffer_limits(WRITE_HIGH, WRITE_LOW)
        self.tunnel.up = self

    def data_received(self, data: bytes) -> None:
        tunnel = self.tunnel
        t = tunnel.transport
        if t is None:
            return
        tunnel.bytes_down += len(data)
        tunnel.last = tunnel.ctx.clock
        t.write(data)

    def eof_received(self) -> bool:
        tunnel = self.tunnel
        tunnel.eof_down = True
        t = tunnel.transport
        if t is None or tunnel.eof_up or not t.can_write_eof():
            tunnel.close()
            return False
        t.write_eof()
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.tunnel.upstream_lost(exc)

    def pause_writing(self) -> None:
        self.tunnel._pause(_PAUSE_UPSTREAM)

    def resume_writing(self) -> None:
        self.tunnel._resume(_PAUSE_UPSTREAM)
