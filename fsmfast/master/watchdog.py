"""Is a worker hung? The master's decision, as a value, from what it can see of the worker.

A worker's event loop writes ``monotonic()`` into its shared stats region on every tick
(``fsmfast.metrics.shm``): a heartbeat from the loop itself, not from a helper thread, so a
loop stuck in a callback stops beating even though the process is alive (uvicorn's pipe ping,
answered by a daemon thread, misses exactly that). CLOCK_MONOTONIC is the same clock in every
process of the machine, so the master compares the beat with its own clock.

The clock starts once the worker said it is ready; until then it gets BOOT_TIMEOUT from its fork
(loading a large snapshot may take a while). A silent worker gets SIGABRT first, which the
worker's ``faulthandler`` turns into a traceback of every thread on its stderr (where it hung);
if it is still there after the grace (a stopped process does not run handlers), SIGKILL.
"""

from __future__ import annotations

import enum

BOOT_TIMEOUT = 60.0
KILL_GRACE = 5.0


class Verdict(enum.Enum):
    ALIVE = "alive"
    ABORT = "abort"  # SIGABRT: dump where it hangs, and end
    KILL = "kill"  # SIGKILL: it did not end after SIGABRT


def check(
    now: float,
    born: float,
    ready_at: float,
    heartbeat: float,
    aborted_at: float,
    timeout: float,
) -> Verdict:
    """What to do with one worker now.

    ``ready_at``/``aborted_at`` are 0 until it was ready/aborted; ``heartbeat`` 0 until it beat.
    """
    if aborted_at:
        return Verdict.KILL if now - aborted_at >= min(KILL_GRACE, timeout) else Verdict.ALIVE
    if not ready_at:
        return Verdict.ABORT if now - born > max(BOOT_TIMEOUT, timeout) else Verdict.ALIVE
    last = max(heartbeat, ready_at)
    return Verdict.ABORT if now - last > timeout else Verdict.ALIVE


def silence(now: float, ready_at: float, heartbeat: float) -> float:
    """Seconds since the worker last showed life (for the log line)."""
    return now - max(heartbeat, ready_at)
