"""The arithmetic of a per-connection byte-rate throttle (RateLimitPolicy ``ports[].bps``, issue 20):
a token bucket of one second's worth of bytes, refilled at ``bps`` bytes a second, one per direction of
each connection on the port (FSM applies Pipy's ``throttleDataRate`` to both directions of the chain).

The bucket is kept as one number, the time its debt is paid (GCRA's "theoretical arrival time"): the
bytes that may go at ``now`` are ``bps * min(1, now - paid)``, and sending ``n`` bytes moves ``paid``
on by ``n / bps`` from no earlier than ``now - 1`` (a full bucket). A connection starts full, so its
first second's worth goes at once (at 2048 B/s, 8 KiB takes 3 s: 2 KiB at once, then 2 KiB a second);
over any span of ``T`` seconds at most ``bps * (T + 1)`` bytes, plus the last write, go.

How the data plane is to use it (the wiring is a later step), without buffering beyond one read:

- Each connection on a throttled port gets two ``ByteRate``: client to upstream and upstream to client.
- When bytes read from one side are written to the other, the writer calls ``pause_for(len(data),
  now)`` on that direction's rate. The chunk is written whole (it was already read; at most one read
  buffer), and when the answer is above 0 the *reading* side's transport is paused
  (``pause_reading()``) and resumed (``resume_reading()``) from a ``loop.call_later`` of that many
  seconds. The kernel's socket buffers then fill and TCP flow control slows the sender: back-pressure,
  not a growing buffer.
- The same reading side is also paused while the writing side's transport says ``pause_writing``
  (its own buffer is full); it resumes only when neither reason holds, so the two pauses are kept as
  two flags, not one.
- ``allowance(now)`` serves a writer that can choose how much to send (a body streamed from a
  buffer): send at most that many bytes now and ``pause_for`` them; when it is 0, ``ready_in(n, now)``
  says how long until ``n`` more may go.
"""

from __future__ import annotations

import math


class ByteRate:
    """One direction of one connection: ``bps`` bytes a second (an integer, at least 1), bursts of at
    most one second's worth. Times are CLOCK_MONOTONIC seconds (``loop.time()``)."""

    __slots__ = ("_paid", "bps")

    def __init__(self, bps: int) -> None:
        if isinstance(bps, bool) or not isinstance(bps, int) or bps < 1:
            raise ValueError(f"bps {bps!r} is not a whole number of bytes a second, at least 1")
        self.bps = bps
        self._paid = -math.inf  # long paid: a full bucket

    def allowance(self, now: float) -> int:
        """How many bytes may be written at ``now`` without waiting (0 while in debt)."""
        credit = now - self._paid
        if credit <= 0:
            return 0
        # The floor, so that the bytes allowed never exceed the credit, but for a thousandth of a byte:
        # the rounding of times in the millions of seconds must not lose a whole byte that
        # ``ready_in`` promised. At most one second's worth.
        return self.bps if credit >= 1.0 else int(credit * self.bps + 0.001)

    def ready_in(self, nbytes: int, now: float) -> float:
        """Seconds from ``now`` until ``nbytes`` (at most one second's worth counts) may be written."""
        wait = self._paid + min(nbytes, self.bps) / self.bps - now
        return wait if wait > 0 else 0.0

    def pause_for(self, nbytes: int, now: float) -> float:
        """Count ``nbytes`` written at ``now``; the seconds to wait before writing (reading) more, 0
        when the bucket still holds credit."""
        self._paid = max(self._paid, now - 1.0) + nbytes / self.bps
        wait = self._paid - now
        return wait if wait > 0 else 0.0
