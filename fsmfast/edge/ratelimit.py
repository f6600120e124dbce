"""L7 rate limiting on one machine (issue 20): FSM's RateLimitPolicy quotas, exact with any number of
workers, over the arena of ``fsmfast.shared``.

FSM keeps a quota per Pipy thread, so ``requests: 20`` admits 20 per thread. Here every worker takes
from the same quota: with ``requests: 20`` per 60 s and ``burst: 20``, exactly 20 requests of a burst
of 100 pass, whichever processes send them.

The algorithm is GCRA (the generic cell rate algorithm), which admits exactly what a token bucket of
``burst`` tokens refilled at ``requests / window`` admits, but keeps one number: the theoretical
arrival time ``TAT``. With the emission interval ``T = window / requests`` and the tolerance
``tau = (burst - 1) * T``, a request at ``now`` looks at ``tat = max(TAT, now)``:

- ``tat - now <= tau``: admitted, and ``TAT`` becomes ``tat + T`` (one compare-and-swap; a process
  that loses the race computes again from the winner's value, so no token is ever handed out twice);
- otherwise refused, without a write, and a token is free in ``tat - tau - now``.

Backlog. FSM lets up to ``backlog`` requests wait for a token. ``reserve(now, max_wait)`` admits a
request whose token is free within ``max_wait`` and moves ``TAT`` past it in the same
compare-and-swap: the request holds a slot ``wait`` seconds ahead and sleeps that long, and later
requests get later slots, so the waiting ones pass in order and no race follows their sleep. With
``max_wait = backlog * T`` (``Quota.backlog_wait(backlog)``) at most ``backlog`` requests wait at
any moment (nginx's ``limit_req burst=`` with delay).

Times are integer nanoseconds of CLOCK_MONOTONIC (``time.monotonic_ns()``; ``time.monotonic()`` for
an injected float ``now``), the same clock in every process of the machine. ``T`` is rounded up to
a whole nanosecond, so the long-run rate never exceeds ``requests / window`` (it falls short by
under a nanosecond per request); the burst is exact whatever the rounding, as ``tau`` is a whole
multiple of ``T``.

What a decision tells (``Decision``), exactly as GCRA defines it, with ``d = max(TAT' - now, 0)``
for the ``TAT'`` the decision leaves:

- ``remaining``: how many more requests would pass at ``now``, ``max(0, (tau + T - d) // T)``
  (``burst - 1`` after the first request to a full bucket, 0 after the last one it admits);
- ``reset``: seconds until the bucket is full again, ``d``;
- ``wait``: for a refusal, seconds until one token is free (``tat - tau - now``, > 0); for a
  reservation, how long the request waits for its slot (0: it goes now).

Headers (``refusal_headers``, ``quota_headers``): ``RateLimit-Limit`` (``requests``),
``RateLimit-Remaining``, ``RateLimit-Reset`` (draft-ietf-httpapi-ratelimit-headers up to -06,
integer seconds, rounded up) and, on a refusal, ``Retry-After`` (integer seconds, rounded up, at
least 1), then the policy's ``responseHeadersToAdd``. With ``burst`` above ``requests``,
``RateLimit-Remaining`` may exceed ``RateLimit-Limit``: it counts the bucket's tokens.

Per-client keys (an fsmfast extension, as nginx's ``limit_req_zone $binary_remote_addr``):
``KeyedQuotas`` is an open-addressing table of ``entries`` entries of two words, ``{key hash, TAT}``
(``keyed_cells(entries)`` words, 16 bytes an entry: 65,536 clients take 1 MiB). The key's bytes (a
source address, a header's value) are hashed with 64-bit BLAKE2b, the same in every process
(Python's ``hash()`` is salted per process). A key lives in one of ``PROBES`` consecutive entries
from ``hash % entries``; a key new to the table claims the first never-used entry there with a
compare-and-swap of its hash word, or, when they are all used, takes over the one whose TAT is
oldest among those already idle (``TAT <= now``: a full bucket, the same as a fresh one, so the
evicted client loses nothing). When none is idle (more clients busy at once than the table holds),
the request is admitted untracked or refused (its ``wait`` then one ``T``, a guess: no entry says
when one frees), as ``admit_when_full`` says, and ``Decision.full`` is set so the caller can count
it. Two keys with the same 64-bit hash share a quota; among a
million clients the chance that any two do is about 3e-8.

The takeover marks the TAT word (``_MOVING``) before it rewrites the hash word, and leaves a TAT
value the word never held before, so a request of the old key that read the entry before the
takeover fails its compare-and-swap and looks again: the old key's requests are never charged to
the new key's quota, nor the reverse. Two processes seeing one new key at the same instant in a
full table may each take over an entry for it; the one later in the key's probe order is never
found again and is reclaimed when idle, and that key may pass one request more than its burst
once. A worker killed
during a takeover (a few instructions) leaves its entry marked: the entry is lost to the table
(never blocking anyone) until the arena is made again.

Layout: a quota takes ``CELLS_PER_QUOTA`` words (its TAT at +0, the rest unused so that two quotas
hammered by different workers never share a cache line, given a base that is a multiple of 8: the
arena's cells start on a line); a keyed table ``keyed_cells(entries)``
words, entry ``i`` at ``+2i`` (hash) and ``+2i+1`` (TAT). Where the master places them is its
business (a later session).

Cost (development machine, 2 cores, compiled atomics, one process, the clock read inside): a token
taken at once, the per-request call of a limit not reached, is ``Cells.take_now`` (the gate,
``fsmfast.edge.gate``) or ``Quota.admit``, about 0.09 µs; the whole answer, ``Quota.reserve`` (or
``take``, the same with no backlog), about 0.6 µs admitting and 0.45 µs refusing (the rest is Python
and the ``Decision``); ``KeyedQuotas.take`` about 1.5 µs,
of which the BLAKE2b of a 16-byte key is 0.45 µs. With the pure-Python twin of the atomics
(FSMFAST_NO_EXTENSIONS=1) each word access is about 1.9 µs: ``take`` 4.3 µs, keyed 11 µs.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable
from typing import Any

import msgspec

CELLS_PER_QUOTA = 8  # one cache line; the TAT at +0
CELLS_PER_ENTRY = 2  # key hash, TAT
PROBES = 8  # entries a key may live in (one 64-byte line of four entries, or two)

_NS = 1_000_000_000
_MOVING = -(1 << 63)  # a TAT word being handed to another key
_U64 = 1 << 64
_I64 = 1 << 63


def keyed_cells(entries: int) -> int:
    """The arena words a ``KeyedQuotas`` of ``entries`` entries takes (rounded up to whole cache
    lines)."""
    if entries < 1:
        raise ValueError(f"a keyed quota table needs at least one entry (not {entries})")
    return -(-entries * CELLS_PER_ENTRY // 8) * 8


def key_hash(key: bytes | str) -> int:
    """The key's 64-bit BLAKE2b as a signed word, never 0 (0 marks a never-used entry)."""
    raw = key.encode() if isinstance(key, str) else key
    h = int.from_bytes(hashlib.blake2b(raw, digest_size=8).digest(), "little")
    if h >= _I64:
        h -= _U64
    return h or 1


