"""Whole log lines to stdout or stderr, never blocking the process that writes them.

A log sink that stops reading (a pipe nobody drains, a stuck log shipper, a terminal paused
with Ctrl-S) must cost the gateway log lines, not requests: a blocking ``write`` would stop
the worker's event loop, or the master's. So a :class:`LineSink` keeps unwritten lines in a
bounded buffer, counts what it has to drop beyond it, retries later, and once the sink drains
says how many lines were lost, in one line.

How the write is made non-blocking matters because ``O_NONBLOCK`` belongs to the open file
description, which the master, its workers and often a parent shell share: setting it on
stdout would hand the shell a non-blocking terminal after we exit, and make Python's own
``sys.stderr`` writes fail. A writer thread per process would block instead of us, but every
write it makes must take the GIL back from a busy event loop (up to a 5 ms switch interval
each), so it cannot keep up with a busy access log. Hence, in order of preference:

1. ``pwritev2(RWF_NOWAIT)``: non-blocking for this one call, nothing shared changes (pipes
   and sockets on recent Linux);
2. a private file description for the same pipe or terminal, opened through
   ``/proc/self/fd/N``, made non-blocking: nobody else sees the flag;
3. a pipe or socket we may not reopen (a container runtime's FIFO owned by root): the flag is
   set on the shared description after all. It is shared with our own processes and the
   runtime, which only reads. A terminal is left blocking: it is a person's, and only stalls
   when they ask it to.

Regular files never wait for a reader and are written plainly.

Lines never interleave with another process's lines on the same pipe: each write holds whole
lines and at most ``PIPE_BUF`` bytes, which POSIX makes atomic (a non-blocking write of that
size goes in whole or not at all). A single line longer than that (callers keep theirs
shorter) is written alone, and its tail, if the write was short, goes first next time.
"""

from __future__ import annotations

import errno
import os
import select
import stat
from collections.abc import Callable

PIPE_BUF = getattr(select, "PIPE_BUF", 512)
_NOWAIT = getattr(os, "RWF_NOWAIT", 0) if hasattr(os, "pwritev") else 0


class LineSink:
    """Lines (bytes ending in ``\\n``) to ``fd``; ``add`` then ``flush``, neither blocks.

    ``notice(n)`` makes the line that reports ``n`` dropped lines once the sink drains.
    Not thread-safe: the owner serializes calls (the event loop, or a handler's lock).
    """

    def __init__(self, fd: int, limit: int, notice: Callable[[int], bytes]) -> None:
        self.fd = fd
        self.limit = limit
        self.notice = notice
        self.pending: list[bytes] = []
        self.size = 0  # bytes in pending
        self.dropped = 0  # lines refused since the last notice
        self.blocked = False  # the last flush left lines behind: retry later, not per line
        self.dead = False  # the sink is gone (EPIPE, EBADF): everything is dropped silently
        self._out = -1  # the fd written to (fd, or a private description of it)
        self._mode = 0  # 0: not chosen yet, 1: RWF_NOWAIT, 2: plain os.write
        self._chunk = PIPE_BUF

    def add(self, line: bytes) -> bool:
        """Queue one line; False when it was dropped (the buffer is full or the sink gone)."""
        if self.size >= self.limit or self.dead:
            self.dropped += 1
            return False
        self.pending.append(line)
        self.size += len(line)
        return True

    def flush(self) -> bool:
        """Write what the sink takes now; True when nothing is left pending."""
        if self.dead:
            self.pending = []
            self.size = 0
            return True
        if self.pending and not self._write_pending():
            self.blocked = True
            return False
        if self.dropped:
            # Drained after a loss: say so, in the same stream, where the gap is.
            line = self.notice(self.dropped)
            self.dropped = 0
            self.pending = [line]
            self.size = len(line)
            if not self._write_pending():
                self.blocked = True
                return False
        self.blocked = False
        return True

    def after_fork(self) -> None:
        """In a forked child: the parent's pending lines and drops are the parent's to write."""
        self.pending = []
        self.size = 0
        self.dropped = 0
        self.blocked = False

    def reset(self) -> None:
        """``fd`` now names another open file (a log reopened with dup2 on SIGUSR1): choose again how to
        write to it. A private description opened for the old one would keep writing to the old file."""
        if self._out not in (-1, self.fd):
            try:
                os.close(self._out)
            except OSError:
                pass
        self._out = -1
        self._mode = 0
        self._chunk = PIPE_BUF
        self.dead = False

    # -- writing ----------------------------------------------------------------------------

    def _write_pending(self) -> bool:
        pending = self.pending
        data = pending[0] if len(pending) == 1 else b"".join(pending)
        try:
            pos = self._write_lines(data)
        except OSError:
            self.dead = True  # stdout closed or broken: stop logging, keep serving
            self.pending = []
            self.size = 0
            return True
        if pos == len(data):
            self.pending = []
            self.size = 0
            return True
        rest = data[pos:]
        self.pending = [rest]
        self.size = len(rest)
        return False

    def _write_lines(self, data: bytes) -> int:
        """Writes whole-line chunks of ``data`` until the sink is full; returns bytes written."""
        if not self._mode:
            self._choose()
        view = memoryview(data)
        end = len(data)
        chunk = self._chunk
        pos = 0
        while pos < end:
            stop = pos + chunk
            if stop < end:
                cut = data.rfind(b"\n", pos, stop) + 1
                if cut <= pos:  # one line longer than a chunk: alone, whole
                    cut = data.find(b"\n", stop) + 1 or end
                stop = cut
            else:
                stop = end
            want = stop - pos
            try:
                if self._mode == 1:
                    n = os.pwritev(self._out, [view[pos:stop]], -1, _NOWAIT)
                else:
                    n = os.write(self._out, view[pos:stop])
            except BlockingIOError:
                return pos
            except InterruptedError:
                continue
            except OSError as exc:
                if exc.errno != errno.EOPNOTSUPP or self._mode != 1:
                    raise
                self._fallback()  # this kernel has no RWF_NOWAIT for this kind of file
                continue
            pos += n
            if n < want:
                return pos  # a short write: the sink is full; the tail goes first next time
        return pos

    def _choose(self) -> None:
        self._out = self.fd
        try:
            mode = os.fstat(self.fd).st_mode
        except OSError:
            mode = 0
        if stat.S_ISREG(mode):
            self._mode = 2
            self._chunk = 1 << 30  # appends to a file are not torn by other writers' appends
        elif _NOWAIT and (stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)):
            self._mode = 1
        else:
            self._fallback()

    def _fallback(self) -> None:
        self._mode = 2
        try:
            mode = os.fstat(self.fd).st_mode
        except OSError:
            return
        if stat.S_ISSOCK(mode):
            os.set_blocking(self.fd, False)  # a socket cannot be reopened through /proc
            return
        try:
            self._out = os.open(f"/proc/self/fd/{self.fd}", os.O_WRONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
        except OSError:
            if stat.S_ISFIFO(mode):
                os.set_blocking(self.fd, False)
            # else: a terminal we may not reopen stays blocking (see the module docstring)
