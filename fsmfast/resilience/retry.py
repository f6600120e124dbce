"""Retries (FSM's RetryPolicy, Gateway API's HTTPRoute ``retry``): which answers are retried, how many
times, how long to wait, and the machine-wide retry budget that keeps a failing backend from getting a
retry storm (issue 19). The exchange (``fsmfast.proxy.exchange``) decides whether a request can be
replayed at all; this module holds the policy's numbers.

The budget is Envoy's retry budget with Gateway API's defaults (GEP-3388 ``retryConstraint``:
``budget {percent: 20, interval: 10s}``, ``minRetryRate {count: 10, interval: 1s}``), counted for all
workers together: a retry may go while the retries of the last 10 s are fewer than 20 % of the
requests that could be retried (the backend's requests under a retry policy) in those 10 s, and,
whatever the share, while fewer than 10 retries went in the current second, so a backend with
little traffic can still retry.

Budget layout (``BUDGET_CELLS`` int64 words from the backend's base, ``snapshot.SharedCells.budget``):
ten 1 s buckets of requests, then ten of retries, each word tagged with its epoch (the second of
CLOCK_MONOTONIC) as ``fsmfast.resilience.window`` describes::

    +0..+9    requests   per second, ring by epoch % 10
    +10..+19  retries    per second, ring by epoch % 10

A retry is counted by the same compare-and-swap that checks it against the budget (on the current
second's retries word), so processes deciding at the same instant cannot both take the last one.
"""

from __future__ import annotations

import random
from typing import Any

from fsmfast.resilience import window
from fsmfast.snapshot import Retry

# Envoy's num_retries when a route's retry leaves ``attempts`` unset; its base back-off interval.
DEFAULT_ATTEMPTS = 1
DEFAULT_BACKOFF = 0.025
# The back-off stops growing at this many times the base.
BACKOFF_CAP = 10

BUDGET_SECONDS = 10
BUDGET_PERCENT = 20
MIN_RETRIES_PER_SECOND = 10
_REQUESTS = 0
_RETRIES = BUDGET_SECONDS
BUDGET_CELLS = 2 * BUDGET_SECONDS


class Budget:
    """One backend's retry budget, shared by every worker."""

    __slots__ = ("_base", "_cells")

    def __init__(self, cells: Any, base: int) -> None:
        if base < 0 or base + BUDGET_CELLS > len(cells):
            raise ValueError(f"budget cells {base}..{base + BUDGET_CELLS - 1} are outside the arena's {len(cells)}")
        self._cells = cells
        self._base = base

    def request(self, now: float, n: int = 1) -> None:
        """Count ``n`` requests that a retry policy covers (once each, however many attempts they take).
        The workers count them on their backends and hand them over here each tick (a second's
        bucket gets them up to a tick late), not a compare-and-swap per request."""
        epoch = int(now)
        window.bump(self._cells, self._base + _REQUESTS + epoch % BUDGET_SECONDS, epoch & window.TAG_MASK, n)

    def allow(self, now: float) -> bool:
        """Whether one more retry may go now; counted when it may."""
        cells = self._cells
        epoch = int(now)
        tag = epoch & window.TAG_MASK
        i = self._base + _RETRIES + epoch % BUDGET_SECONDS
        while True:
            word = cells.load(i)
            this_second = window.count(word, tag)
            if this_second >= MIN_RETRIES_PER_SECOND:
                requests, retries = self.counts(now)
                # Another process counting a retry meanwhile makes the compare-and-swap below fail,
                # and the check is made again with its retry counted.
                if retries * 100 >= requests * BUDGET_PERCENT:
                    return False
            new = word + 1 if this_second else tag << window.COUNT_BITS | 1
            if this_second == window.COUNT_MAX or cells.cas(i, word, new):
                return True

    def counts(self, now: float) -> tuple[int, int]:
        """(requests, retries) in the budget's window at ``now``."""
        epoch = int(now)
        first = self._base
        return (
            window.total(self._cells, first + _REQUESTS, BUDGET_SECONDS, epoch),
            window.total(self._cells, first + _RETRIES, BUDGET_SECONDS, epoch),
        )


class RetryPlan:
    """A retry policy as the exchange asks it: ``attempts`` (retries, not counting the first try),
    ``retriable(status)``, ``delay(n)``; ``budget`` None when the backend has no budget words."""

    __slots__ = ("_base", "_cap", "_codes", "_five", "attempts", "budget", "floor", "name", "policy")

    def __init__(self, policy: Retry, budget: Budget | None) -> None:
        self.policy = policy
        self.name = policy.policy
        self.budget = budget
        self.attempts = policy.attempts if policy.attempts is not None else DEFAULT_ATTEMPTS
        self._five = "5xx" in policy.on
        self._codes = frozenset(int(code) for code in policy.on if code != "5xx")
        # The lowest status retried: the exchange compares a response's status with it before it asks
        # ``retriable``, so an answer below it (a 200) costs a comparison.
        self.floor = min([*self._codes, *([500] if self._five else [])], default=1000)
        self._base = policy.backoff if policy.backoff is not None else DEFAULT_BACKOFF
        self._cap = BACKOFF_CAP * self._base

    def retriable(self, status: int) -> bool:
        """Whether an attempt answered ``status`` may be retried; 0 (no answer at all: a connect
        failure or a reset) always may, as Gateway API says connection errors should be."""
        return status == 0 or (self._five and 500 <= status <= 599) or status in self._codes

    def delay(self, n: int) -> float:
        """Seconds to wait before retry ``n`` (1 for the first): exponential from the base, capped at
        ten times it, plus up to half again of jitter; never less than the base, which Gateway API
        makes the minimum."""
        doubling = 1 << min(max(n - 1, 0), 8)  # past the cap soon: no need for huge numbers
        return min(self._cap, self._base * doubling) * (1.0 + 0.5 * random.random())


class Attempts:
    """One request's retries, held by its exchange once it needs them: the body kept for a replay
    (``body``, ``size``; None once it outgrew the bound), the retries made (``tries``), the pools
    tried and why each attempt failed (the access log's ``retries``), the backoff's timer."""

    __slots__ = ("body", "size", "timer", "tried", "tries", "why")

    def __init__(self, body: list[bytes] | None, size: int) -> None:
        self.body = body
        self.size = size
        self.tries = 0
        self.tried: list[Any] = []
        self.why: list[str] = []
        self.timer: Any = None
