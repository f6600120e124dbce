"""Endpoint health, the machine's: what every worker reads before it picks an endpoint, and what
passive failures (any worker's) and active probes (one worker's, ``fsmfast.resilience.prober``)
write.

Each endpoint of a backend with a ``HealthCheck`` owns ``HEALTH_CELLS`` words of the arena's
cells, from the base the master assigned (``SharedCells.endpoints``)::

    base + 0   consecutive failures of requests (passive; reset by a request's success)
    base + 1   out-until: CLOCK_MONOTONIC milliseconds before which the endpoint is not picked;
               0 (or any past time) means in, FOREVER means out until an active probe passes
    base + 2   consecutive failed probes (active; reset by a passing probe)

The two counts are kept apart: an endpoint whose health check fails goes out even while the
requests it still gets succeed (an application saying it is draining), and a probe that passes
does not hide requests that fail.

So "may I pick it" is one load and one comparison (``now_ms >= out_until``), whatever the
state. Taking an endpoint out is a compare-and-swap on out-until, so when several workers see
the last failure at once exactly one of them reports the transition (and logs it).

Semantics (FSM's HealthCheckPolicy, with nginx's words where FSM has none):
- ``max_fails`` consecutive failures take an endpoint out; ``max_fails == 0`` never does (as
  nginx's ``max_fails=0``): nothing is counted.
- A passive failure (connection refused or failed, reset, 5xx) takes it out for
  ``fail_timeout`` seconds when the policy has one, else until a probe passes. After a
  ``fail_timeout`` the count stays where it was, so one more failure takes it out again at once
  (nginx's behaviour); one success resets it.
- An active probe's failure takes it out until a probe passes (an out-until of FOREVER, even if
  a passive ``fail_timeout`` was running: the probe knows better); one passing probe brings it
  back at once, as FSM's ``maxFails`` / one-success rule says.
"""

from __future__ import annotations

from typing import Protocol

from fsmfast.snapshot import HealthCheck

HEALTH_CELLS = 3
_FAILS = 0
_UNTIL = 1
_PROBE_FAILS = 2

# The largest int64: later than any CLOCK_MONOTONIC millisecond, so the one comparison in
# ``usable`` needs no special case for it.
FOREVER = (1 << 63) - 1


class Cells(Protocol):
    """``fsmfast.shared.arena.Arena.cells`` (compiled or the pure twin)."""

    def load(self, i: int) -> int: ...
    def store(self, i: int, value: int) -> None: ...
    def add(self, i: int, delta: int) -> int: ...
    def cas(self, i: int, expected: int, desired: int) -> bool: ...


class EndpointHealth:
    """The health words of one backend's endpoints; ``bases[i]`` is endpoint i's first word."""

    __slots__ = ("_cells", "_never_out", "bases", "max_fails", "out_ms")

    def __init__(self, cells: Cells, bases: tuple[int, ...], policy: HealthCheck) -> None:
        self._cells = cells
        self.bases = bases
        self.max_fails = policy.max_fails
        self._never_out = policy.max_fails <= 0
        # A passive failure's time out, in ms; FOREVER: until a probe passes.
        self.out_ms = policy.fail_timeout * 1000 if policy.fail_timeout else FOREVER

    def usable(self, i: int, now_ms: int) -> bool:
        """Endpoint i may be picked now: one load."""
        return self._never_out or now_ms >= self._cells.load(self.bases[i] + _UNTIL)

    def state(self, i: int, now_ms: int) -> bool:
        """For the master's gauge: ``usable``'s answer."""
        return self.usable(i, now_ms)

    def failures(self, i: int) -> int:
        """Consecutive failures of requests counted for endpoint i (for logs)."""
        return self._cells.load(self.bases[i] + _FAILS)

    def probe_failures(self, i: int) -> int:
        """Consecutive failed probes of endpoint i (for logs)."""
        return self._cells.load(self.bases[i] + _PROBE_FAILS)

    def out_until(self, i: int) -> int:
        """Endpoint i's out-until in CLOCK_MONOTONIC ms (0 or past: in; FOREVER: until a probe passes)."""
        return self._cells.load(self.bases[i] + _UNTIL)

    def failed(self, i: int, now_ms: int) -> bool:
        """A worker saw endpoint i fail (refused, reset, 5xx). True only for the one call, on the
        whole machine, that took it out."""
        if self._never_out:
            return False
        cells = self._cells
        until_at = self.bases[i] + _UNTIL
        until = cells.load(until_at)
        if now_ms < until:
            return False  # already out: requests in flight when it went out change nothing
        if cells.add(self.bases[i] + _FAILS, 1) < self.max_fails:
            return False
        out = FOREVER if self.out_ms == FOREVER else now_ms + self.out_ms
        while not cells.cas(until_at, until, out):
            until = cells.load(until_at)
            if now_ms < until:
                return False  # another worker took it out first
        return True

    def succeeded(self, i: int) -> None:
        """A worker's request to endpoint i succeeded: reset the count (a write only when it is not 0)."""
        at = self.bases[i] + _FAILS
        if self._cells.load(at):
            self._cells.store(at, 0)

    def probed(self, i: int, ok: bool, now_ms: int) -> int:
        """An active probe's result. -1: this call took endpoint i out; +1: it brought it back; 0: no change."""
        cells = self._cells
        base = self.bases[i]
        if ok:
            if cells.load(base + _PROBE_FAILS):
                cells.store(base + _PROBE_FAILS, 0)
            if cells.load(base + _FAILS):
                cells.store(base + _FAILS, 0)  # back in service with a clean slate
            while True:
                until = cells.load(base + _UNTIL)
                if until == 0:
                    return 0
                if cells.cas(base + _UNTIL, until, 0):
                    return 1 if now_ms < until else 0
        if self._never_out:
            return 0
        if cells.add(base + _PROBE_FAILS, 1) < self.max_fails:
            return 0
        while True:
            until = cells.load(base + _UNTIL)
            if until == FOREVER:
                return 0
            if cells.cas(base + _UNTIL, until, FOREVER):
                return -1 if now_ms >= until else 0
