"""The roles the proxy core's classes play for each other, declared where none of them lives.

- ``WorkerState``: what a connection reads of its worker (``fsmfast.worker.context.Context``):
  the clock, the response window, the live router, the settings, the access log, the metrics.
- ``ClientSide``: what an exchange needs from the client connection it answers
  (``fsmfast.proxy.downstream.ClientConnection``): where to write, when to flush, how to pause.
- ``UpstreamUser``: what a pool and an upstream connection (``fsmfast.proxy.upstream``) need
  from whoever sends a request over them: a client's ``Exchange`` or a ``MirrorRequest``.

A leaf: it imports nothing of the core, so the core's modules depend on it and not on each
other in a circle (tests/unit/test_import_cycles.py checks that). Compiled, these are C types
(roles.pxd) whose subclasses override the methods: a call through a role is a C vtable call.
Uncompiled, they are the plain base classes of the same subclasses. The fields are declared as
class-level annotations for the type checker (roles.pxd declares them for the C side): no values,
so nothing at run time.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import asyncio

    from fsmfast.metrics.counters import WorkerStats
    from fsmfast.proxy.accesslog import AccessLog
    from fsmfast.proxy.downstream import ClientConnection
    from fsmfast.proxy.exchange import Exchange
    from fsmfast.proxy.l4 import Tunnel
    from fsmfast.proxy.options import RuleOptions
    from fsmfast.proxy.ports import PortRuntime
    from fsmfast.proxy.router import Router
    from fsmfast.proxy.states import UpstreamError
    from fsmfast.proxy.upstream import Pool, UpstreamConnection
    from fsmfast.settings import Settings
    from fsmfast.snapshot import UpstreamTLS
    from fsmfast.tls.listener import Contexts
    from fsmfast.worker.admission import Admission


class WorkerState:
    """The fields every connection of one worker reads; ``Context`` sets them and adds the rest."""

    loop: asyncio.AbstractEventLoop
    settings: Settings
    index: int
    pid: int
    generation: int
    router: Router | None
    rule_options: dict[str, RuleOptions]
    detailed_ports: frozenset[int]
    admission: Admission
    crowded: int
    pools: dict[tuple[str, int, UpstreamTLS | None], Pool]
    connections: set[ClientConnection]
    ports: dict[int, PortRuntime]
    tls_contexts: Contexts
    tunnels: set[Tunnel]
    access_log: AccessLog
    draining: bool
    clock: float
    clock_upper: float
    response_window: float
    _tick_handle: asyncio.TimerHandle | None
    stats: WorkerStats  # what the request path counts (fsmfast.metrics.counters)


class ClientSide:
    """A client connection as an exchange sees it."""

    ctx: WorkerState
    port: int
    scheme: bytes
    client_ip: bytes
    out: list[bytes]
    stop_reading: bool
    body_at: float
    # Why the exchange pauses the client's reading (class attributes, read by name; the connection
    # keeps one bit per reason).
    PAUSE_UPSTREAM = 1  # the active upstream's write buffer is full
    PAUSE_PENDING = 2  # a waiting exchange holds too much body

    def body_stalled(self, now: float, limit: float) -> bool:
        """The request body being read has not moved for ``limit`` seconds (see ClientConnection)."""
        raise NotImplementedError

    def exchange_finished(self, ex: Exchange) -> None:
        """``ex`` (the head of the queue) is done: the next pipelined exchange may go."""
        raise NotImplementedError

    def flush(self) -> None:
        """Write what the exchanges appended to ``out``."""
        raise NotImplementedError

    def pause_reading(self, reason: int) -> None:
        raise NotImplementedError

    def resume_reading(self, reason: int) -> None:
        raise NotImplementedError

    def abort(self) -> None:
        """Drop the connection at once: a response cut short must not pass for a complete one."""
        raise NotImplementedError


class UpstreamUser:
    """Whoever an ``UpstreamConnection`` serves: it hears of the connection, the response, the end.

    ``deadline`` is pushed forward by every upstream read; ``is_head`` says no body follows the
    response head; ``upgrade`` is set when a protocol switch (a 101) was asked for.
    """

    __slots__ = ("deadline", "is_head", "upgrade")

    deadline: float
    is_head: bool
    upgrade: bytes | None

    def upstream_ready(self, conn: UpstreamConnection, reused: bool) -> None:
        """A connection (``reused``: from the pool) is this user's until it gives it back."""
        raise NotImplementedError

    def upstream_failed(self, err: UpstreamError, pool: Pool) -> None:
        """No connection could be opened (or its TLS could not be verified)."""
        raise NotImplementedError

    def upstream_lost(self, conn: UpstreamConnection, exc: Exception | None) -> None:
        raise NotImplementedError

    def upstream_protocol_error(self, message: str) -> None:
        raise NotImplementedError

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
        raise NotImplementedError

    def whole_response(
        self, conn: UpstreamConnection, status: int, data: bytes, end: int, length: int, up_keep_alive: bool
    ) -> None:
        raise NotImplementedError

    def response_body(self, data: bytes) -> None:
        raise NotImplementedError

    def response_complete(self, conn: UpstreamConnection, up_keep_alive: bool) -> None:
        raise NotImplementedError

    def upstream_write_paused(self) -> None:
        raise NotImplementedError

    def upstream_write_resumed(self) -> None:
        raise NotImplementedError

    def flush_client(self) -> None:
        """Data went through: write out whatever reached the client side."""
        raise NotImplementedError
