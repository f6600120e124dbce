"""FSM's CircuitBreakingPolicy for one backend, counted over the whole machine (issue 19).

Every worker counts the requests to the backend, its errors and its slow responses into the same
arena words, and reads the same open state, so the thresholds mean what they say with any number of
workers: with ``minRequestAmount`` 5 and ``errorAmountThreshold`` 5, the fifth failed request
(whichever workers sent the five) opens the breaker and the next request is answered degraded. (FSM
counts per Pipy thread: with N threads, up to N times the threshold.)

The window. ``statTimeWindow`` is cut into ``BUCKETS`` buckets of a tenth of it (a 10 s window: ten
buckets of 1 s); the window is the current bucket and the nine before it, so it slides by a tenth
and spans between 0.9 and 1 times ``statTimeWindow``. A bucket counts in one word per kind, its epoch
packed in the word (``fsmfast.resilience.window``): the first writer in a new epoch restarts it, so
nothing sweeps.

Opening. After counting a finished request, a closed breaker checks the window: once it holds at
least ``minRequestAmount`` requests, it opens when errors (5xx, or no response at all) reach
``errorAmountThreshold`` or their share reaches ``errorRatioThreshold``, or when slow responses
(taking ``slowTimeThreshold`` or longer) reach ``slowAmountThreshold`` or ``slowRatioThreshold``;
only the thresholds that are set (a ratio of 0 counts as unset, as in FSM). Opening is one
compare-and-swap of the state word, so one caller on the machine opens it and logs it.

While open (``degradedTimeWindow`` seconds) the breaker answers every request itself with
``degradedStatusCode`` and ``degradedResponseContent``; what requests sent before it opened report
when they end is not counted. Then traffic resumes with an empty window, as FSM resets its counts
after the degraded period: opening advances a generation that is part of every bucket's tag, so the
counts that opened it stop counting at once, in every worker, with nothing to clear. The first
request to finish after the period logs the closing (one caller again: the state word records it).

Layout (``BREAKER_CELLS`` int64 words from the backend's base; the master gives each backend with a
CircuitBreakingPolicy its own block, ``snapshot.SharedCells.breaker``)::

    +0       state    open_until_ms << 11 | closed_seen << 10 | generation (10 bits)
                      0 = never opened; open while now_ms < open_until_ms; closed_seen: the end of
                      the last open period was logged
    +1       opened   times it opened (added to by the one caller that opened it)
    +2       closed   times an open period was seen over (by the one caller told "closed")
    +3..+7   unused   (the words every request writes are on other cache lines)
    +8       total    BUCKETS words: requests finished, per bucket
    +8+B     errors   BUCKETS words: of which errors (only written when an error threshold is set)
    +8+2B    slow     BUCKETS words: of which slow (only written when a slow threshold is set)

with a bucket word's tag ``generation << 25 | epoch mod 2**25`` (epoch = now_ms // bucket width).
Times are CLOCK_MONOTONIC (``time.monotonic()``), the same clock in every process of the machine.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from fsmfast.pipeline.decision import LocalReply
from fsmfast.resilience import window
from fsmfast.snapshot import CircuitBreaker

log = logging.getLogger("fsmfast.proxy")

BUCKETS = 10
_OPENED = 1
_CLOSED = 2
_TOTAL = 8
_ERRORS = _TOTAL + BUCKETS
_SLOW = _ERRORS + BUCKETS
BREAKER_CELLS = 40  # 38 used, rounded up to whole cache lines

_GEN_BITS = 10
_GEN_MASK = (1 << _GEN_BITS) - 1
_SEEN = 1 << _GEN_BITS  # the end of the last open period was reported
_UNTIL = _GEN_BITS + 1  # open_until_ms starts at this bit
_EPOCH_BITS = window.TAG_BITS - _GEN_BITS
_EPOCH_MASK = (1 << _EPOCH_BITS) - 1

# FSM's own fallback (circuit-breaker.js) when a slow threshold is set without slowTimeThreshold.
DEFAULT_SLOW_TIME = 5.0
DEFAULT_TEXT = "service temporarily unavailable (circuit breaker open)"

OPEN = "open"
CLOSED = "closed"


class Breaker:
    """A backend policy hook (``fsmfast.pipeline.hooks``) answering while the breaker is open, and
    ``record()`` for each request to the backend that ends."""

    __slots__ = (
        "_base",
        "_cells",
        "_degraded_ms",
        "_error_amount",
        "_error_ratio",
        "_errors",
        "_min",
        "_reply",
        "_slow",
        "_slow_amount",
        "_slow_ratio",
        "_state",
        "_width",
        "backend",
        "policy",
    )

    def __init__(self, cells: Any, base: int, policy: CircuitBreaker, backend: str) -> None:
        if base < 0 or base + BREAKER_CELLS > len(cells):
            raise ValueError(f"breaker cells {base}..{base + BREAKER_CELLS - 1} are outside the arena's {len(cells)}")
        self._cells = cells
        self._base = base
        self._state = base
        self.policy = policy
        self.backend = backend
        self._min = policy.min_request_amount
        self._width = max(1, -(-policy.stat_time_window * 1000 // BUCKETS))  # ms, rounded up
        self._degraded_ms = policy.degraded_time_window * 1000
        self._error_amount = policy.error_amount_threshold or 0
        self._error_ratio = policy.error_ratio_threshold or 0.0
        self._errors = bool(self._error_amount or self._error_ratio)
        self._slow_amount = policy.slow_amount_threshold or 0
        self._slow_ratio = policy.slow_ratio_threshold or 0.0
        slow_time = policy.slow_time_threshold
        if slow_time is None and (self._slow_amount or self._slow_ratio):
            slow_time = DEFAULT_SLOW_TIME
        self._slow = slow_time if self._slow_amount or self._slow_ratio else None
        content = policy.degraded_response_content
        # The configured content is the answer even with detailed errors on; the default text names
        # no Service, its detailed form does.
        self._reply = LocalReply(
            policy.degraded_status_code,
            content if content is not None else DEFAULT_TEXT,
            "circuit_open",
            None if content is not None else f"circuit breaker of backend {backend} open ({policy.policy})",
        )

    # -- the request path -----------------------------------------------------------------

    def __call__(self, request: Any) -> LocalReply | None:
        """The degraded answer while open, else None: one load while the breaker never opened."""
        word = self._cells.load(self._state)
        if word and word >> _UNTIL > int(time.monotonic() * 1000):
            return self._reply
        return None

    def is_open(self, now: float) -> bool:
        word: int = self._cells.load(self._state)
        return word >> _UNTIL > int(now * 1000)

    def record(self, status: int, seconds: float, now: float) -> str | None:
        """One request to this backend ended at ``now`` (``time.monotonic()``) after ``seconds``:
        ``status`` is the upstream's status, 0 when none came (connect failure, reset, timeout).

        Returns ``"open"`` to the one caller on the machine whose request opened the breaker,
        ``"closed"`` to the one that first saw an open period over, else None.
        """
        cells = self._cells
        now_ms = int(now * 1000)
        seen = None
        while True:
            state = cells.load(self._state)
            until = state >> _UNTIL
            if now_ms < until:
                return None  # open: a request sent before it opened; the window restarts after
            if not until or state & _SEEN:
                break
            if cells.cas(self._state, state, state | _SEEN):
                seen = CLOSED
                cells.add(self._base + _CLOSED, 1)
                log.warning(
                    "circuit breaker of backend %s closed after %ds degraded: traffic resumes (%s)",
                    self.backend,
                    self._degraded_ms // 1000,
                    self.policy.policy,
                )
        gen = state & _GEN_MASK
        high = gen << _EPOCH_BITS
        epoch = now_ms // self._width
        slot = epoch % BUCKETS
        tag = high | epoch & _EPOCH_MASK
        base = self._base
        window.bump(cells, base + _TOTAL + slot, tag)
        error = status == 0 or status >= 500
        if error and self._errors:
            window.bump(cells, base + _ERRORS + slot, tag)
        slow = self._slow is not None and seconds >= self._slow
        if slow:
            window.bump(cells, base + _SLOW + slot, tag)
        why = self._why(epoch, high)
        if why is None:
            return seen
        opened = (now_ms + self._degraded_ms) << _UNTIL | (gen + 1) & _GEN_MASK
        if not cells.cas(self._state, state, opened):
            return seen  # another request opened it first (the only other change of a closed state)
        cells.add(base + _OPENED, 1)
        log.warning(
            "circuit breaker of backend %s opened for %ds: %s (%s)",
            self.backend,
            self._degraded_ms // 1000,
            why,
            self.policy.policy,
        )
        return OPEN

    def transitions(self) -> tuple[int, int]:
        """(times opened, times seen closed) on the machine since these words were given to the
        backend: for the master's metrics, which read them at scrape time."""
        return self._cells.load(self._base + _OPENED), self._cells.load(self._base + _CLOSED)

    # -- the window ---------------------------------------------------------------------

    def counts(self, now: float) -> tuple[int, int, int]:
        """(requests, errors, slow) in the window at ``now``, as the next ``record`` would see them
        (for tests and diagnostics)."""
        gen = self._cells.load(self._state) & _GEN_MASK
        epoch = int(now * 1000) // self._width
        high = gen << _EPOCH_BITS
        return (
            self._sum(_TOTAL, epoch, high),
            self._sum(_ERRORS, epoch, high) if self._errors else 0,
            self._sum(_SLOW, epoch, high) if self._slow is not None else 0,
        )

    def _sum(self, row: int, epoch: int, high: int) -> int:
        return window.total(self._cells, self._base + row, BUCKETS, epoch, high, _EPOCH_MASK)

    def _why(self, epoch: int, high: int) -> str | None:
        """Why the window's counts open the breaker, or None."""
        total = self._sum(_TOTAL, epoch, high)
        if total < self._min:
            return None
        span = self.policy.stat_time_window
        if self._errors:
            errors = self._sum(_ERRORS, epoch, high)
            if self._error_amount and errors >= self._error_amount:
                return f"{errors} errors of {total} requests in {span}s (errorAmountThreshold {self._error_amount})"
            if self._error_ratio and errors / total >= self._error_ratio:
                return f"{errors} errors of {total} requests in {span}s (errorRatioThreshold {self._error_ratio:g})"
        if self._slow is not None:
            slow = self._sum(_SLOW, epoch, high)
            what = f"{slow} responses of {total} in {span}s took {self._slow:g}s or longer"
            if self._slow_amount and slow >= self._slow_amount:
                return f"{what} (slowAmountThreshold {self._slow_amount})"
            if self._slow_ratio and slow / total >= self._slow_ratio:
                return f"{what} (slowRatioThreshold {self._slow_ratio:g})"
        return None
