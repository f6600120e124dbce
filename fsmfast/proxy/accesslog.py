"""One JSON line per request on stdout, buffered per worker.

Lines are gathered in memory and written at most every 100 ms (or per 64 KiB), so the hot
path never makes a syscall per request. The writing is a :class:`~fsmfast.logsink.LineSink`:
whole lines, at most ``PIPE_BUF`` bytes per write, so several workers sharing stdout never
interleave inside a line; and never blocking, so a stdout nobody reads costs log lines (counted,
and reported in one line once it drains), never requests.

A line is kept under ``PIPE_BUF`` so its write stays atomic: a longer one (a 60 KB request-target
refused with 414) has its string fields cut, with a marker saying how long they were. The check
is one ``len`` per line; only over-long lines pay for the cut.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

import orjson

from fsmfast.logsink import PIPE_BUF, LineSink

FLUSH_DELAY = 0.1
FLUSH_BYTES = 64 * 1024
# Lines held per worker while stdout takes nothing; beyond this they are dropped and counted.
BACKLOG = 1024 * 1024
# Longest line written whole. nginx cuts nothing (its 8 KiB header buffers bound the target),
# but a line over PIPE_BUF may be torn by another worker's write on the same pipe.
LINE_MAX = PIPE_BUF
# Where an over-long line's fields are cut: the path keeps the most, being what one searches for.
PATH_CAP = 2048
FIELD_CAP = 256
# Every line's "ts" (the dropped-lines notice's too): UTC, to the second.
TIMESTAMP = "%Y-%m-%dT%H:%M:%SZ"


class AccessLog:
    def __init__(self, loop: asyncio.AbstractEventLoop, fd: int = 1, enabled: bool = True) -> None:
        self._loop = loop
        self._fd = fd
        self.enabled = enabled
        self._sink = LineSink(fd, BACKLOG, self._notice)
        self._timer: asyncio.TimerHandle | None = None

    def write(self, entry: dict[str, Any]) -> None:
        if not self.enabled:
            return
        entry["ts"] = time.strftime(TIMESTAMP, time.gmtime())
        line = orjson.dumps(entry, option=orjson.OPT_APPEND_NEWLINE)
        if len(line) > LINE_MAX:
            line = _capped(entry)
        sink = self._sink
        sink.add(line)
        if sink.size >= FLUSH_BYTES and not sink.blocked:
            self.flush()
        elif self._timer is None:
            self._timer = self._loop.call_later(FLUSH_DELAY, self.flush)

    def flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        sink = self._sink
        if not sink.flush():
            # stdout takes nothing more for now: retry later; lines beyond BACKLOG are dropped.
            self._timer = self._loop.call_later(FLUSH_DELAY, self.flush)
        elif sink.dead:
            self.enabled = False  # stdout is gone (closed pipe); stop logging, keep serving

    def reopen(self, fd: int) -> None:
        """SIGUSR1 (``fsmfast.master.logfiles``): the lines held so far go to the old file, the next ones
        to ``fd``, the master's newly opened file, which takes the place of the one written to."""
        self.flush()
        os.dup2(fd, self._fd)
        os.close(fd)
        self._sink.reset()

    def _notice(self, dropped: int) -> bytes:
        where = "stdout" if self._fd == 1 else f"fd {self._fd}"
        return orjson.dumps(
            {
                "ts": time.strftime(TIMESTAMP, time.gmtime()),
                "pid": os.getpid(),
                "dropped": dropped,
                "message": f"{dropped} access-log lines dropped: {where} not writable",
            },
            option=orjson.OPT_APPEND_NEWLINE,
        )


def _capped(entry: dict[str, Any]) -> bytes:
    """The line of an entry too long for one atomic write, its string fields cut to fit."""
    whole = {k: v for k, v in entry.items() if isinstance(v, str)}
    line = b""
    for cap in (PATH_CAP, PATH_CAP // 8, 32):  # shorter only when escapes (\u0001) swell a field
        for key, value in whole.items():
            limit = cap if key == "path" else min(cap, FIELD_CAP)
            if len(value) > limit:
                entry[key] = f"{value[:limit]}...[cut from {len(value)}]"
        line = orjson.dumps(entry, option=orjson.OPT_APPEND_NEWLINE)
        if len(line) <= LINE_MAX:
            break
    return line
