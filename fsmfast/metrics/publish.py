"""The worker tick's share of metrics: the heartbeat, and publishing the counts for the master.

Every tick (fsmfast.worker.context, four a second) writes the loop's heartbeat into the worker's
shared region, which the master's watchdog reads; a tick that comes late means a loop that is
stuck. The counts are encoded and published once a second when something was counted since the
last publish (and once more as the worker stops): a scrape sees a worker's requests within a
second or so, and a worker that is killed loses at most its last second's counts. Not every
tick: a publish costs ~20,000 instructions (encoding, the copy, the interpreter around them),
which every tick would add ~100 to each request of a busy worker; once a second, ~30.
"""

from __future__ import annotations

import logging

from fsmfast.metrics import blob
from fsmfast.metrics.counters import WorkerStats
from fsmfast.metrics.shm import StatsRegion

log = logging.getLogger("fsmfast.worker")

# Seconds between publishes while the counts change.
EVERY = 1.0


class Publisher:
    """``region`` None (a Context built without a master, as unit tests do): counts are kept and
    nothing is published."""

    __slots__ = ("_due", "_published", "_warned", "region", "stats")

    def __init__(self, region: StatsRegion | None, stats: WorkerStats) -> None:
        self.region = region
        self.stats = stats
        self._published = -1  # the stats' change count at the last publish
        self._due = 0.0
        self._warned = False

    def tick(self, now: float) -> None:
        region = self.region
        if region is None:
            return
        region.beat(now)
        if now >= self._due and self.stats.changes != self._published:
            self.publish(now)

    def publish(self, now: float) -> None:
        region = self.region
        if region is None:
            return
        changes = self.stats.changes
        data = blob.encode(self.stats.counts())
        if not region.publish(data) and not self._warned:
            # The master goes on showing the last blob that fit: counts stop growing, none are lost.
            log.warning(
                "metrics: %d bytes of counts do not fit the %d-byte shared region; the master keeps the last that did",
                len(data),
                region.capacity,
            )
            self._warned = True
        self._published = changes
        self._due = now + EVERY
