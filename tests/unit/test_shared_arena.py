"""fsmfast.shared: the machine-wide arena of atomic words, across real forked processes.

Run over the compiled atomics and, with FSMFAST_NO_EXTENSIONS=1, over the pure-Python twin. What
must hold: concurrent adds and compare-and-swaps from several processes lose nothing; a process
SIGKILLed in the middle leaves the arena usable by the rest; clearing a dead worker's row drops
exactly its counts; and the twin computes what the compiled module computes.
"""

from __future__ import annotations

import os
import random
import signal
import time
from collections.abc import Callable

import pytest

from fsmfast.shared import atomic as twin
from fsmfast.shared.arena import USING_EXTENSION, Arena
from tests.support.forks import fork as _fork
from tests.support.forks import reap as _reap

# The twin takes two system calls an operation; keep its runs short but contended.
ROUNDS = 200_000 if USING_EXTENSION else 5_000
PROCESSES = 4
GO = 0  # cell the children wait on, so they all start hammering at once


def _wait_go(arena: Arena) -> None:
    while arena.cells.load(GO) == 0:
        pass


def _cas_increment(arena: Arena, cell: int) -> None:
    while True:
        seen = arena.cells.load(cell)
        if arena.cells.cas(cell, seen, seen + 1):
            return


def test_concurrent_adds_and_cas_from_several_processes_are_exact() -> None:
    arena = Arena(workers=PROCESSES, slots=3, cells=3)
    try:

        def hammer(worker: int) -> None:
            _wait_go(arena)
            for i in range(ROUNDS):
                arena.cells.add(1, 1)  # every process on one word: the contended case
                _cas_increment(arena, 2)
                arena.counters.add(worker, i % 3, 1)
                arena.counters.add(worker, 2, -1 if i % 2 else 2)

        pids = [_fork(lambda w=w: hammer(w)) for w in range(PROCESSES)]  # type: ignore[misc]
        arena.cells.store(GO, 1)
        assert [_reap(pid) for pid in pids] == [0] * PROCESSES
        assert arena.cells.load(1) == PROCESSES * ROUNDS
        assert arena.cells.load(2) == PROCESSES * ROUNDS
        per_slot = [len(range(s, ROUNDS, 3)) for s in range(3)]
        bumps = ROUNDS - ROUNDS // 2  # +2 on even rounds, -1 on odd ones
        expected = [per_slot[0], per_slot[1], per_slot[2] + 2 * bumps - ROUNDS // 2]
        assert [arena.counters.get(w, s) for w in range(PROCESSES) for s in range(3)] == expected * PROCESSES
        assert arena.counters.totals() == [PROCESSES * n for n in expected]
        assert [arena.counters.total(s) for s in range(3)] == arena.counters.totals()
    finally:
        arena.close()


def test_a_process_killed_mid_way_leaves_the_arena_usable() -> None:
    arena = Arena(workers=2, slots=2, cells=2)
    try:

        def forever() -> None:
            while True:
                _cas_increment(arena, 1)
                arena.counters.add(0, 0, 1)
                arena.counters.add(0, 1, 1)
                arena.counters.add(0, 1, -1)

        victim = _fork(forever)
        deadline = time.monotonic() + 10
        while arena.cells.load(1) < 200 and time.monotonic() < deadline:
            time.sleep(0.001)
        assert arena.cells.load(1) >= 200, "the child never got going"
        os.kill(victim, signal.SIGKILL)
        assert os.waitpid(victim, 0)[1] & 0x7F == signal.SIGKILL

        # Killed at any point, it holds nothing: a respawned worker and the master go on at once.
        before = arena.cells.load(1)
        row = arena.counters.get(0, 0)
        assert row in (before - 1, before)  # the child bumps its row right after each CAS
        assert arena.counters.get(0, 1) in (0, 1)  # its +1/-1 pair, perhaps cut in half

        def respawned() -> None:
            for _ in range(500):
                _cas_increment(arena, 1)
                arena.counters.add(1, 0, 1)

        assert _reap(_fork(respawned), timeout=30) == 0
        assert arena.cells.load(1) == before + 500
        assert arena.counters.get(1, 0) == 500
    finally:
        arena.close()


def test_clear_row_drops_a_dead_workers_counts_only() -> None:
    arena = Arena(workers=3, slots=4, cells=0)
    try:

        def holds_connections(worker: int, opened: int) -> Callable[[], None]:
            def child() -> None:
                for slot in range(4):
                    arena.counters.add(worker, slot, opened)
                if worker == 0:
                    os.kill(os.getpid(), signal.SIGKILL)  # dies with its connections open

            return child

        pids = [_fork(holds_connections(w, w + 2)) for w in range(3)]
        statuses = [_reap(pid) for pid in pids]
        assert statuses[0] & 0x7F == signal.SIGKILL and statuses[1:] == [0, 0]
        assert arena.counters.totals() == [2 + 3 + 4] * 4
        arena.counters.clear_row(0)  # the master, before respawning worker 0
        assert arena.counters.totals() == [3 + 4] * 4
        assert [arena.counters.get(0, s) for s in range(4)] == [0] * 4
        arena.counters.clear_slot(2)  # the master, before a freed slot serves a new key
        assert arena.counters.totals() == [7, 7, 0, 7]
    finally:
        arena.close()


def test_arena_limits_and_lifecycle() -> None:
    with pytest.raises(ValueError, match="workers >= 1"):
        Arena(workers=0, slots=1)
    arena = Arena(workers=2, slots=9, cells=1)
    assert arena.size % 4096 == 0
    assert arena.counters.stride == 16  # rows start on their own cache lines
    for bad in (lambda: arena.counters.add(2, 0, 1), lambda: arena.counters.get(0, 9), lambda: arena.cells.load(1)):
        with pytest.raises(IndexError, match="outside"):
            bad()
    with pytest.raises(OverflowError):
        arena.cells.store(0, 1 << 63)
    arena.cells.store(0, (1 << 63) - 1)
    assert arena.cells.add(0, 1) == -(1 << 63)  # wraps, in both twins
    arena.close()
    arena.close()
    with pytest.raises(IndexError, match="released"):
        arena.cells.load(0)


@pytest.mark.skipif(not USING_EXTENSION, reason="compares the compiled atomics with their twin")
def test_the_twin_computes_what_the_compiled_module_does() -> None:
    import mmap

    from fsmfast.shared import _atomic as native  # type: ignore[attr-defined]

    rng = random.Random(19)
    maps = [mmap.mmap(-1, 4096) for _ in range(2)]
    words = [native.Words(maps[0]), twin.Words(maps[1])]
    counters = [m.Counters(w, 8, 3, 5, 8) for m, w in zip((native, twin), words, strict=True)]
    cells = [m.Cells(w, 40, 4) for m, w in zip((native, twin), words, strict=True)]
    big = [0, 1, -1, (1 << 63) - 1, -(1 << 63), 1 << 62]

    def results(on_cells: bool, method: str, args: tuple[int, ...]) -> list[object]:
        out: list[object] = []
        for target in cells if on_cells else counters:
            try:
                out.append(getattr(target, method)(*args))
            except (IndexError, OverflowError) as exc:
                out.append(type(exc).__name__)
        return out

    for _ in range(3000):
        i, w, s = rng.randrange(-1, 5), rng.randrange(-1, 4), rng.randrange(-1, 6)
        v, e = rng.choice([*big, rng.randrange(-100, 100)]), rng.choice([*big, rng.randrange(-3, 3)])
        on_cells, method, args = rng.choice(
            [
                (True, "add", (i, v)),
                (True, "cas", (i, e, v)),
                (True, "load", (i,)),
                (True, "store", (i, v)),
                (False, "add", (w, s, v)),
                (False, "get", (w, s)),
                (False, "total", (s,)),
                (False, "totals", ()),
                (False, "clear_row", (w,)),
                (False, "clear_slot", (s,)),
            ]
        )
        a, b = results(on_cells, method, args)
        assert a == b, (method, args)
    assert bytes(maps[0]) == bytes(maps[1])
    for w in words:
        w.release()
