"""Port-level access control (issue 20): a connection from a denied address is closed before any
byte of it is read.

The listening port's protocol factory (``fsmfast.proxy.ports.connection_for``) hands the loop a
``Guard`` in front of the protocol the port serves with (HTTP, HTTPS, TLS or TCP). Once the
connection is made, the guard asks the port's ``AccessRule`` about the peer, once: a denied peer's
transport is aborted (a reset, nothing read, nothing answered, as nginx's ``deny`` at the stream
level), an allowed one's transport is handed to the real protocol (``set_protocol``), so the guard
is out of the way for the rest of the connection and costs nothing per read. Ports without a
port-level policy never see a guard.
"""

from __future__ import annotations

import logging
from typing import Any

from fsmfast.edge.access import AccessRule, connection_allowed

log = logging.getLogger("fsmfast.edge")


class Guard:
    """An asyncio protocol by shape, for ``connection_made`` only."""

    __slots__ = ("denied", "inner", "rule")

    def __init__(self, inner: Any, rule: AccessRule, denied: Any = None) -> None:
        self.inner = inner
        self.rule = rule
        self.denied = denied  # called with (port, peer) when a connection is refused (metrics, logs)

    def connection_made(self, transport: Any) -> None:
        peer = transport.get_extra_info("peername")
        if not connection_allowed(self.rule, peer):
            transport.abort()
            if self.denied is not None:
                sock = transport.get_extra_info("sockname")
                self.denied(sock[1] if isinstance(sock, tuple) and len(sock) > 1 else 0, peer)
            return
        transport.set_protocol(self.inner)
        self.inner.connection_made(transport)

    # Never called on an aborted transport's guard, nor once the real protocol took over; here for
    # the protocol's shape.
    def data_received(self, data: bytes) -> None:
        pass

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        pass
