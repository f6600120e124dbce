"""The machine-wide arena: one anonymous shared mapping the master makes before it forks.

Every worker inherits the same pages (a respawned worker too, since the master keeps the
mapping), so state written by one worker is seen by all at memory speed, with no name on disk
and nothing to clean up. Its tables are fixed when it is made, sized from the configuration's
limits; nothing in it ever moves, so a worker can keep word indexes for as long as it lives.

Two primitives, both int64 words updated atomically (``fsmfast.shared._atomic``, compiled with
GCC's lock-free ``__atomic_*`` builtins, or its pure-Python twin ``fsmfast.shared.atomic``):

- ``counters``: per-worker rows, ``rows[worker][slot]``. A cell has one writer (the worker owning
  the row), a reader sums the slot over all rows. Before it respawns a dead worker the master
  calls ``counters.clear_row(worker)``, so counts of what the dead worker had in flight (open
  connections, say) do not stay in the totals. For least-connections counts, passive failure
  counts, request and retry counts per time bucket.
- ``cells``: single words that a compare-and-swap updates whole (read, compute, ``cas``; retry on
  False), or ``add`` bumps. For state that is one number: a breaker's open-until time, a GCRA
  theoretical arrival time, a health bitmap's generation.

Layout (native-endian int64 words; each row begins a 64-byte cache line, so two workers' writes
never share a line)::

    0   header   magic, layout version, workers, slots, stride, cells, 0, 0
    8   rows     workers rows of ``stride`` words (slots rounded up to 8)
    ..  cells    ``cells`` words

Which slot means what is the master's business (``fsmfast.shared.slots.SlotTable``); the arena
only holds numbers.
"""

from __future__ import annotations

import mmap
from typing import Any

from fsmfast._compiled import extension
from fsmfast.shared import atomic as twin

_native = extension("fsmfast.shared._atomic")
_impl: Any = _native if _native is not None else twin

USING_EXTENSION = _native is not None
Words: type[twin.Words] = _impl.Words
Counters: type[twin.Counters] = _impl.Counters
Cells: type[twin.Cells] = _impl.Cells

MAGIC = 0x66736D5F61726E61  # "fsm_arna"
LAYOUT = 1
_HEADER = 8  # words
_LINE = 8  # words per 64-byte cache line


class Arena:
    """Made by the master before it forks (``Arena(workers, slots, cells)``); used by every
    process; ``close()`` in the master when the gateway stops."""

    __slots__ = ("_map", "cells", "counters", "size", "words")

    def __init__(self, workers: int, slots: int, cells: int = 0) -> None:
        if workers < 1 or slots < 1 or cells < 0:
            raise ValueError(
                f"an arena needs workers >= 1 and slots >= 1 and cells >= 0 (not {workers}, {slots}, {cells})"
            )
        stride = -(-slots // _LINE) * _LINE
        first_cell = _HEADER + workers * stride
        total = first_cell + cells
        self.size = -(-total * 8 // mmap.PAGESIZE) * mmap.PAGESIZE
        # Anonymous and shared: inherited over fork, gone when the last process unmaps it. Pages
        # never written are never allocated, so generous limits cost address space only.
        self._map: mmap.mmap | None = mmap.mmap(
            -1, self.size, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ | mmap.PROT_WRITE
        )
        self.words = Words(self._map)
        for i, value in enumerate((MAGIC, LAYOUT, workers, slots, stride, cells)):
            self.words.store(i, value)
        self.counters = Counters(self.words, _HEADER, workers, slots, stride)
        self.cells = Cells(self.words, first_cell, cells)

    def close(self) -> None:
        """Unmap in this process (idempotent); others keep their own mapping."""
        if self._map is not None:
            self.words.release()
            self._map.close()
            self._map = None
