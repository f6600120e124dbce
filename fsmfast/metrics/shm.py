"""One worker's shared region: its loop heartbeat and its latest published counts.

The master maps one anonymous ``MAP_SHARED`` region per worker before it forks that worker, so
both processes see the same pages with nothing on disk and nothing to clean up: the pages go
when the last mapping closes. The worker writes, the master only reads.

Layout (little endian)::

    0   heartbeat   double   the worker loop's monotonic clock at its last tick (0.0: never)
    8   sequence    u64      publishes so far; the current blob is in slot ``sequence & 1``
    64  slot 0      u64 length, u32 crc32, u32 unused, then the blob
    ..  slot 1      the same, in the second half

A publish writes the slot that is *not* current, then bumps the sequence: the blob the
sequence points at is never written while it is current. So a worker killed mid-write (SIGKILL,
the watchdog) leaves the previous blob whole and current, and the master reads a consistent
copy while the worker writes the other slot. A reader copies the current slot, then checks
that the sequence did not move (two publishes during one copy would reuse its slot) and the
crc32 (the writer's stores need not reach the reader in order on every CPU); on a mismatch it
tries again.
"""

from __future__ import annotations

import mmap
import struct
import zlib

_HEARTBEAT = struct.Struct("<d")
_SEQUENCE = struct.Struct("<Q")
_SLOT_HEAD = struct.Struct("<QII")
_HEADER = 64
_READ_TRIES = 8

# Room for a few thousand (listener, route, backend) series per worker; pages a worker never
# writes are never allocated.
DEFAULT_SIZE = 4 << 20


class StatsRegion:
    """A region created by the master before the fork; ``beat``/``publish`` in the worker,
    ``heartbeat``/``read`` in the master."""

    __slots__ = ("_map", "capacity", "size")

    def __init__(self, size: int = DEFAULT_SIZE) -> None:
        size = -(-size // mmap.PAGESIZE) * mmap.PAGESIZE
        if size < 2 * mmap.PAGESIZE:
            raise ValueError(f"a stats region needs at least {2 * mmap.PAGESIZE} bytes")
        self.size = size
        self._map: mmap.mmap | None = mmap.mmap(-1, size, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ | mmap.PROT_WRITE)
        # The most one publish can carry.
        self.capacity = (size - _HEADER) // 2 - _SLOT_HEAD.size

    def _slot(self, index: int) -> int:
        return _HEADER + index * (self.capacity + _SLOT_HEAD.size)

    # -- the worker -----------------------------------------------------------------------

    def beat(self, now: float) -> None:
        """The worker's loop is alive at ``now`` (time.monotonic(), which both processes share)."""
        if self._map is not None:
            _HEARTBEAT.pack_into(self._map, 0, now)

    def publish(self, blob: bytes) -> bool:
        """Make ``blob`` the current one; False (and the previous one stays) if it does not fit."""
        m = self._map
        if m is None or len(blob) > self.capacity:
            return False
        sequence = _SEQUENCE.unpack_from(m, 8)[0] + 1
        base = self._slot(sequence & 1)
        start = base + _SLOT_HEAD.size
        m[start : start + len(blob)] = blob
        _SLOT_HEAD.pack_into(m, base, len(blob), zlib.crc32(blob), 0)
        _SEQUENCE.pack_into(m, 8, sequence)
        return True

    # -- the master -----------------------------------------------------------------------

    def heartbeat(self) -> float:
        """The worker's last beat, on the monotonic clock; 0.0 before its first (or once closed)."""
        if self._map is None:
            return 0.0
        return float(_HEARTBEAT.unpack_from(self._map, 0)[0])

    def read(self) -> bytes | None:
        """A copy of the current blob; None before the first publish, or if the writer kept
        overtaking the copy (the caller keeps what it read last)."""
        m = self._map
        if m is None:
            return None
        for _ in range(_READ_TRIES):
            sequence = _SEQUENCE.unpack_from(m, 8)[0]
            if sequence == 0:
                return None
            base = self._slot(sequence & 1)
            length, crc, _unused = _SLOT_HEAD.unpack_from(m, base)
            if length > self.capacity:
                continue  # a torn header: the writer moved on meanwhile
            start = base + _SLOT_HEAD.size
            blob = m[start : start + length]
            if _SEQUENCE.unpack_from(m, 8)[0] == sequence and zlib.crc32(blob) == crc:
                return blob
        return None

    def close(self) -> None:
        """Unmap (either side; idempotent). The pages go when the other side unmaps too."""
        m, self._map = self._map, None
        if m is not None:
            m.close()

    @property
    def closed(self) -> bool:
        return self._map is None
