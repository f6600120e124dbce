"""Error-log setup shared by the master and the workers.

Everything goes to stderr, one line per record, prefixed with the process role and pid
(``[master 812]``, ``[worker 2 815]``) so the interleaved output of a prefork server says
who spoke. The access log is the workers' business and does not pass through here.

Workers call :func:`setup` again right after the fork: the handler is inherited, only
the role changes. ``%(process)d`` is read when each record is made, so it is always the
current pid.

Two protections against a log that costs more than the traffic it describes:

- the handler writes through a :class:`~fsmfast.logsink.LineSink`: a stderr nobody reads
  drops lines (and says how many once it drains) instead of blocking the master or a worker;
- :class:`RateLimit` lets the first few lines of a kind through per interval and summarizes the
  rest in one line, so 20,000 garbage connections cannot write 20,000 lines. A kind is the
  logger and the message template (``record.msg`` before formatting), so the varying client
  address in each line does not make every line new.

A message longer than ``MESSAGE_MAX`` (one quoting a client's request-target, say) is cut with
a marker; a traceback after it is kept whole.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass

from fsmfast.logsink import LineSink

LOGGER = "fsmfast"
FORMAT = "%(asctime)s [%(role)s %(process)d] %(levelname)s %(message)s"
DATEFMT = "%Y-%m-%d %H:%M:%S"
# Lines of one kind let through per interval before the rest are only counted.
BURST = 5
INTERVAL = 10.0
# Bytes of error log held while stderr takes nothing; beyond this, lines are dropped and counted.
BACKLOG = 256 * 1024
MESSAGE_MAX = 2048

_role = "fsmfast"
_sink: LineSink | None = None


class _RoleFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.role = _role
        return True


def setup(role: str, level: int = logging.INFO, rate_limit: bool = True) -> logging.Logger:
    """Point the ``fsmfast`` logger at stderr with a ``[role pid]`` prefix; call again after a fork.

    ``rate_limit=False`` for the master: its lines are operator events (a reload's result, a
    worker's death), never driven by client traffic, and each one must reach the operator. A
    master without a limiter also has no sweep timer thread that could hold a lock across a fork.
    """
    global _role, _sink
    _role = role
    logger = logging.getLogger(LOGGER)
    for handler in list(logger.handlers):
        if getattr(handler, "_fsmfast", False):
            logger.removeHandler(handler)
            if isinstance(handler, SinkHandler) and handler.limiter is not None:
                handler.limiter.close()
    fd = _stderr_fd()
    if _sink is None or _sink.fd != fd:
        _sink = LineSink(fd, BACKLOG, _dropped_notice)
    handler = SinkHandler(_sink)
    # A marker on a stdlib Handler (which declares no such attribute), to find ours among the root's handlers.
    handler._fsmfast = True  # type: ignore[attr-defined]
    handler.setFormatter(_Formatter(FORMAT, DATEFMT))
    handler.addFilter(_RoleFilter())
    if rate_limit:
        handler.limiter = RateLimit(handler.handle)
        handler.addFilter(handler.limiter)
    logger.addHandler(handler)
    logger.setLevel(level)
    # An embedding application's root handlers would print every line twice.
    logger.propagate = False
    return logger


def get_logger(name: str) -> logging.Logger:
    """A child of the ``fsmfast`` logger, e.g. ``get_logger("master")`` → ``fsmfast.master``."""
    return logging.getLogger(f"{LOGGER}.{name}")


class _Formatter(logging.Formatter):
    def formatMessage(self, record: logging.LogRecord) -> str:
        message = record.message
        if len(message) > MESSAGE_MAX:
            record.message = f"{message[:MESSAGE_MAX]}...[cut from {len(message)}]"
        return super().formatMessage(record)


def _dropped_notice(dropped: int) -> bytes:
    stamp = time.strftime(DATEFMT)
    return f"{stamp} [{_role} {os.getpid()}] WARNING {dropped} error-log lines dropped: stderr not writable\n".encode()


class SinkHandler(logging.Handler):
    """Formats a record and writes it through a :class:`LineSink`, never blocking.

    While the sink is full, a timer thread retries every ``retry`` seconds (the master has no
    event loop, and a worker may log from outside its loop); it is a daemon, so it never holds
    up an exit.
    """

    limiter: RateLimit | None = None

    def __init__(self, sink: LineSink, retry: float = 0.1) -> None:
        super().__init__()
        self.sink = sink
        self.retry = retry
        self._retrying = False

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record) + "\n"
        except Exception:
            self.handleError(record)
            return
        sink = self.sink
        sink.add(line.encode("utf-8", "backslashreplace"))
        if not sink.blocked and not sink.flush():
            self._schedule()

    def _schedule(self) -> None:
        if self._retrying:
            return
        self._retrying = True
        timer = threading.Timer(self.retry, self._retry)
        timer.daemon = True
        timer.start()

    def _retry(self) -> None:
        self.acquire()
        try:
            self._retrying = False
            if not self.sink.flush():
                self._schedule()
        finally:
            self.release()

    def flush(self) -> None:
        self.acquire()
        try:
            self.sink.flush()
        finally:
            self.release()


@dataclass
class _Kind:
    start: float
    passed: int
    suppressed: int
    level: int
    name: str
    template: str


class RateLimit(logging.Filter):
    """Lets ``burst`` records of a kind (logger, level, template) through per ``interval``.

    The rest are counted; when the interval ends, a timer (``schedule``) emits one line per kind
    that lost any: ``... and 19,874 more like "..." in the last 10 s``. ``clock`` and
    ``schedule`` are injectable for tests; ``emit`` is the handler's ``handle``.
    """

    def __init__(
        self,
        emit: Callable[[logging.LogRecord], object],
        burst: int = BURST,
        interval: float = INTERVAL,
        clock: Callable[[], float] = time.monotonic,
        schedule: Callable[[float, Callable[[], None]], object] | None = None,
    ) -> None:
        super().__init__()
        self.emit = emit
        self.burst = burst
        self.interval = interval
        self.clock = clock
        self.schedule = schedule or _daemon_timer
        self.kinds: dict[tuple[str, int, object], _Kind] = {}
        self._lock = threading.Lock()
        self._sweep_due = False
        self._closed = False
        _limiters.add(self)

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "fsmfast_summary", False):
            return True
        msg = record.msg
        key = (record.name, record.levelno, msg if isinstance(msg, str) else str(msg))
        now = self.clock()
        with self._lock:
            kind = self.kinds.get(key)
            if kind is None or now - kind.start >= self.interval:
                if kind is not None and kind.suppressed:
                    # A kind whose interval ended before the sweep ran: its summary first.
                    self._summarize(kind, now)
                self.kinds[key] = _Kind(now, 1, 0, record.levelno, record.name, key[2])
                return True
            if kind.passed < self.burst:
                kind.passed += 1
                return True
            kind.suppressed += 1
            if not self._sweep_due:
                self._sweep_due = True
                self.schedule(max(0.0, kind.start + self.interval - now), self.sweep)
            return False

    def sweep(self) -> None:
        """Summarizes every kind whose interval has ended; forgets the idle ones."""
        now = self.clock()
        with self._lock:
            self._sweep_due = False
            if self._closed:
                return
            next_end = None
            for key, kind in list(self.kinds.items()):
                end = kind.start + self.interval
                if now < end:
                    if kind.suppressed:
                        next_end = end if next_end is None else min(next_end, end)
                    continue
                if kind.suppressed:
                    self._summarize(kind, now)
                del self.kinds[key]
            if next_end is not None:
                self._sweep_due = True
                self.schedule(max(0.0, next_end - now), self.sweep)

    def close(self) -> None:
        self._closed = True  # no lock: a forked child may find it held by a thread it lacks

    def _summarize(self, kind: _Kind, now: float) -> None:
        count = kind.suppressed
        kind.suppressed = 0
        seconds = max(now - kind.start, self.interval)
        record = logging.LogRecord(
            kind.name,
            kind.level,
            __file__,
            0,
            "... and %s more like %r in the last %.0f s",
            (f"{count:,}", kind.template, seconds),
            None,
        )
        record.fsmfast_summary = True
        self.emit(record)


def _stderr_fd() -> int:
    try:
        return sys.stderr.fileno()
    except (AttributeError, ValueError, OSError):
        return 2  # sys.stderr replaced by something without a descriptor (a test's capture)


def _after_fork_in_child() -> None:
    # Timer threads do not survive a fork, and the locks they held would stay held: the child
    # starts with clean state (what the parent holds or counts is the parent's to write).
    for limiter in list(_limiters):
        limiter._lock = threading.Lock()
        limiter._sweep_due = False
        limiter.kinds.clear()
    for handler in logging.getLogger(LOGGER).handlers:
        if isinstance(handler, SinkHandler):
            handler._retrying = False
    if _sink is not None:
        _sink.after_fork()


_limiters: weakref.WeakSet[RateLimit] = weakref.WeakSet()
os.register_at_fork(after_in_child=_after_fork_in_child)


def _daemon_timer(delay: float, fn: Callable[[], None]) -> object:
    timer = threading.Timer(delay, fn)
    timer.daemon = True
    timer.start()
    return timer