class Decision(msgspec.Struct, frozen=True, gc=False):
    """One request's answer. ``wait``, ``reset`` in seconds; see the module's docstring."""

    admitted: bool
    wait: float
    remaining: int
    reset: float
    limit: int
    full: bool = False  # keyed only: no entry for the key; admitted or not by ``admit_when_full``


class _Gcra:
    """The policy's numbers, shared by ``Quota`` and ``KeyedQuotas``."""

    __slots__ = ("burst", "emission", "limit", "tolerance")

    def __init__(self, requests: int, window: float, burst: int) -> None:
        if requests < 1 or burst < 1 or window <= 0:
            raise ValueError(
                f"a rate limit needs requests >= 1, burst >= 1 and a window > 0 (not {requests}, {burst}, {window})"
            )
        self.limit = requests
        self.burst = burst
        self.emission = -(-round(window * _NS) // requests)  # T, ns, rounded up
        self.tolerance = (burst - 1) * self.emission  # tau, ns

    def backlog_wait(self, backlog: int) -> float:
        """The ``max_wait`` for ``reserve`` that lets at most ``backlog`` requests wait at once."""
        return backlog * self.emission / _NS

    def _admitted(self, tat_after: int, now: int, wait: int, full: bool = False) -> Decision:
        d = tat_after - now if tat_after > now else 0
        remaining = (self.tolerance + self.emission - d) // self.emission
        return Decision(True, wait / _NS, remaining if remaining > 0 else 0, d / _NS, self.limit, full)

    def _refused(self, tat: int, now: int) -> Decision:
        # tat = max(TAT, now) > now + tau: no token now, one in tat - tau - now; full in tat - now.
        return Decision(False, (tat - self.tolerance - now) / _NS, 0, (tat - now) / _NS, self.limit)


def _now_ns(now: float | None) -> int:
    return time.monotonic_ns() if now is None else round(now * _NS)


class Quota(_Gcra):
    """One quota shared by every worker: ``requests`` per ``window`` seconds, ``burst`` at once.
    Its state is one arena word at ``base`` (``CELLS_PER_QUOTA`` words are reserved)."""

    __slots__ = ("_cells", "_i")

    def __init__(self, cells: Any, base: int, requests: int, window: float, burst: int) -> None:
        if base < 0 or base + CELLS_PER_QUOTA > len(cells):
            raise ValueError(f"quota cells {base}..{base + CELLS_PER_QUOTA - 1} are outside the arena's {len(cells)}")
        super().__init__(requests, window, burst)
        self._cells = cells
        self._i = base

    @property
    def place(self) -> int:
        """The arena word of this quota's TAT (``fsmfast.edge.gate`` reads it)."""
        return self._i

    def admit(self) -> bool:
        """Take a token now if one is free at once: the per-request call of a limit that is not
        reached (``Cells.take_now``: a load and a compare-and-swap, the clock read with them), with no
        Decision made. False changes nothing: the caller then asks ``reserve`` or ``take`` for the
        whole answer."""
        taken: bool = self._cells.take_now(self._i, self.tolerance, self.emission)
        return taken

    def take(self, now: float | None = None) -> Decision:
        """Admit a request at ``now`` (``time.monotonic()`` seconds; the clock when None), or refuse
        it and say in ``wait`` when a token is free."""
        return self.reserve(now, 0.0)

    def reserve(self, now: float | None, max_wait: float) -> Decision:
        """Admit a request at once, or in ``wait`` seconds when its token is free within
        ``max_wait``: the slot is its own from this call on (the caller sleeps ``wait`` and sends
        it, with no second check). Refused, changing nothing, when the wait would be longer."""
        t = _now_ns(now)
        limit = self.tolerance + round(max_wait * _NS)
        cells = self._cells
        i = self._i
        while True:
            old = cells.load(i)
            tat = old if old > t else t
            if tat - t > limit:
                return self._refused(tat, t)
            new = tat + self.emission
            if cells.cas(i, old, new):
                wait = tat - self.tolerance - t
                return self._admitted(new, t, wait if wait > 0 else 0)

    def peek(self, now: float | None = None) -> Decision:
        """What ``take`` would answer, without taking (for diagnostics and tests)."""
        t = _now_ns(now)
        old = self._cells.load(self._i)
        tat = old if old > t else t
        if tat - t > self.tolerance:
            return self._refused(tat, t)
        return self._admitted(tat, t, 0)


class KeyedQuotas(_Gcra):
    """A quota per client key (source address, header value), each ``requests`` per ``window``
    with ``burst``, in a table of ``entries`` entries at ``base`` (``keyed_cells(entries)`` words).
    See the module's docstring for eviction, collisions and the memory bound."""

    __slots__ = ("_base", "_cells", "_probes", "admit_when_full", "entries")

    def __init__(
        self,
        cells: Any,
        base: int,
        entries: int,
        requests: int,
        window: float,
        burst: int,
        admit_when_full: bool = True,
    ) -> None:
        size = keyed_cells(entries)
        if base < 0 or base + size > len(cells):
            raise ValueError(f"keyed quota cells {base}..{base + size - 1} are outside the arena's {len(cells)}")
        super().__init__(requests, window, burst)
        self._cells = cells
        self._base = base
        self.entries = entries
        self._probes = min(PROBES, entries)
        self.admit_when_full = admit_when_full

    def take(self, key: bytes | str, now: float | None = None) -> Decision:
        """``Quota.take`` for ``key``'s own quota."""
        return self.reserve(key, now, 0.0)

    def reserve(self, key: bytes | str, now: float | None, max_wait: float) -> Decision:
        """``Quota.reserve`` for ``key``'s own quota."""
        h = key_hash(key)
        t = _now_ns(now)
        limit = self.tolerance + round(max_wait * _NS)
        while True:
            i = self._entry(h, t)
            if i < 0:
                if self.admit_when_full:
                    return Decision(True, 0.0, 0, 0.0, self.limit, True)
                return Decision(False, self.emission / _NS, 0, 0.0, self.limit, True)
            decision = self._charge(i, h, t, limit)
            if decision is not None:
                return decision
            # The entry was taken over meanwhile: look again.

    def _charge(self, i: int, h: int, t: int, limit: int) -> Decision | None:
        cells = self._cells
        while True:
            old = cells.load(i + 1)
            # The hash is read after the TAT: a takeover marks the TAT before it changes the hash,
            # so an unmarked TAT read before a hash still ours is ours.
            if old == _MOVING or cells.load(i) != h:
                return None
            tat = old if old > t else t
            if tat - t > limit:
                return self._refused(tat, t)
            new = tat + self.emission
            if cells.cas(i + 1, old, new):
                wait = tat - self.tolerance - t
                return self._admitted(new, t, wait if wait > 0 else 0)

    def _entry(self, h: int, t: int) -> int:
        """The word index of ``h``'s entry, claiming or taking one over if needed; -1 when the
        entries ``h`` may use are all busy."""
        cells = self._cells
        n = self.entries
        start = h % n
        while True:
            oldest = -1
            oldest_tat = 0
            for k in range(self._probes):
                i = self._base + CELLS_PER_ENTRY * ((start + k) % n)
                owner = cells.load(i)
                if owner == h:
                    if cells.load(i + 1) != _MOVING:
                        return i
                    # Being taken over (or left so by a worker killed meanwhile): not ours any more.
                    continue
                if owner == 0:
                    # Entries are claimed in probe order and never emptied, so h is in none further.
                    if cells.cas(i, 0, h):
                        return i
                    if cells.load(i) == h:
                        return i  # another process claimed it for the same key
                    continue
                tat = cells.load(i + 1)
                if tat != _MOVING and tat <= t and (oldest < 0 or tat < oldest_tat):
                    oldest, oldest_tat = i, tat
            if oldest < 0:
                return -1
            if cells.cas(oldest + 1, oldest_tat, _MOVING):
                cells.store(oldest, h)
                # A value this word never held (TATs only grow, and this is below every earlier
                # one), so a compare-and-swap prepared before the takeover fails.
                cells.store(oldest + 1, min(-1 - t, oldest_tat - 1) if oldest_tat < 0 else -1 - t)
                return oldest
            # Another process changed that entry first: look again.

    def keys_held(self) -> int:
        """Entries ever claimed (for diagnostics: a table always near ``entries`` is too small)."""
        return sum(1 for k in range(self.entries) if self._cells.load(self._base + CELLS_PER_ENTRY * k))


def quota_headers(decision: Decision) -> list[tuple[str, str]]:
    """``RateLimit-Limit``, ``-Remaining`` and ``-Reset`` for ``decision`` (integer seconds, rounded up)."""
    return [
        ("RateLimit-Limit", str(decision.limit)),
        ("RateLimit-Remaining", str(decision.remaining)),
        ("RateLimit-Reset", str(_ceil_seconds(decision.reset))),
    ]


def refusal_headers(decision: Decision, extra: Iterable[tuple[str, str]] = ()) -> list[tuple[str, str]]:
    """The headers of the refusal (``responseStatusCode``, 429 by default): the ``RateLimit-*``
    trio, ``Retry-After`` (integer seconds, rounded up, at least 1), then the policy's
    ``responseHeadersToAdd`` (``extra``, as (name, value) pairs); a name the policy sets replaces
    the computed header of that name rather than repeating it."""
    added = list(extra)
    names = {name.lower() for name, _ in added}
    computed = [*quota_headers(decision), ("Retry-After", str(max(1, _ceil_seconds(decision.wait))))]
    return [header for header in computed if header[0].lower() not in names] + added


def _ceil_seconds(seconds: float) -> int:
    # From nanoseconds, so a wait of exactly 3 s is "3", not "4" from a float above it.
    ns = round(seconds * _NS)
    return -(-ns // _NS)
