"""What a freshly forked worker is handed by the master."""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from fsmfast.settings import Settings

if TYPE_CHECKING:
    from fsmfast.metrics.shm import StatsRegion
    from fsmfast.shared.arena import Arena


@dataclass
class WorkerBoot:
    index: int  # worker slot, 0..N-1; stable across respawns of that slot
    settings: Settings
    channel: socket.socket  # the worker's end of the control socketpair
    # port -> listening socket of this slot (SO_REUSEPORT, already listen()ing), inherited at fork
    listeners: dict[int, socket.socket] = field(default_factory=dict)
    snapshot: bytes = b""  # msgspec bytes of the current snapshot
    generation: int = 0
    # Shared with the master (fsmfast.metrics.shm): the loop's heartbeat and the published counters.
    region: StatsRegion | None = None
    # Machine-wide state shared by every worker (fsmfast.shared), when the configuration needs it.
    arena: Arena | None = None
