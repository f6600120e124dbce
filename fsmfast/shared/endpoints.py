"""Master side of the machine-wide resilience state (issue 19): the arena, and where each backend's
state lives in it.

The arena is made once, with the first configuration, before the first worker is forked (a worker
can use only the mappings it inherited), whatever that configuration asks for: a later reload may
add a policy, and its state must have room then. Its tables are sized generously (pages never
written are never allocated, so unused room costs address space only) and at least ``HEADROOM``
times what the first configuration needs.

What lives there, each table with its own ``SlotTable`` so that a key keeps its place across
reloads (counts and health carry over) and a place reused by another key is cleared first:

- counter rows, one slot per endpoint of a least-connections backend: requests in flight, +1/-1 by
  the worker that sent them (``fsmfast.proxy.upstream``); a dead worker's row is cleared before it
  is respawned, so what it had in flight stops counting;
- cells: the session key (the first ``KEY_CELLS`` words, written once), then per endpoint of a
  backend with a HealthCheckPolicy its health words, per backend with a CircuitBreakingPolicy its
  breaker's words, per backend that some retry applies to (its RetryPolicy or a rule's ``retry``)
  its retry budget's words. The layouts are those modules' business
  (``fsmfast.resilience.health``, ``.breaker``, ``.retry``); here they are blocks of a known size.

The places travel to the workers in the snapshot (``LoadBalancing.slots``, ``BackendPolicies.cells``),
which this module rewrites: the compiler never sets them.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable

from msgspec.structs import replace

from fsmfast import snapshot as snapmod
from fsmfast.edge.ratelimit import CELLS_PER_QUOTA, keyed_cells
from fsmfast.resilience.breaker import BREAKER_CELLS
from fsmfast.resilience.health import HEALTH_CELLS
from fsmfast.resilience.retry import BUDGET_CELLS
from fsmfast.resilience.session import KEY_CELLS, write_session_key
from fsmfast.shared.arena import Arena
from fsmfast.shared.slots import SlotTable, SlotTableFull

log = logging.getLogger("fsmfast.master")

LEAST = "LeastConnectionLoadBalancer"
# Room for what later reloads add: the arena never grows.
HEADROOM = 4
MIN_SLOTS = 1024  # least-connections endpoints
MIN_HEALTH = 4096  # health-checked endpoints
MIN_BREAKERS = 1024
MIN_BUDGETS = 1024
MIN_QUOTAS = 1024  # rate-limit quotas (one per policy entry)
MIN_TABLES = 16  # per-client rate-limit tables
TABLE_ENTRIES = 16384  # clients a per-client table tracks at once (16 bytes each)


def _least(backend: snapmod.Backend) -> bool:
    policies = backend.resilience
    return policies is not None and policies.lb is not None and policies.lb.type == LEAST


def _key(name: str, ep: snapmod.Endpoint) -> str:
    return f"{name}/{ep.host}:{ep.port}"


def _quota_key(limit: snapmod.RateLimit) -> str:
    return f"{limit.policy}|{limit.scope}"


def local_rate_limits(snap: snapmod.Snapshot) -> tuple[set[str], set[str]]:
    """The quotas the snapshot's local rate limits need: (one quota each, a per-client table each),
    by key. A fleet-wide (Global) limit needs none here."""
    plain: set[str] = set()
    keyed: set[str] = set()
    for listener in snap.listeners:
        for vhost in listener.vhosts:
            for setting in vhost.edge.values():
                for limit in setting.rate_limits:
                    if limit.mode == "Local":
                        (keyed if limit.key is not None else plain).add(_quota_key(limit))
    return plain, keyed


def _place_quotas(snap: snapmod.Snapshot, cells: dict[str, int]) -> snapmod.Snapshot:
    """``snap`` with each local rate limit's ``cell`` set from ``cells`` (by key)."""

    def placed(limit: snapmod.RateLimit) -> snapmod.RateLimit:
        cell = cells.get(_quota_key(limit), -1) if limit.mode == "Local" else -1
        return limit if cell == limit.cell else replace(limit, cell=cell)

    listeners = []
    for listener in snap.listeners:
        vhosts = []
        for vhost in listener.vhosts:
            if vhost.edge:
                edge = {
                    name: replace(s, rate_limits=tuple(placed(x) for x in s.rate_limits)) if s.rate_limits else s
                    for name, s in vhost.edge.items()
                }
                vhost = replace(vhost, edge=edge)
            vhosts.append(vhost)
        listeners.append(replace(listener, vhosts=tuple(vhosts)))
    return replace(snap, listeners=tuple(listeners))


def retried_backends(snap: snapmod.Snapshot) -> set[str]:
    """The backends some retry applies to: their own RetryPolicy, or a rule's ``retry``."""
    names = {name for name, b in snap.backends.items() if b.resilience is not None and b.resilience.retry}
    for listener in snap.listeners:
        for vhost in listener.vhosts:
            for rule in vhost.rules:
                if rule.retry is not None:
                    names.update(ref.backend for ref in rule.backends if ref.backend is not None)
    return names


class Region:
    """A run of cells cut into equal blocks, one per key, stable across reloads."""

    __slots__ = ("first", "size", "table")

    def __init__(self, first: int, blocks: int, size: int) -> None:
        self.first = first
        self.size = size
        self.table = SlotTable(blocks)

    @property
    def end(self) -> int:
        return self.first + self.table.capacity * self.size

    def assign(self, keys: Iterable[str], arena: Arena) -> dict[str, int]:
        """The first cell of each key's block; blocks given to a new key are zeroed first."""
        blocks = self.table.assign(keys)
        for block in self.table.reassigned:
            for i in range(self.first + block * self.size, self.first + (block + 1) * self.size):
                arena.cells.store(i, 0)
        return {key: self.first + block * self.size for key, block in blocks.items()}


