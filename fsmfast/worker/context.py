"""What every connection of one worker shares: the live snapshot, pools, timers, the log.

A new snapshot is applied by building the whole runtime (router, backend states) first and
then swapping ``router`` in one assignment: requests already routed keep the objects they
hold, so in-flight requests finish on the old snapshot while new ones use the new one.
Pools survive a reload when their endpoint and TLS settings are unchanged, so a reload
does not throw away warm upstream connections.
"""

from __future__ import annotations

import asyncio
import fcntl
import heapq
import logging
import os
import termios
import time
from typing import TYPE_CHECKING

from fsmfast.edge.redis_limit import GlobalQuotas
from fsmfast.metrics.counters import WorkerStats
from fsmfast.metrics.publish import Publisher
from fsmfast.proxy import ports as port_runtime
from fsmfast.proxy.accesslog import AccessLog
from fsmfast.proxy.exchange import seed_request_ids
from fsmfast.proxy.options import RuleOptions, rule_options
from fsmfast.proxy.roles import WorkerState
from fsmfast.proxy.router import Router
from fsmfast.proxy.states import RESPONDING, SENDING
from fsmfast.proxy.upstream import BackendState, Pool
from fsmfast.resilience.prober import Prober
from fsmfast.resilience.runtime import BackendStates
from fsmfast.settings import Settings
from fsmfast.snapshot import Snapshot, UpstreamTLS
from fsmfast.tls.listener import Contexts
from fsmfast.worker.admission import Admission

if TYPE_CHECKING:
    from fsmfast.metrics.shm import StatsRegion
    from fsmfast.proxy.downstream import ClientConnection
    from fsmfast.proxy.l4 import Tunnel
    from fsmfast.proxy.ports import PortRuntime
    from fsmfast.shared.arena import Arena

log = logging.getLogger("fsmfast.worker")

TICK = 0.25

PoolKey = tuple[str, int, UpstreamTLS | None]


