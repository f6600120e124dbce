"""What every connection of one worker shares: the live snapshot, pools, timers, the log.

A new snapshot is applied by building the whole runtime (router, backend states) first and
then swapping ``router`` in one assignment: requests already routed keep the objects they
hold, so in-flight requests finish on the old snapshot while new ones use the new one.
Pools survive a reload when their endpoint and TLS settings are unchanged, so a reload
does not throw away warm upstream connections.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import TYPE_CHECKING

from fsmfast.listener_tls import Contexts

# The module, not its names: ports imports the client protocol, whose compiled module imports this
# one's type while it initializes, before ports has defined anything (see fsmfast/_compiled.py).
from fsmfast.proxy import ports as port_runtime
from fsmfast.proxy.accesslog import AccessLog
from fsmfast.proxy.options import RuleOptions, rule_options
from fsmfast.proxy.router import Router
from fsmfast.proxy.states import RESPONDING, SENDING
from fsmfast.proxy.upstream import BackendState, Pool
from fsmfast.settings import Settings
from fsmfast.snapshot import Snapshot, UpstreamTLS
from fsmfast.worker.admission import Admission

if TYPE_CHECKING:
    from fsmfast.proxy.downstream import ClientConnection
    from fsmfast.proxy.l4 import Tunnel
    from fsmfast.proxy.ports import PortRuntime

log = logging.getLogger("fsmfast.worker")

TICK = 0.25

PoolKey = tuple[str, int, UpstreamTLS | None]


class Context:
    def __init__(self, loop: asyncio.AbstractEventLoop, settings: Settings, index: int) -> None:
        self.loop = loop
        self.settings = settings
        self.index = index
        self.pid = os.getpid()
        self.generation = 0
        self.router: Router | None = None
        self.rule_options: dict[str, RuleOptions] = {}
        # Ports whose error bodies name what failed (Listener.detailed_errors): read on errors only.
        self.detailed_ports: frozenset[int] = frozenset()
        self.admission = Admission(settings.max_connections)
        self.pools: dict[PoolKey, Pool] = {}
        self.connections: set[ClientConnection] = set()
        # Listener TLS and L4 (fsmfast.proxy.ports): what each non-HTTP port serves, the TLS
        # contexts kept across snapshots, and open L4 connections.
        self.ports: dict[int, PortRuntime] = {}
        self.tls_contexts = Contexts()
        self.tunnels: set[Tunnel] = set()
        self.access_log = AccessLog(loop, enabled=settings.access_log)
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

    def apply(self, snapshot: Snapshot) -> None:
        pools: dict[PoolKey, Pool] = {}
        states: dict[str, BackendState] = {}
        for name, backend in snapshot.backends.items():
            members = []
            for ep in backend.endpoints:
                key = (ep.host, ep.port, backend.tls)
                pool = pools.get(key) or self.pools.get(key)
                if pool is None:
                    pool = Pool(self, ep.host, ep.port, backend.tls, name)
                pools[key] = pool
                members.append(pool)
            states[name] = BackendState(backend, members)
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
        self.generation = snapshot.generation

    # -- timers ---------------------------------------------------------------------

    def start_ticking(self) -> None:
        self._tick_handle = self.loop.call_later(TICK, self._tick)

    def _tick(self) -> None:
        self._tick_handle = self.loop.call_later(TICK, self._tick)
        now = self.clock = time.monotonic()
        self.clock_upper = now + TICK
        settings = self.settings
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
                if now - conn.head_started > settings.header_timeout:
                    conn.refuse_slow_head()
            elif now - conn.idle_since > settings.keepalive_timeout or self.draining:
                conn.close()
        for pool in self.pools.values():
            pool.expire_idle(now, settings.pool_idle_timeout)
        if self.tunnels:
            for tunnel in list(self.tunnels):
                tunnel.tick(now)  # ClientHello deadline, idle timeout, draining
        if self.admission.paused:
            self.admission.closed(len(self.connections) + len(self.tunnels))

    def stop_ticking(self) -> None:
        if self._tick_handle is not None:
            self._tick_handle.cancel()
            self._tick_handle = None

    def busy(self) -> int:
        # An open L4 tunnel counts until the tick has closed it (draining) and it flushed.
        return sum(1 for c in self.connections if c.queue or c.in_head) + len(self.tunnels)