class SharedState:
    """``prepare(snapshot, its bytes, forked)`` on the first build (``forked=False``: the arena is
    made then) and every reload; the snapshot it returns (decoded, and its bytes) carries the
    places. ``worker_gone(slot)`` before a respawn; ``close()`` when the gateway stops."""

    __slots__ = ("arena", "breakers", "budgets", "health", "quotas", "table", "tables", "workers")

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self.arena: Arena | None = None
        self.table: SlotTable | None = None
        self.health: Region | None = None
        self.breakers: Region | None = None
        self.budgets: Region | None = None
        self.quotas: Region | None = None
        self.tables: Region | None = None

    def _make(self, snap: snapmod.Snapshot) -> Arena:
        least = sum(len(b.endpoints) for b in snap.backends.values() if _least(b))
        health = sum(len(b.endpoints) for b in snap.backends.values() if b.resilience and b.resilience.health)
        breakers = sum(1 for b in snap.backends.values() if b.resilience and b.resilience.circuit)
        budgets = len(retried_backends(snap))
        slots = max(MIN_SLOTS, HEADROOM * least)
        self.health = Region(KEY_CELLS, max(MIN_HEALTH, HEADROOM * health), HEALTH_CELLS)
        self.breakers = Region(self.health.end, max(MIN_BREAKERS, HEADROOM * breakers), BREAKER_CELLS)
        self.budgets = Region(self.breakers.end, max(MIN_BUDGETS, HEADROOM * budgets), BUDGET_CELLS)
        plain, keyed = local_rate_limits(snap)
        self.quotas = Region(self.budgets.end, max(MIN_QUOTAS, HEADROOM * len(plain)), CELLS_PER_QUOTA)
        self.tables = Region(self.quotas.end, max(MIN_TABLES, HEADROOM * len(keyed)), keyed_cells(TABLE_ENTRIES))
        arena = Arena(self.workers, slots, self.tables.end)
        write_session_key(arena.cells, os.urandom(32))
        self.table = SlotTable(slots)
        return arena

    def prepare(self, snap: snapmod.Snapshot, data: bytes, forked: bool) -> tuple[snapmod.Snapshot, bytes]:
        """``snap`` decoded from ``data`` by the caller, who needs it too (one decode per generation)."""
        if self.arena is None:
            if forked:  # the workers could not see an arena made now: serve without shared state
                log.warning("no shared state for the resilience policies: it is made before the workers start")
                return snap, data
            self.arena = self._make(snap)
        arena = self.arena
        assert self.table is not None and self.health is not None
        assert self.breakers is not None and self.budgets is not None
        assert self.quotas is not None and self.tables is not None
        backends = snap.backends
        changed: dict[str, snapmod.Backend] = {}

        least = {name: b for name, b in backends.items() if _least(b)}
        try:
            slots = self.table.assign(_key(name, ep) for name, b in least.items() for ep in b.endpoints)
        except SlotTableFull as e:
            log.warning("%s; balancing %s round robin", e, ", ".join(sorted(least)))
            least, slots = {}, {}
        for slot in self.table.reassigned:
            arena.counters.clear_slot(slot)

        health = {name: b for name, b in backends.items() if b.resilience is not None and b.resilience.health}
        breakers = {name for name, b in backends.items() if b.resilience is not None and b.resilience.circuit}
        budgets = retried_backends(snap)
        plain, keyed = local_rate_limits(snap)
        placed: dict[str, dict[str, int]] = {}
        for what, region, keys in (
            ("health checks", self.health, [_key(name, ep) for name, b in health.items() for ep in b.endpoints]),
            ("circuit breakers", self.breakers, sorted(breakers)),
            ("retry budgets", self.budgets, sorted(budgets)),
            ("rate limits", self.quotas, sorted(plain)),
            ("per-client rate limits", self.tables, sorted(keyed)),
        ):
            try:
                placed[what] = region.assign(keys, arena)
            except SlotTableFull as e:
                log.warning("%s: %s are not applied to this configuration", e, what)
                placed[what] = {}
        bases = placed["health checks"]
        breaker_at = placed["circuit breakers"]
        budget_at = placed["retry budgets"]
        quotas = {**placed["rate limits"], **placed["per-client rate limits"]}
        none = snapmod.SharedCells()

        for name, b in backends.items():
            policies = b.resilience
            lb_slots = tuple(slots[_key(name, ep)] for ep in b.endpoints) if name in least else ()
            cells = snapmod.SharedCells(
                endpoints=tuple(bases[_key(name, ep)] for ep in b.endpoints)
                if name in health and b.endpoints and _key(name, b.endpoints[0]) in bases
                else (),
                breaker=breaker_at.get(name, -1),
                budget=budget_at.get(name, -1),
            )
            if not lb_slots and cells == none:
                continue
            policies = policies or snapmod.BackendPolicies()
            if lb_slots:
                assert policies.lb is not None
                policies = replace(policies, lb=replace(policies.lb, slots=lb_slots))
            if cells != none:
                policies = replace(policies, cells=cells)
            changed[name] = replace(b, resilience=policies)
        if not changed and not quotas:
            return snap, data
        if quotas:
            snap = _place_quotas(snap, quotas)
        if changed:
            snap = replace(snap, backends={**backends, **changed})
        return snap, snapmod.encode(snap)

    def worker_gone(self, worker: int) -> None:
        """Before worker slot ``worker`` is respawned: what the dead one had in flight is over."""
        if self.arena is not None:
            self.arena.counters.clear_row(worker)

    def close(self) -> None:
        if self.arena is not None:
            self.arena.close()