class Context(WorkerState):
    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        settings: Settings,
        index: int,
        region: StatsRegion | None = None,
        arena: Arena | None = None,
    ) -> None:
        self.loop = loop
        self.settings = settings
        self.index = index
        self.pid = os.getpid()
        self.generation = 0
        self.router: Router | None = None
        self.rule_options: dict[str, RuleOptions] = {}
        # Ports whose error bodies name what failed (Listener.detailed_errors): read on errors only.
        self.detailed_ports: frozenset[int] = frozenset()
        self.admission = Admission(settings.max_connections, settings.keepalive_timeout, settings.header_timeout, index)
        self.admission.reclaim = self.reclaim_idle
        # Below this many connections, and not under pressure, the tick leaves admission alone (a C
        # compare, not a Python call, four times a second).
        self.crowded = self.admission.high
        self.pools: dict[PoolKey, Pool] = {}
        self.connections: set[ClientConnection] = set()
        # Listener TLS and L4 (fsmfast.proxy.ports): what each non-HTTP port serves, the TLS
        # contexts kept across snapshots, and open L4 connections.
        self.ports: dict[int, PortRuntime] = {}
        self.tls_contexts = Contexts()
        self.tunnels: set[Tunnel] = set()
        self.access_log = AccessLog(loop, enabled=settings.access_log, fmt=settings.access_log_format)
        # This worker's request ids: a prefix of its own, drawn after the fork (fsmfast.proxy.exchange).
        seed_request_ids(int.from_bytes(os.urandom(8), "big"))
        self.draining = False
        # A coarse clock, advanced by the tick: deadlines are set on every upstream read, and
        # a C call per read for sub-tick precision buys nothing. The extra TICK in the window
        # makes a deadline fire late rather than early.
        self.clock = time.monotonic()
        # Never earlier than the time it is: what idle and request starts are marked with, so
        # that the timeouts measured from them fire up to a tick late, never early.
        self.clock_upper = self.clock + TICK
        self.response_window = settings.response_timeout + TICK
        self._tick_handle: asyncio.TimerHandle | None = None
        # What the request path counts, and the tick's heartbeat and publishing of it into the
        # region the master shares with this worker (None: counted, not published).
        self.stats = WorkerStats()
        self.publisher = Publisher(region, self.stats)
        # The machine-wide state of the resilience policies (fsmfast.shared), this worker's row ``index``.
        self.arena = arena
        self.budgeted: list[BackendState] = []
        # Fleet-wide rate limits' Redis (--ratelimit-redis), connected on first use.
        self.fleet: GlobalQuotas | None = None
        if settings.ratelimit_redis:
            self.fleet = GlobalQuotas(
                settings.ratelimit_redis, settings.ratelimit_redis_timeout, settings.ratelimit_fail_closed
            )
            self.fleet.failed = self._fleet_failed
        # Active health checks of the endpoints this worker probes for the whole machine.
        self.prober = Prober(loop, index, settings.workers, arena.cells) if arena is not None else None
        if self.prober is not None:
            self.prober.on_change = self._endpoint_changed
            self.prober.stats = self.stats

    def apply(self, snapshot: Snapshot) -> None:
        pools: dict[PoolKey, Pool] = {}
        states = BackendStates(self.arena, self.index, self.fleet)
        for name, backend in snapshot.backends.items():
            members = []
            for ep in backend.endpoints:
                key = (ep.host, ep.port, backend.tls)
                pool = pools.get(key) or self.pools.get(key)
                if pool is None:
                    pool = Pool(self, ep.host, ep.port, backend.tls, name)
                pools[key] = pool
                members.append(pool)
            states.add(backend, members)
        router = Router(snapshot, states)
        ports = port_runtime.build_ports(snapshot, states, self.tls_contexts)
        for key, pool in self.pools.items():
            if key not in pools:
                pool.close_idle()
        self.pools = pools
        self.rule_options = rule_options(snapshot)
        self.detailed_ports = frozenset(lst.port for lst in snapshot.listeners if lst.detailed_errors)
        self.router = router
        self.ports = ports
        self.budgeted = states.budgeted
        self.generation = snapshot.generation
        self.stats.forget()  # the counts stay; the old snapshot's rules and backends go
        if self.prober is not None:
            self.prober.apply(snapshot)

    def port_denied(self, port: int, peer: object) -> None:
        """A port-level AccessControlPolicy refused a connection (its Guard aborted it unread)."""
        self.stats.event("port_denied", str(port), "denied")
        log.debug("port %d: connection from %s refused by its access control", port, peer)

    def _fleet_failed(self, policy: str, mode: str) -> None:
        """The fleet's Redis gave no decision for a request under ``policy``; ``mode``: open or closed."""
        self.stats.event("ratelimit_redis", policy, mode)

    def _endpoint_changed(self, backend: str, endpoint: str, healthy: bool) -> None:
        """An active health check took an endpoint out or brought it back (once on the machine)."""
        self.stats.event("endpoint", backend, "in" if healthy else "out")

    # -- timers ---------------------------------------------------------------------

    def start_ticking(self) -> None:
        self._tick_handle = self.loop.call_later(TICK, self._tick)
        self.publisher.tick(time.monotonic())  # the first heartbeat: the loop is about to run

    def _tick(self) -> None:
        self._tick_handle = self.loop.call_later(TICK, self._tick)
        now = self.clock = time.monotonic()
        self.clock_upper = now + TICK
        self.publisher.tick(now)  # heartbeat; counts, when they changed
        for state in self.budgeted:
            # The requests under a retry policy since the last tick, for the machine's retry budget.
            n = state.retry_requests
            if n:
                state.retry_requests = 0
                state.retry.budget.request(now, n)  # type: ignore[union-attr]
        settings = self.settings
        admission = self.admission
        count = len(self.connections) + len(self.tunnels)
        if count >= self.crowded or admission.pressed:
            # Near the connection limit: a few seconds instead of the configured timeouts.
            admission.tick(count)
            keepalive_timeout = admission.keepalive_timeout
            header_timeout = admission.header_timeout
        else:
            keepalive_timeout = settings.keepalive_timeout
            header_timeout = settings.header_timeout
        for conn in list(self.connections):
            if conn.closing:
                continue
            queue = conn.queue
            if queue:
                ex = queue[0]
                if (ex.state == SENDING or ex.state == RESPONDING) and ex.deadline and now > ex.deadline:
                    ex.timed_out(now)
                    conn.flush()
                elif conn.body_stalled(now, settings.body_timeout):
                    conn.refuse_slow_body()
            elif conn.in_head:
                if now - conn.head_started > header_timeout:
                    conn.refuse_slow_head(header_timeout)
            elif now - conn.idle_since > keepalive_timeout or self.draining:
                conn.close()
        for pool in self.pools.values():
            pool.expire_idle(now, settings.pool_idle_timeout)
        if self.tunnels:
            for tunnel in list(self.tunnels):
                tunnel.tick(now)  # ClientHello deadline, idle timeout, draining

    def reclaim_idle(self, n: int) -> int:
        """Closes up to ``n`` of the client connections that have waited longest for a request
        (fsmfast.worker.admission); returns how many. A scan, made only when the worker is at its
        connection limit, so that nothing needs keeping in order per request."""
        idle = [
            conn
            for conn in self.connections
            if not conn.queue
            and not conn.in_head
            and conn._parsing is None
            and not conn.closing
            and not conn.lingering  # answered and closing by itself within LINGER
        ]
        if len(idle) > 2 * n:
            idle = heapq.nsmallest(2 * n, idle, key=_idle_since)  # room to pass over a few, below
        else:
            idle.sort(key=_idle_since)
        closed = 0
        for conn in idle:
            if closed == n:
                break
            # Its next (or first) request may be in the socket, not read yet: a close now would
            # lose it unanswered (nginx closes such connections too). Only looked at here, rarely.
            if _unread(conn):
                continue
            conn.close()
            closed += 1
        return closed

    def stop_ticking(self) -> None:
        if self._tick_handle is not None:
            self._tick_handle.cancel()
            self._tick_handle = None
            self.publisher.publish(time.monotonic())  # the last counts, for the master's retired totals
        if self.prober is not None:
            self.prober.close()

    def busy(self) -> int:
        # An open L4 tunnel counts until the tick has closed it (draining) and it flushed.
        return sum(1 for c in self.connections if c.queue or c.in_head) + len(self.tunnels)


def _idle_since(conn: ClientConnection) -> float:
    return conn.idle_since


def _unread(conn: ClientConnection) -> bool:
    """Bytes from the client wait in the connection's socket."""
    transport = conn.transport
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is None:
        return False
    try:
        return fcntl.ioctl(sock.fileno(), termios.FIONREAD, _ZERO) != _ZERO
    except OSError:
        return False


_ZERO = bytes(4)  # FIONREAD's int, as ioctl() takes and gives it back
