"""Pure-Python twin of fsmfast/shared/_atomic.pyx: the same ``Words``, ``Counters`` and ``Cells``.

Python has no atomic operations, so every access to a word takes an exclusive POSIX record lock
on that word's 8 bytes of a memfd made when the ``Words`` is (in the master, before the fork, so
every worker shares it), plus a thread lock (record locks belong to the process, not the thread).
Slow (two system calls an operation) but exact between processes, and the kernel drops a dead
process's record locks, so a worker killed mid-operation blocks no one.
"""

from __future__ import annotations

import fcntl
import os
import threading
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager

_MIN = -(1 << 63)
_MAX = (1 << 63) - 1


def _int64(value: int) -> int:
    # The compiled twin converts with C's range check; say the same thing.
    if not _MIN <= value <= _MAX:
        raise OverflowError(f"{value} does not fit a signed 64-bit word")
    return value


def _wrap(value: int) -> int:
    # Two's complement, as GCC's atomic add on a signed word.
    return ((value - _MIN) & 0xFFFFFFFFFFFFFFFF) + _MIN


class Words:
    """The buffer as int64 words, indexed from 0; holds the buffer until ``release()``."""

    __slots__ = ("__weakref__", "_fd", "_thread", "_view", "count")

    def __init__(self, buffer: object) -> None:
        view = memoryview(buffer)  # type: ignore[arg-type]
        if view.nbytes < 8 or view.nbytes % 8:
            view.release()
            raise ValueError("shared words need a non-empty buffer, 8-byte aligned, a multiple of 8 bytes long")
        self._view: memoryview | None = view.cast("B").cast("q")
        self.count = view.nbytes // 8
        self._fd = os.memfd_create("fsmfast-shared-words", os.MFD_CLOEXEC)
        self._thread = threading.Lock()
        _LIVE.add(self)

    def __len__(self) -> int:
        return self.count

    @contextmanager
    def _locked(self, i: int, n: int = 1) -> Iterator[memoryview]:
        if self._view is None or i < 0 or n < 1 or i + n > self.count:
            last = i if self._view is None or i < 0 or i >= self.count else i + n - 1
            raise IndexError(f"shared word {last} is outside 0..{self.count - 1}" if self.count else "released")
        with self._thread:
            fcntl.lockf(self._fd, fcntl.LOCK_EX, 8 * n, 8 * i)
            try:
                yield self._view
            finally:
                fcntl.lockf(self._fd, fcntl.LOCK_UN, 8 * n, 8 * i)

    def load(self, i: int) -> int:
        with self._locked(i) as view:
            return int(view[i])

    def store(self, i: int, value: int) -> None:
        value = _int64(value)
        with self._locked(i) as view:
            view[i] = value

    def add(self, i: int, delta: int) -> int:
        delta = _int64(delta)
        with self._locked(i) as view:
            value = view[i] = _wrap(view[i] + delta)
            return value

    def cas(self, i: int, expected: int, desired: int) -> bool:
        expected, desired = _int64(expected), _int64(desired)
        with self._locked(i) as view:
            if view[i] != expected:
                return False
            view[i] = desired
            return True

    def sum(self, start: int, stride: int, n: int) -> int:
        return _wrap(sum(self.load(start + k * stride) for k in range(n)))

    def zero(self, start: int, n: int) -> None:
        if n > 0:
            with self._locked(start, n) as view:
                for k in range(start, start + n):
                    view[k] = 0

    def release(self) -> None:
        if self._view is not None:
            self._view.release()
            self._view = None
            self.count = 0
            os.close(self._fd)


# A fork while another thread holds a Words' thread lock would leave it held forever in the child.
_LIVE: weakref.WeakSet[Words] = weakref.WeakSet()


def _after_fork() -> None:
    for words in _LIVE:
        words._thread = threading.Lock()


os.register_at_fork(after_in_child=_after_fork)


class Counters:
    """Per-worker counter rows: ``rows[worker][slot]``, one writer per cell (the worker owning the
    row); readers sum a slot over the rows. Row ``worker`` starts at word ``base + worker * stride``."""

    __slots__ = ("base", "slots", "stride", "words", "workers")

    def __init__(self, words: Words, base: int, workers: int, slots: int, stride: int) -> None:
        if workers < 1 or slots < 1 or stride < slots or base < 0 or base + workers * stride > words.count:
            raise ValueError("counter rows do not fit the shared words")
        self.words = words
        self.base = base
        self.workers = workers
        self.slots = slots
        self.stride = stride

    def _cell(self, worker: int, slot: int) -> int:
        if not 0 <= worker < self.workers:
            raise IndexError(f"worker {worker} is outside 0..{self.workers - 1}")
        if not 0 <= slot < self.slots:
            raise IndexError(f"slot {slot} is outside 0..{self.slots - 1}")
        return self.base + worker * self.stride + slot

    def add(self, worker: int, slot: int, delta: int) -> int:
        return self.words.add(self._cell(worker, slot), delta)

    def get(self, worker: int, slot: int) -> int:
        return self.words.load(self._cell(worker, slot))

    def total(self, slot: int) -> int:
        return self.words.sum(self._cell(0, slot), self.stride, self.workers)

    def totals(self) -> list[int]:
        return [self.words.sum(self.base + slot, self.stride, self.workers) for slot in range(self.slots)]

    def clear_row(self, worker: int) -> None:
        self.words.zero(self._cell(worker, 0), self.slots)

    def clear_slot(self, slot: int) -> None:
        for worker in range(self.workers):
            self.words.store(self._cell(worker, slot), 0)


class Cells:
    """Single int64 cells shared by every process, for state one compare-and-swap updates whole."""

    __slots__ = ("base", "count", "words")

    def __init__(self, words: Words, base: int, count: int) -> None:
        if count < 0 or base < 0 or base + count > words.count:
            raise ValueError("cells do not fit the shared words")
        self.words = words
        self.base = base
        self.count = count

    def __len__(self) -> int:
        return self.count

    def _cell(self, i: int) -> int:
        if not 0 <= i < self.count:
            raise IndexError(f"cell {i} is outside 0..{self.count - 1}")
        return self.base + i

    def load(self, i: int) -> int:
        return self.words.load(self._cell(i))

    def store(self, i: int, value: int) -> None:
        self.words.store(self._cell(i), value)

    def add(self, i: int, delta: int) -> int:
        return self.words.add(self._cell(i), delta)

    def cas(self, i: int, expected: int, desired: int) -> bool:
        return self.words.cas(self._cell(i), expected, desired)

    def take_now(self, i: int, tolerance: int, emission: int) -> bool:
        # The twin of the compiled GCRA step: CLOCK_MONOTONIC in ns, as the C code reads it.
        now = time.monotonic_ns()
        while True:
            old = self.load(i)
            tat = old if old > now else now
            if tat - now > tolerance:
                return False
            if self.cas(i, old, tat + emission):
                return True
