"""fsmfast.edge.ratelimit: GCRA quotas over the machine-wide arena, one per policy or one per client key.

Times are injected (``now``, monotonic seconds) except where a test checks the clock itself. Runs over
the compiled atomics and, with FSMFAST_NO_EXTENSIONS=1, over their pure-Python twin.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from fsmfast.edge.ratelimit import (
    CELLS_PER_QUOTA,
    PROBES,
    Decision,
    KeyedQuotas,
    Quota,
    key_hash,
    keyed_cells,
    quota_headers,
    refusal_headers,
)
from fsmfast.shared.arena import USING_EXTENSION, Arena
from tests.support.forks import fork, reap

T0 = 5000.0  # an injected monotonic time
GO = 0  # the cell forked children wait on
FIRST = 8  # quotas start here, a cache line after GO
CELLS = 4096


@pytest.fixture
def arena() -> Iterator[Arena]:
    arena = Arena(workers=1, slots=1, cells=CELLS)
    yield arena
    arena.close()


def quota(arena: Arena, k: int = 0, requests: int = 20, window: float = 60, burst: int | None = None) -> Quota:
    return Quota(arena.cells, FIRST + k * CELLS_PER_QUOTA, requests, window, requests if burst is None else burst)


def test_exactly_the_burst_passes_at_once(arena: Arena) -> None:
    q = quota(arena)
    decisions = [q.take(T0) for _ in range(100)]
    assert [d.admitted for d in decisions] == [True] * 20 + [False] * 80
    assert [d.remaining for d in decisions[:20]] == list(range(19, -1, -1))
    assert all(d.wait == 0 for d in decisions[:20])
    # A token every 3 s; the first refused waits for the first token the burst took to come back.
    assert {d.wait for d in decisions[20:]} == {3.0}
    assert {d.reset for d in decisions[20:]} == {60.0}


def test_refill_over_time(arena: Arena) -> None:
    q = quota(arena)
    assert all(q.take(T0).admitted for _ in range(20))
    assert not q.take(T0 + 2.999).admitted
    first = q.take(T0 + 3)
    assert first.admitted and first.remaining == 0 and first.reset == 60.0
    assert not q.take(T0 + 3).admitted
    # Empty at T0 + 3; 30 s later, 10 tokens are back.
    passed = sum(q.take(T0 + 33).admitted for _ in range(50))
    assert passed == 10
    # Idle for a whole window: the bucket is full again, and never fuller.
    assert q.peek(T0 + 1000).remaining == 20
    assert sum(q.take(T0 + 1000).admitted for _ in range(50)) == 20
    # A steady client at the rate always passes.
    r = quota(arena, 1)
    assert all(r.take(T0 + 3 * k).admitted for k in range(200))
    assert r.peek(T0 + 3 * 199).remaining == 19


def test_burst_above_requests(arena: Arena) -> None:
    q = quota(arena, requests=10, window=10, burst=25)
    decisions = [q.take(T0) for _ in range(40)]
    assert sum(d.admitted for d in decisions) == 25
    assert decisions[0].remaining == 24 and decisions[0].limit == 10
    assert decisions[24].reset == 25.0 and decisions[25].wait == 1.0
    assert sum(q.take(T0 + 5).admitted for _ in range(40)) == 5  # one a second since
    # A burst below requests: the rate is the same, the bucket smaller.
    small = quota(arena, 1, requests=100, window=1, burst=1)
    assert [small.take(T0).admitted for _ in range(3)] == [True, False, False]
    assert small.take(T0 + 0.01).admitted and not small.take(T0 + 0.0199).admitted


def test_emission_interval_is_rounded_up(arena: Arena) -> None:
    # 3 per second: T = 333,333,334 ns, so 3 tokens take a hair over a second, never less.
    q = quota(arena, requests=3, window=1, burst=1)
    assert q.take(T0).admitted
    assert not q.take(T0 + 0.333333333).admitted
    assert q.take(T0 + 0.333333334).admitted
    # Up to T0 + 10, tokens at 2T, 3T, ... 29T (30T is a few ns past 10 s): 28; a T of exactly a
    # third of a second would have given 29.
    assert sum(q.take(T0 + k / 1000).admitted for k in range(1, 10_001)) == 28


def test_backlog_reservations_are_served_in_order(arena: Arena) -> None:
    q = quota(arena, requests=10, window=1, burst=5)  # T = 0.1 s
    max_wait = q.backlog_wait(3)
    assert max_wait == pytest.approx(0.3)
    decisions = [q.reserve(T0, max_wait) for _ in range(12)]
    assert [d.admitted for d in decisions] == [True] * 8 + [False] * 4
    assert [round(d.wait, 9) for d in decisions[:8]] == [0, 0, 0, 0, 0, 0.1, 0.2, 0.3]
    # The refused one would wait 0.4 s for the first free slot after the three held.
    assert round(decisions[8].wait, 9) == 0.4
    # take() does not jump the queue: the slots at +0.1..+0.3 are held.
    assert not q.take(T0 + 0.05).admitted
    assert round(q.take(T0 + 0.05).wait, 9) == 0.35
    # A new slot opens for the backlog as time passes, one per T.
    assert round(q.reserve(T0 + 0.1, max_wait).wait, 9) == 0.3
    assert not q.reserve(T0 + 0.1, max_wait).admitted
    # Once the held slots are reached, take() passes again (the waiting ones went first).
    assert q.take(T0 + 0.5).admitted


def test_headers_at_several_points(arena: Arena) -> None:
    q = quota(arena)  # 20 per 60 s
    first = q.take(T0)
    assert quota_headers(first) == [
        ("RateLimit-Limit", "20"),
        ("RateLimit-Remaining", "19"),
        ("RateLimit-Reset", "3"),
    ]
    for _ in range(18):
        q.take(T0)
    last = q.take(T0)
    assert quota_headers(last)[1:] == [("RateLimit-Remaining", "0"), ("RateLimit-Reset", "60")]
    refused = q.take(T0 + 1.5)
    assert not refused.admitted and refused.wait == 1.5 and refused.reset == 58.5
    assert refusal_headers(refused) == [
        ("RateLimit-Limit", "20"),
        ("RateLimit-Remaining", "0"),
        ("RateLimit-Reset", "59"),
        ("Retry-After", "2"),
    ]
    # Exactly on a second: not rounded up past it.
    assert dict(refusal_headers(q.take(T0)))["Retry-After"] == "3"
    # Less than a nanosecond-exact second away: never "0".
    almost = q.take(T0 + 2.9999)
    assert dict(refusal_headers(almost))["Retry-After"] == "1"
    # The policy's responseHeadersToAdd come last; one it names replaces the computed one.
    extra = [("X-Why", "too many"), ("ratelimit-limit", "20, 20;w=60")]
    assert refusal_headers(refused, extra) == [
        ("RateLimit-Remaining", "0"),
        ("RateLimit-Reset", "59"),
        ("Retry-After", "2"),
        ("X-Why", "too many"),
        ("ratelimit-limit", "20, 20;w=60"),
    ]
    # Later: tokens back, the reset counts down to a full bucket.
    later = q.peek(T0 + 31)
    assert later.admitted and (later.remaining, later.reset) == (10, 29.0)
    assert quota_headers(q.peek(T0 + 60))[1:] == [("RateLimit-Remaining", "20"), ("RateLimit-Reset", "0")]


def test_the_clock_is_read_when_now_is_not_given(arena: Arena) -> None:
    q = quota(arena, requests=5, window=3600)
    assert sum(q.take().admitted for _ in range(10)) == 5
    refused = q.take()
    assert not refused.admitted and 719 < refused.wait <= 720
    # The injected clock is the same clock.
    assert not q.take(time.monotonic()).admitted


def test_quota_cells_must_fit(arena: Arena) -> None:
    with pytest.raises(ValueError, match="outside the arena"):
        Quota(arena.cells, CELLS - CELLS_PER_QUOTA + 1, 1, 1, 1)
    with pytest.raises(ValueError, match="requests >= 1"):
        Quota(arena.cells, FIRST, 0, 1, 1)
    with pytest.raises(ValueError, match="outside the arena"):
        KeyedQuotas(arena.cells, FIRST, CELLS // 2, 1, 1, 1)
    assert keyed_cells(1) == 8 and keyed_cells(4) == 8 and keyed_cells(5) == 16
    assert keyed_cells(65_536) * 8 == 1 << 20  # 16 bytes an entry


PROCESSES = 4
QUOTAS = 40 if USING_EXTENSION else 6
TALLY = FIRST + QUOTAS * CELLS_PER_QUOTA  # per quota: requests admitted


def _start(arena: Arena, child: object) -> list[int]:
    pids = [fork(child) for _ in range(PROCESSES)]  # type: ignore[arg-type]
    arena.cells.store(GO, 1)
    return pids


def test_exact_across_processes_in_a_burst(arena: Arena) -> None:
    """Four processes send a burst of 100 (25 each) at once, to many quotas of 20: exactly 20 pass
    each time; reservations for a backlog of 10 get ten distinct slots."""
    quotas = [quota(arena, k) for k in range(QUOTAS)]
    backlog = Quota(arena.cells, TALLY + QUOTAS, 20, 60, 5)
    slots = TALLY + QUOTAS + CELLS_PER_QUOTA  # per slot index: reservations that got it
    assert slots + 16 <= CELLS

    def burst() -> None:
        while arena.cells.load(GO) == 0:
            pass
        for _ in range(25):
            for k, q in enumerate(quotas):
                if q.take(T0).admitted:
                    arena.cells.add(TALLY + k, 1)
            d = backlog.reserve(T0, backlog.backlog_wait(10))
            if d.admitted:
                arena.cells.add(slots + round(d.wait / 3), 1)

    assert [reap(pid) for pid in _start(arena, burst)] == [0] * PROCESSES
    assert [arena.cells.load(TALLY + k) for k in range(QUOTAS)] == [20] * QUOTAS
    assert [arena.cells.load(slots + s) for s in range(12)] == [5] + [1] * 10 + [0]


def test_exact_across_processes_on_the_clock(arena: Arena) -> None:
    """Hammering on the real clock at 1000 r/s with burst 50: never more than GCRA allows over the
    time the processes ran, and the final TAT accounts for every admission."""
    rounds = 20_000 if USING_EXTENSION else 1_000
    q = Quota(arena.cells, FIRST, 1000, 1, 50)
    start = TALLY

    def hammer() -> None:
        while arena.cells.load(GO) == 0:
            pass
        passed = sum(q.take().admitted for _ in range(rounds))
        arena.cells.add(start, passed)

    before = time.monotonic()
    pids = _start(arena, hammer)
    assert [reap(pid) for pid in pids] == [0] * PROCESSES
    after = time.monotonic()
    passed = arena.cells.load(start)
    assert 50 <= passed <= 50 + int((after - before) * 1000) + 1
    # Every admission moved TAT on by exactly T from max(TAT, now), so at the end TAT is at most
    # the end time plus the whole burst: nothing was admitted beyond it.
    assert q.peek(after).reset <= 0.050


def test_keyed_quotas_are_per_key(arena: Arena) -> None:
    keyed = KeyedQuotas(arena.cells, FIRST, 64, requests=3, window=60, burst=3)
    for key in (b"10.0.0.1", b"10.0.0.2", "2001:db8::1"):
        assert [keyed.take(key, T0).admitted for _ in range(5)] == [True] * 3 + [False] * 2
    refused = keyed.take(b"10.0.0.1", T0 + 1)
    assert not refused.admitted and refused.wait == 19.0 and not refused.full
    assert keyed.take(b"10.0.0.1", T0 + 20).admitted
    assert not keyed.take(b"10.0.0.2", T0 + 19.9).admitted
    assert keyed.keys_held() == 3
    assert key_hash("10.0.0.1") == key_hash(b"10.0.0.1") != key_hash(b"10.0.0.2")
    # BLAKE2b's 64 bits as a signed word, not Python's salted hash(): the same in every process.
    digest = int.from_bytes(hashlib.blake2b(b"10.0.0.1", digest_size=8).digest(), "little")
    assert key_hash(b"10.0.0.1") % (1 << 64) == digest


def test_keyed_quotas_exact_per_key_across_processes(arena: Arena) -> None:
    keys = [f"198.51.100.{k}".encode() for k in range(16 if USING_EXTENSION else 4)]
    keyed = KeyedQuotas(arena.cells, FIRST, 64, requests=5, window=60, burst=5)
    tally = FIRST + keyed_cells(64)

    def clients() -> None:
        while arena.cells.load(GO) == 0:
            pass
        for _ in range(10):
            for k, key in enumerate(keys):
                if keyed.take(key, T0).admitted:
                    arena.cells.add(tally + k, 1)

    assert [reap(pid) for pid in _start(arena, clients)] == [0] * PROCESSES
    assert [arena.cells.load(tally + k) for k in range(len(keys))] == [5] * len(keys)
    assert keyed.keys_held() == len(keys)  # no key claimed two entries


def test_a_full_table_takes_over_the_oldest_idle_entry(arena: Arena) -> None:
    keyed = KeyedQuotas(arena.cells, FIRST, PROBES, requests=2, window=10, burst=2, admit_when_full=False)
    keys = [f"k{k}" for k in range(PROBES)]
    # Eight keys fill the eight entries; each is busy for a while after its requests.
    for k, key in enumerate(keys):
        assert keyed.take(key, T0 + k).admitted
    assert keyed.keys_held() == PROBES
    # A ninth key while every entry is busy (each TAT is k + 5 s ahead): refused, and flagged.
    full = keyed.take("newcomer", T0 + 4)
    assert not full.admitted and full.full
    # At T0 + 6 the entries of k0 and k1 are idle (TAT T0 + 5, T0 + 6): the oldest, k0's, goes.
    taken = keyed.take("newcomer", T0 + 6)
    assert taken.admitted and not taken.full and taken.remaining == 1
    assert keyed.take("newcomer", T0 + 6).admitted and not keyed.take("newcomer", T0 + 6).admitted
    # k1 kept its entry (and its state); k0 comes back to a fresh quota (its bucket was full anyway).
    assert keyed.take("k1", T0 + 6).remaining == 1
    assert keyed.take("k0", T0 + 6.5).full  # k1 took a token: no entry is idle now
    assert keyed.take("k0", T0 + 8).admitted  # k2's entry (TAT T0 + 7) is the oldest idle one by then
    assert keyed.take("k3", T0 + 8).remaining == 1  # k3's (TAT T0 + 8) was idle too, and kept
    assert keyed.take("k2", T0 + 8).full  # k2 lost its entry while idle, and none is idle now
    assert keyed.take("k2", T0 + 9).admitted  # k4's entry (TAT T0 + 9) is
    assert keyed.keys_held() == PROBES
    # Admitting when full instead: untracked, flagged, no state written.
    base = FIRST + keyed_cells(PROBES)
    lenient = KeyedQuotas(arena.cells, base, PROBES, requests=2, window=10, burst=2)
    assert all(lenient.take(key, T0).admitted for key in keys)
    untracked = lenient.take("another", T0 + 1)
    assert untracked.admitted and untracked.full and untracked.remaining == 0
    assert lenient.keys_held() == PROBES and not lenient.take("another", T0 + 5).full


class Meddler:
    """The arena's cells as one process sees them, with another process's step run just before this
    one's next compare-and-swap or store: the interleavings a takeover must survive."""

    def __init__(self, cells: Any) -> None:
        self.cells = cells
        self.before_cas: Callable[[], object] | None = None
        self.before_store: Callable[[], object] | None = None
        # (word, loads of it to let by first, step)
        self.before_load: tuple[int, int, Callable[[], object]] | None = None

    def __len__(self) -> int:
        return len(self.cells)

    def load(self, i: int) -> int:
        if self.before_load is not None and self.before_load[0] == i:
            word, skip, hook = self.before_load
            self.before_load = (word, skip - 1, hook) if skip else None
            if not skip:
                hook()
        return int(self.cells.load(i))

    def cas(self, i: int, expected: int, desired: int) -> bool:
        hook, self.before_cas = self.before_cas, None
        if hook is not None:
            hook()
        return bool(self.cells.cas(i, expected, desired))

    def store(self, i: int, value: int) -> None:
        hook, self.before_store = self.before_store, None
        if hook is not None:
            hook()
        self.cells.store(i, value)


