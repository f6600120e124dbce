"""Fault injection (FSM's FaultInjectionPolicy, issue 20): what to do to one request, a delay and/or an
abort, decided by a ``FaultPlan`` built from plain values (seconds, percentages, a status and a message);
the compiled snapshot converts the policy's numbers with ``seconds`` and hands them over.

Where fsmfast deliberately differs from FSM's Pipy script (``http/fault-injection.js``):

- **Percent.** FSM fires when ``floor(random*100) <= percent`` (after a ``percent > 0`` gate), which is
  ``percent + 1`` chances in 100: 1 % fires 2 % of the time, 50 % fires 51 %, 99 % always. Here a fault
  fires with probability ``percent / 100``, to the 53 bits of ``random.random()``; 0 never draws and
  never fires, 100 never draws and always fires.
- **Units.** FSM's script knows ``ms``, ``s`` and ``m`` and reads anything else (``h``, ``d``) as
  milliseconds. Here ``h`` is 3600 s and ``d`` 86,400 s, as the CRD says.
- **Range.** FSM draws a whole number of units from ``min`` to ``max``; here the delay is uniform over
  the real interval from ``min`` to ``max`` seconds (the same mean, no steps of one unit).

As in FSM: the delay and the abort are drawn apart, each with its own percent; when both fire, the
request waits out the delay and then gets the abort (FSM's script waits on the message start and then
replaces the message); a ``range`` wins over ``fixed``; a delay of 0 or a percent of 0 is no fault.
"""

from __future__ import annotations

import random
from collections.abc import Callable

import msgspec

# The CRD's enum (``ms|s|m|h|d``); milliseconds are divided, not multiplied by 0.001, so 300 ms is the
# float nearest 0.3 rather than 0.30000000000000004.
_PER_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}
UNITS = ("ms", *_PER_UNIT)
MAX_STATUS = 10000  # the CRD's bound (an abort on a gRPC route carries a grpc-status, not an HTTP status)


def seconds(amount: int | float, unit: str | None = None, fallback: str | None = None) -> float:
    """``amount`` of a delay in seconds: in the delay's ``unit``, else the policy's ``unit``
    (``fallback``), else milliseconds, the CRD's default."""
    unit = unit or fallback or "ms"
    if amount < 0:
        raise ValueError(f"a delay of {amount}{unit} is negative")
    if unit == "ms":
        return amount / 1000
    per = _PER_UNIT.get(unit)
    if per is None:
        raise ValueError(f"unknown delay unit {unit!r} (one of {', '.join(UNITS)})")
    return float(amount * per)


class Fault(msgspec.Struct, frozen=True, gc=False):
    """What one request gets: wait ``delay`` seconds (0: none), then, when ``status`` is not 0, answer
    ``status`` with ``body`` instead of forwarding the request."""

    delay: float
    status: int = 0
    body: bytes = b""

    @property
    def aborts(self) -> bool:
        return self.status != 0


def _chance(percent: float, what: str) -> float:
    if not 0 <= percent <= 100:
        raise ValueError(f"{what} percent {percent} is not within 0..100")
    return percent / 100


class FaultPlan:
    """A route's (or hostname's) fault injection, asked once per request with ``decide``.

    ``delay_fixed`` seconds, or ``delay_range`` (min, max) seconds, with ``delay_percent``; ``status``
    and ``message`` with ``abort_percent``. ``armed`` is False when nothing can ever fire (every
    percent 0, no delay, no status): the route then keeps None instead of a plan, so its requests pay
    nothing; a request under a plan pays one or two ``random.random()`` calls."""

    __slots__ = ("_abort", "_abort_p", "_delay", "_delay_p", "_low", "_span", "armed", "policy")

    def __init__(
        self,
        *,
        delay_percent: float = 0,
        delay_fixed: float | None = None,
        delay_range: tuple[float, float] | None = None,
        abort_percent: float = 0,
        status: int = 0,
        message: str = "",
        policy: str = "",
    ) -> None:
        self.policy = policy
        delay_p = _chance(delay_percent, "delay")
        if delay_range is not None:
            low, high = delay_range
            if not 0 <= low <= high:
                raise ValueError(f"delay range {low}-{high} s is not 0 <= min <= max")
        else:
            low = high = delay_fixed or 0.0
            if low < 0:
                raise ValueError(f"delay {low} s is negative")
        self._low = float(low)
        self._span = float(high - low)
        # A delay that is always 0 is no delay: its percent is not drawn.
        self._delay_p = delay_p if high > 0 else 0.0
        self._delay = Fault(self._low) if self._span == 0 else None
        abort_p = _chance(abort_percent, "abort")
        if abort_p and not 1 <= status <= MAX_STATUS:
            raise ValueError(f"abort status {status} is not within 1..{MAX_STATUS}")
        self._abort_p = abort_p if status else 0.0
        self._abort = Fault(0.0, status, message.encode())
        self.armed = bool(self._delay_p or self._abort_p)

    def decide(self, rand: Callable[[], float] = random.random) -> Fault | None:
        """What to do to one request, None for nothing. ``rand`` returns a float in [0, 1): it is
        called for the delay's percent, then for a range delay's length, then for the abort's
        percent, each only when needed (a percent of 0 or 100 draws nothing)."""
        delay = None
        p = self._delay_p
        if p and (p >= 1.0 or rand() < p):
            delay = self._delay if self._delay is not None else Fault(self._low + self._span * rand())
        p = self._abort_p
        if p and (p >= 1.0 or rand() < p):
            abort = self._abort
            if delay is None:
                return abort
            return Fault(delay.delay, abort.status, abort.body)
        return delay
