"""Master side of least-connections balancing (issue 19): the arena of in-flight counts and the
endpoints' slots in it.

The arena is made only when a snapshot has a backend balanced by least connections, and only
before the first worker is forked: a worker can use only the mappings it inherited. A reload that
first asks for least connections therefore cannot get machine-wide counts until the gateway
restarts; it is said in the log, and those backends are balanced round robin meanwhile (as they
are when their endpoints do not fit the arena).

Each worker writes +1/-1 into its own counter row (``fsmfast.proxy.upstream``); before a dead
worker's slot is respawned, its row is cleared, so what it had in flight stops counting.
"""

from __future__ import annotations

import logging

from msgspec.structs import replace

from fsmfast import snapshot as snapmod
from fsmfast.shared.arena import Arena
from fsmfast.shared.slots import SlotTable, SlotTableFull

log = logging.getLogger("fsmfast.master")

LEAST = "LeastConnectionLoadBalancer"
# Slots for endpoints added by later reloads: the arena never grows.
HEADROOM = 4
MIN_SLOTS = 256


def _least(backend: snapmod.Backend) -> bool:
    policies = backend.resilience
    return policies is not None and policies.lb is not None and policies.lb.type == LEAST


def _key(name: str, ep: snapmod.Endpoint) -> str:
    return f"{name}/{ep.host}:{ep.port}"


class LeastConnections:
    """``prepare(snapshot, its bytes)`` on the first build (``forked=False``) and every reload; the
    snapshot it returns (decoded, and its bytes) carries the slots. ``worker_gone(slot)`` before a
    respawn."""

    __slots__ = ("arena", "table", "workers")

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self.arena: Arena | None = None
        self.table: SlotTable | None = None

    def prepare(self, snap: snapmod.Snapshot, data: bytes, forked: bool) -> tuple[snapmod.Snapshot, bytes]:
        """``snap`` decoded from ``data`` by the caller, who needs it too (one decode per generation)."""
        wanted = {name: b for name, b in snap.backends.items() if _least(b)}
        if not wanted:
            return snap, data
        keys = [_key(name, ep) for name, b in wanted.items() for ep in b.endpoints]
        if self.arena is None:
            if forked:
                log.warning(
                    "least-connections balancing of %s needs a restart of the gateway (the shared counters are"
                    " made before the workers start); balancing round robin until then",
                    ", ".join(sorted(wanted)),
                )
                return snap, data
            capacity = max(MIN_SLOTS, HEADROOM * len(keys))
            self.arena = Arena(self.workers, capacity)
            self.table = SlotTable(capacity)
        assert self.table is not None
        try:
            slots = self.table.assign(keys)
        except SlotTableFull as e:
            log.warning("%s; balancing %s round robin", e, ", ".join(sorted(wanted)))
            return snap, data
        for slot in self.table.reassigned:
            self.arena.counters.clear_slot(slot)
        backends = dict(snap.backends)
        for name, b in wanted.items():
            assert b.resilience is not None and b.resilience.lb is not None
            lb = replace(b.resilience.lb, slots=tuple(slots[_key(name, ep)] for ep in b.endpoints))
            backends[name] = replace(b, resilience=replace(b.resilience, lb=lb))
        snap = replace(snap, backends=backends)
        return snap, snapmod.encode(snap)

    def worker_gone(self, worker: int) -> None:
        """Before worker slot ``worker`` is respawned: what the dead one had in flight is over."""
        if self.arena is not None:
            self.arena.counters.clear_row(worker)

    def close(self) -> None:
        if self.arena is not None:
            self.arena.close()