def one_entry(cells: Any) -> KeyedQuotas:
    return KeyedQuotas(cells, FIRST, 1, requests=1, window=1, burst=1, admit_when_full=False)


def test_a_takeover_during_a_charge_charges_neither_key_for_the_other(arena: Arena) -> None:
    meddler = Meddler(arena.cells)
    a_side, b_side = one_entry(meddler), one_entry(arena.cells)
    assert a_side.take("a", T0).admitted  # a's TAT: T0 + 1
    seen: list[Decision] = []
    # At T0 + 2 a's entry is idle; a reads it, and b takes it over before a's compare-and-swap.
    meddler.before_cas = lambda: seen.append(b_side.take("b", T0 + 2))
    late = a_side.take("a", T0 + 2)
    assert seen[0].admitted and not seen[0].full
    assert late.full and not late.admitted  # a looked again: the one entry is b's, and busy
    # b's quota holds b's one request only (a's would have pushed its TAT to T0 + 4).
    assert round(b_side.take("b", T0 + 2.5).wait, 9) == 0.5
    assert b_side.take("b", T0 + 3).admitted


def test_the_old_key_never_charges_an_entry_being_taken_over(arena: Arena) -> None:
    meddler = Meddler(arena.cells)
    a_side, b_side = one_entry(arena.cells), one_entry(meddler)
    assert a_side.take("a", T0).admitted
    seen: list[Decision] = []
    # b has marked a's idle entry and is about to write its hash: a comes in between.
    meddler.before_store = lambda: seen.append(a_side.take("a", T0 + 2))
    assert b_side.take("b", T0 + 2).admitted
    assert seen[0].full and not seen[0].admitted
    assert not b_side.take("b", T0 + 2.5).admitted  # b's TAT is T0 + 3: its own request only
    later = a_side.take("a", T0 + 3.5)  # b's entry idle again: a takes it back, a fresh quota
    assert later.admitted and later.remaining == 0
    assert b_side.take("b", T0 + 3.5).full


