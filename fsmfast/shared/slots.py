"""Stable slot numbers for endpoint keys, assigned by the master.

The arena's tables are indexed by slot. A key (``backend/host:port``, or any string) keeps its
slot across reloads for as long as it exists, so counts and state carry over a reload; a slot is
given to another key only after its key is gone, and the slot freed longest ago goes first, so
that a stale update from an old generation's in-flight request is as unlikely as possible to
land on a new key (``reassigned`` names the slots to clear before the new key uses them).

Master-side and plain Python: the assignments travel to the workers as data (in the snapshot),
so nothing here needs a hash that agrees between processes. Where a key must be hashed into
shared state (an open-addressing table in the arena), use ``stable_hash``, never ``hash()``,
which Python salts per process.
"""

from __future__ import annotations

import hashlib
from collections import deque
from collections.abc import Iterable


class SlotTableFull(ValueError):
    """More keys than the arena has slots: a configuration limit, reported as such."""


def stable_hash(key: str) -> int:
    """A 64-bit hash of ``key`` that every process and every machine computes alike."""
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "little")


class SlotTable:
    """``assign(keys)`` on every configuration load; ``slots`` is the current mapping."""

    __slots__ = ("_free", "_next", "capacity", "reassigned", "slots")

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"a slot table needs at least one slot (not {capacity})")
        self.capacity = capacity
        self.slots: dict[str, int] = {}
        self._free: deque[int] = deque()  # freed slots, the longest free first
        self._next = 0  # slots from here on were never used
        # The slots the last assign() gave to a key after another key had used them.
        self.reassigned: tuple[int, ...] = ()

    def assign(self, keys: Iterable[str]) -> dict[str, int]:
        """Make ``keys`` the current set: keep the slots of keys still present, free those of keys
        gone, give new keys (in sorted order, so the result does not depend on the input's order)
        never-used slots first, then the longest free. Raises SlotTableFull, changing nothing, when
        the keys do not fit."""
        wanted = set(keys)
        if len(wanted) > self.capacity:
            raise SlotTableFull(
                f"{len(wanted)} endpoint keys do not fit the shared state's {self.capacity} slots;"
                " raise the limit or split the configuration"
            )
        gone = sorted(self.slots[k] for k in self.slots.keys() - wanted)
        self._free.extend(gone)
        for key in self.slots.keys() - wanted:
            del self.slots[key]
        reassigned = []
        for key in sorted(wanted - self.slots.keys()):
            if self._next < self.capacity:
                slot = self._next
                self._next += 1
            else:
                slot = self._free.popleft()
                reassigned.append(slot)
            self.slots[key] = slot
        self.reassigned = tuple(reassigned)
        return dict(self.slots)
