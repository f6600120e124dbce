"""Per-worker connection limit: past it the worker stops accepting, below 90 % it resumes.

Stopping means closing the worker's server on its own duplicate of the slot's listening
socket: the master keeps that socket open (``fsmfast.master.sockets``), so the kernel goes on
queueing new connections in its backlog, where they wait without costing this process any
memory, instead of being accepted into a worker that is already full. The limit is soft:
libuv accepts everything pending in one go, so a burst can overshoot it by what was queued.
"""

from __future__ import annotations

from collections.abc import Callable


def _nothing() -> None:
    pass


class Admission:
    __slots__ = ("limit", "low", "pause", "paused", "resume")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.low = limit - max(1, limit // 10)  # resume at or below this many connections
        self.paused = False
        # Set by the worker: close / re-create its servers.
        self.pause: Callable[[], None] = _nothing
        self.resume: Callable[[], None] = _nothing

    def opened(self, count: int) -> None:
        """A connection was accepted; ``count`` is how many are open now."""
        if count >= self.limit and not self.paused:
            self.paused = True
            self.pause()

    def closed(self, count: int) -> None:
        """A connection ended (or the tick looked); ``count`` is how many are open now."""
        if self.paused and count <= self.low:
            self.paused = False
            self.resume()
