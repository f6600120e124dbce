"""One JSON line per request on stdout, buffered per worker.

Lines are gathered in memory and written with one ``os.write`` per flush, at most every
100 ms, so several workers sharing stdout never interleave inside a line (each write holds
whole lines) and the hot path never makes a syscall per request.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

import orjson

FLUSH_DELAY = 0.1
FLUSH_BYTES = 64 * 1024


class AccessLog:
    def __init__(self, loop: asyncio.AbstractEventLoop, fd: int = 1, enabled: bool = True) -> None:
        self._loop = loop
        self._fd = fd
        self.enabled = enabled
        self._buf: list[bytes] = []
        self._size = 0
        self._timer: asyncio.TimerHandle | None = None

    def write(self, entry: dict[str, Any]) -> None:
        if not self.enabled:
            return
        entry["ts"] = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + "Z"
        line = orjson.dumps(entry, option=orjson.OPT_APPEND_NEWLINE)
        self._buf.append(line)
        self._size += len(line)
        if self._size >= FLUSH_BYTES:
            self.flush()
        elif self._timer is None:
            self._timer = self._loop.call_later(FLUSH_DELAY, self.flush)

    def flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._buf:
            return
        data = b"".join(self._buf)
        self._buf.clear()
        self._size = 0
        try:
            view = memoryview(data)
            while view:
                n = os.write(self._fd, view)
                view = view[n:]
        except BlockingIOError:
            pass  # stdout is a full non-blocking pipe: drop rather than stall the proxy
        except OSError:
            self.enabled = False  # stdout is gone (closed pipe); stop logging, keep serving