def test_a_charge_never_overwrites_a_takeover_mark(arena: Arena) -> None:
    meddler = Meddler(arena.cells)
    a_side = one_entry(meddler)
    assert a_side.take("a", T0).admitted
    # a has found its entry; before it reads the TAT to charge it, another process marks it.
    meddler.before_load = (FIRST + 1, 1, lambda: arena.cells.store(FIRST + 1, -(1 << 63)))
    d = a_side.take("a", T0 + 2)
    assert d.full and not d.admitted
    assert arena.cells.load(FIRST + 1) == -(1 << 63)


def test_an_entry_left_marked_is_skipped(arena: Arena) -> None:
    keyed = KeyedQuotas(arena.cells, FIRST, 8, requests=1, window=60, burst=1)
    assert keyed.take("x", T0).admitted
    [entry] = [FIRST + 2 * k for k in range(8) if arena.cells.load(FIRST + 2 * k) == key_hash("x")]
    arena.cells.store(entry + 1, -(1 << 63))  # as a worker killed during a takeover leaves it
    fresh = keyed.take("x", T0 + 1)
    assert fresh.admitted and not fresh.full  # another entry, no endless retry
    assert keyed.keys_held() == 2


def test_admit_takes_a_token_at_once_or_changes_nothing(arena: Arena) -> None:
    # The per-request fast path: the same tokens as take, no wait, and a refusal leaves the quota alone.
    quota = Quota(arena.cells, 0, requests=5, window=60, burst=5)
    assert [quota.admit() for _ in range(7)] == [True] * 5 + [False, False]
    before = arena.cells.load(0)
    assert quota.admit() is False and arena.cells.load(0) == before
    assert quota.take().admitted is False
