"""Per-worker connection limit (``--max-connections``): make room by closing idle connections.

nginx's "reusable connections", kept as values in one plain object. Connections waiting for a
request are the ones it is cheap to drop: a keep-alive connection between requests (a client
must expect the server to close one at any time, RFC 9112 §9.6, and HTTP clients reopen it),
and an accepted connection that has not sent a byte yet. At the limit the worker closes the
ones that have waited longest, a batch at a time, and goes on accepting, so connections held
open and idle, or open and silent, cannot lock new clients out. A connection with a request in
progress (a queued exchange, or a head being read) is never closed this way.

Silent connections are reclaimable as nginx's are (a connection waiting for its first request is
reusable there too): otherwise opening connections and sending nothing holds the limit for the
whole header timeout. Oldest first keeps the cost off real clients: one sends its request within
a round trip of connecting, so it is busy long before it could be the oldest idle one; and the
connection whose accept made the count is not in the set yet when room is made (downstream.py).

Above 75 % of the limit (``high``) the keep-alive and header timeouts drop to a few seconds, so
idle and silent connections go by themselves before the limit is reached; they come back once
the count is under ``calm``, and the band between the two keeps the state (and its log lines)
from flapping.

Only when the connections at the limit are all busy is there nothing to close: then the worker
stops accepting, which closes its server on its own duplicate of the slot's listening socket; the
master keeps that socket open (``fsmfast.master.sockets``), so the kernel goes on queueing new
connections in its backlog, where they cost this process nothing. The tick closes whatever turned
idle meanwhile, and accepting resumes at 90 % of the limit. The limit is soft either way: libuv
accepts everything pending in one go and the closed connections leave on a later loop
iteration, so a burst overshoots it by at most what one iteration accepted (the listen backlog).

Finding the oldest idle connections is a scan of the worker's connections, made only when room
is needed: nothing is kept in order per request.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

log = logging.getLogger("fsmfast.worker")

# The share of the limit above which the timeouts are cut.
PRESSURE = 0.75
# Keep-alive idle and header timeouts under pressure (never longer than the configured ones).
PRESSED_KEEPALIVE = 5.0
PRESSED_HEADER = 5.0
# Most connections closed per scan (nginx drains up to 32 per accept).
BATCH = 32


def _nothing() -> None:
    pass


def _none(n: int) -> int:
    return 0


class Admission:
    __slots__ = (
        "batch",
        "calm",
        "header_timeout",
        "high",
        "index",
        "keepalive_timeout",
        "limit",
        "low",
        "normal",
        "pause",
        "paused",
        "pressed",
        "reclaim",
        "reclaimed",
        "releasing",
        "resume",
    )

    def __init__(
        self, limit: int, keepalive_timeout: float = 75.0, header_timeout: float = 60.0, index: int = 0
    ) -> None:
        self.limit = limit
        self.low = limit - max(1, limit // 10)  # resume accepting at or below this many connections
        self.high = max(1, int(limit * PRESSURE))  # pressure from this many on
        self.calm = self.high - max(1, limit // 10)  # and until the count is back at or below this
        self.batch = max(1, min(BATCH, limit // 16))
        self.normal = (keepalive_timeout, header_timeout)
        # What the worker's tick enforces now.
        self.keepalive_timeout = keepalive_timeout
        self.header_timeout = header_timeout
        self.index = index
        self.pressed = False
        self.paused = False
        # Connections closed to make room whose connection_lost has not come yet. Any close counts
        # one off, so this never exceeds the true number: the count it corrects errs high, never low.
        self.releasing = 0
        self.reclaimed = 0  # closed to make room since the pressure began (for the log)
        # Set by the worker: close / re-create its servers; close up to n of the connections that
        # have waited longest for a request and say how many (fsmfast.worker.context).
        self.pause: Callable[[], None] = _nothing
        self.resume: Callable[[], None] = _nothing
        self.reclaim: Callable[[int], int] = _none

    def opened(self, count: int) -> None:
        """A connection was accepted; ``count`` is how many are open with it."""
        if count >= self.high:
            self._crowded(count)

    def closed(self, count: int) -> None:
        """A connection ended; ``count`` is how many are open now."""
        if self.releasing:
            self.releasing -= 1
        if self.paused and count <= self.low:
            self.paused = False
            self.resume()

    def tick(self, count: int) -> None:
        """The worker's periodic look; ``count`` is how many connections are open."""
        if count >= self.high:
            if not self.pressed:
                self._press(count)
            if self.paused and count - self.releasing > self.low:
                # Stopped with all busy: whatever has finished its request since makes room now.
                self._reclaim(count, count - self.releasing - self.low)
        elif self.pressed and count <= self.calm:
            self._relax(count)
        if self.paused and count <= self.low:
            self.paused = False
            self.resume()

    def _crowded(self, count: int) -> None:
        if not self.pressed:
            self._press(count)
        if self.paused or count - self.releasing < self.limit:
            return
        if not self._reclaim(count, self.batch):
            self.paused = True
            self.pause()

    def _reclaim(self, count: int, n: int) -> int:
        closed = self.reclaim(n)
        if closed:
            if not self.reclaimed:
                log.warning(
                    "worker %d: %d connections, at the limit of %d: closing the idle ones that have waited"
                    " longest to admit new clients",
                    self.index,
                    count,
                    self.limit,
                )
            self.reclaimed += closed
            self.releasing += closed
        return closed

    def _press(self, count: int) -> None:
        self.pressed = True
        keepalive, header = self.normal
        self.keepalive_timeout = min(keepalive, PRESSED_KEEPALIVE)
        self.header_timeout = min(header, PRESSED_HEADER)
        log.warning(
            "worker %d: %d connections, over %d%% of the limit of %d: keep-alive and header timeouts"
            " cut to %gs and %gs",
            self.index,
            count,
            round(PRESSURE * 100),
            self.limit,
            self.keepalive_timeout,
            self.header_timeout,
        )

    def _relax(self, count: int) -> None:
        self.pressed = False
        self.keepalive_timeout, self.header_timeout = self.normal
        log.info(
            "worker %d: %d connections: keep-alive and header timeouts back to %gs and %gs;"
            " %d idle connections were closed to admit new clients",
            self.index,
            count,
            self.keepalive_timeout,
            self.header_timeout,
            self.reclaimed,
        )
        self.reclaimed = 0
