"""What each listening port serves at run time, and the protocol for a new connection on it.

Built with every snapshot (``Context.apply``). The worker's server for a port calls
``connection_for`` on every accept, so a reload that turns a port from HTTP into HTTPS, or
into a TCP port, needs no new server: the next connection simply gets the new protocol. A port
with a port-level AccessControlPolicy gets a ``Guard`` in front of that protocol, a port with a byte
rate (RateLimitPolicy ``ports[].bps``) a ``Throttled`` around it (the guard outside: a denied
connection never reaches the throttle); issue 20.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from fsmfast.edge.access import AccessRule
from fsmfast.edge.guard import Guard
from fsmfast.edge.throttle import Throttled
from fsmfast.proxy import https
from fsmfast.proxy.downstream import ClientConnection
from fsmfast.proxy.l4 import PASSTHROUGH, TCP, TERMINATE, L4Target, SNITable, Tunnel
from fsmfast.snapshot import Snapshot
from fsmfast.tls.listener import Contexts, PortTLS

if TYPE_CHECKING:
    from fsmfast.worker.context import Context

HTTP, HTTPS, L4_TCP, L4_PASSTHROUGH, L4_TERMINATE = range(5)


class PortRuntime:
    __slots__ = ("access", "bps", "cert_header", "kind", "port", "sni", "tcp", "tls")

    def __init__(self, port: int, kind: int) -> None:
        self.port = port
        self.kind = kind
        self.tls: PortTLS | None = None
        self.sni: SNITable | None = None
        self.tcp: L4Target | None = None
        self.cert_header: bytes | None = None
        # Port-level AccessControlPolicy (issue 20): checked once per connection, by a Guard.
        self.access: AccessRule | None = None
        # Port-level RateLimitPolicy (issue 20): each connection's bytes a second, each way (a Throttled).
        self.bps = 0


def build_ports(snapshot: Snapshot, states: Mapping[str, Any], contexts: Contexts) -> dict[int, PortRuntime]:
    """Per-port runtime; TLS contexts come from (and are kept in) ``contexts``.

    Raises ssl.SSLError/ValueError/OSError when TLS material does not load: the worker then
    refuses the snapshot and keeps serving the previous one.
    """
    contexts.begin()
    out: dict[int, PortRuntime] = {}
    for listener in snapshot.listeners:
        edge = listener.edge
        access = edge.access if edge is not None else None
        bandwidth = edge.bandwidth if edge is not None else None
        if listener.protocol == "HTTP":
            if access is None and bandwidth is None:
                continue  # the default: no runtime needed
            rt = PortRuntime(listener.port, HTTP)
        elif listener.protocol == "TCP":
            rt = PortRuntime(listener.port, L4_TCP)
            rt.tcp = L4Target(listener.routes[0], states) if listener.routes else None
        elif listener.protocol == "TLS" and listener.tls_mode == "Passthrough":
            rt = PortRuntime(listener.port, L4_PASSTHROUGH)
            rt.sni = SNITable(listener.routes, states)
        else:
            kind = HTTPS if listener.protocol == "HTTPS" else L4_TERMINATE
            rt = PortRuntime(listener.port, kind)
            routes = {t.name: L4Target(t.route, states) for t in listener.tls if t.route is not None}
            rt.tls = PortTLS(listener, contexts, routes)
            if listener.client_cert_header:
                rt.cert_header = listener.client_cert_header.encode("latin-1")
        if access is not None:
            rt.access = AccessRule(access.whitelist, access.blacklist, access.status, access.message)
        if bandwidth is not None:
            rt.bps = bandwidth.bps
        out[listener.port] = rt
    contexts.end()
    return out


def connection_for(ctx: Context, port: int) -> asyncio.BaseProtocol:
    """The protocol factory of every listening port."""
    rt = ctx.ports.get(port)
    if rt is None:
        # Compiled, ClientConnection is a cdef class: asyncio.Protocol's methods without its base class.
        return ClientConnection(ctx, port)  # type: ignore[return-value]
    protocol = _protocol(ctx, rt, port)
    if rt.bps:
        protocol = Throttled(protocol, rt.bps, ctx.loop)  # type: ignore[assignment]
    if rt.access is not None:
        return Guard(protocol, rt.access, ctx.port_denied)  # type: ignore[return-value]
    return protocol


def _protocol(ctx: Context, rt: PortRuntime, port: int) -> asyncio.BaseProtocol:
    kind = rt.kind
    if kind == HTTP:
        return ClientConnection(ctx, port)  # type: ignore[return-value]
    if kind == HTTPS:
        assert rt.tls is not None
        # https.HTTPSConnection, looked up here: importing fsmfast.proxy.https first reaches this
        # module before https has defined it (fsmfast/_compiled.py).
        return rt.tls.handshake(ctx.loop, https.HTTPSConnection(ctx, port, rt.tls, rt.cert_header))
    if kind == L4_TERMINATE:
        assert rt.tls is not None
        return rt.tls.handshake(ctx.loop, Tunnel(ctx, rt, TERMINATE))
    if kind == L4_PASSTHROUGH:
        return Tunnel(ctx, rt, PASSTHROUGH)
    return Tunnel(ctx, rt, TCP)
