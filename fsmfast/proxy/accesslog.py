"""One line per request on stdout, buffered per worker: JSON, or nginx's ``combined`` format.

Lines are gathered in memory and written at most every 100 ms (or per 64 KiB), so the hot
path never makes a syscall per request. The writing is a :class:`~fsmfast.logsink.LineSink`:
whole lines, at most ``PIPE_BUF`` bytes per write, so several workers sharing stdout never
interleave inside a line; and never blocking, so a stdout nobody reads costs log lines (counted,
and reported in one line once it drains), never requests.

A line is kept under ``PIPE_BUF`` so its write stays atomic: a longer one (a 60 KB request-target
refused with 414) has its string fields cut, with a marker saying how long they were. The check
is one ``len`` per line; only over-long lines pay for the cut.

The format is chosen once, when the log is made (``--access-log-format``):

- ``json`` (the default): one object per line, the fields the exchange gives (``request_id`` among
  them) plus ``ts``.
- ``combined``: nginx's ``$remote_addr - $remote_user [$time_local] "$request" $status
  $body_bytes_sent "$http_referer" "$http_user_agent"``, then the request id as one more quoted
  field, which parsers of the combined format skip. Escaped as nginx escapes variables: ``"``,
  ``\\``, control bytes and bytes above 0x7E become ``\\xHH``; an absent header is ``-``. Referer
  and User-Agent are looked up in the request's headers here, when the line is made, so that the
  request path never looks for them. An L4 (TCP, TLS) connection is no HTTP request: its request
  field is its protocol and port, its status ``-``.
"""

from __future__ import annotations

import asyncio
import os
import re
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
FORMATS = ("json", "combined")
# nginx's $time_local month names, whatever the locale.
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
# What nginx escapes in a logged variable (ngx_http_log_escape): control bytes, '"', '\', DEL and above.
_UNSAFE = re.compile(rb'[\x00-\x1f"\\\x7f-\xff]')

Headers = list[tuple[bytes, bytes]]


class AccessLog:
    def __init__(self, loop: asyncio.AbstractEventLoop, fd: int = 1, enabled: bool = True, fmt: str = "json") -> None:
        if fmt not in FORMATS:
            raise ValueError(f"access log format {fmt!r} is not one of {', '.join(FORMATS)}")
        self._loop = loop
        self._fd = fd
        self.enabled = enabled
        self.format = fmt
        self._combined = fmt == "combined"
        self._second = -1  # the second _time_local was made for
        self._time_local = b""
        self._sink = LineSink(fd, BACKLOG, self._notice)
        self._timer: asyncio.TimerHandle | None = None

    def write(self, entry: dict[str, Any], headers: Headers | None = None) -> None:
        """Log one request (or L4 connection); ``headers``: the request's, for the combined format."""
        if not self.enabled:
            return
        if self._combined:
            line = combined_line(entry, headers, self._local_time())
        else:
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

    def _local_time(self) -> bytes:
        """$time_local (``10/Oct/2000:13:55:36 -0700``), made once a second."""
        now = int(time.time())
        if now != self._second:
            tm = time.localtime(now)
            offset = tm.tm_gmtoff // 60
            sign = "-" if offset < 0 else "+"
            offset = abs(offset)
            self._time_local = (
                f"{tm.tm_mday:02d}/{MONTHS[tm.tm_mon - 1]}/{tm.tm_year}:{tm.tm_hour:02d}:{tm.tm_min:02d}:"
                f"{tm.tm_sec:02d} {sign}{offset // 60:02d}{offset % 60:02d}"
            ).encode()
            self._second = now
        return self._time_local

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


def escape(value: bytes) -> bytes:
    """``value`` as nginx logs a variable: ``\\xHH`` for control bytes, ``"``, ``\\``, DEL and above."""
    if _UNSAFE.search(value) is None:
        return value
    return _UNSAFE.sub(lambda m: b"\\x%02X" % m[0][0], value)


def combined_line(entry: dict[str, Any], headers: Headers | None, time_local: bytes) -> bytes:
    """The combined-format line of an entry (see the module docstring), cut to fit LINE_MAX."""
    referer = agent = None
    for name, value in headers or ():
        n = len(name)
        if n == 7 and referer is None and name.lower() == b"referer":
            referer = value
        elif n == 10 and agent is None and name.lower() == b"user-agent":
            agent = value
    method = entry.get("method")
    if method is None:  # an L4 connection
        request = f"{entry.get('protocol', '-')} {entry.get('port', '-')}".encode()
        status = b"-"
    else:
        # The JSON fields hold the request's bytes decoded as latin-1: encoding gives them back.
        request = b"-" if method == "-" else f"{method} {entry.get('path')} HTTP/{entry.get('http')}".encode("latin-1")
        status = b"%d" % entry.get("status", 0)
    rid = entry.get("request_id")
    head = b'%s - - [%s] "' % (str(entry.get("client") or "-").encode(), time_local)
    middle = b'" %s %d "' % (status, entry.get("bytes") or 0)
    fields = [request, referer, agent, rid.encode("latin-1") if rid else None]
    line = _join_combined(head, middle, fields, 0)
    for cap in (PATH_CAP, PATH_CAP // 8, 32):
        if len(line) <= LINE_MAX:
            break
        line = _join_combined(head, middle, fields, cap)
    return line


def _join_combined(head: bytes, middle: bytes, fields: list[bytes | None], cap: int) -> bytes:
    """``head request middle referer" "agent" "id"``: each field escaped, ``-`` when absent; with ``cap``,
    the request cut to ``cap`` bytes, the others to at most FIELD_CAP (as the JSON line's fields)."""
    out = []
    for i, value in enumerate(fields):
        if value is None:
            out.append(b"-")
            continue
        limit = cap if i == 0 else min(cap, FIELD_CAP)
        if cap and len(value) > limit:
            value = value[:limit] + b"...[cut from %d]" % len(value)
        out.append(escape(value))
    return b'%s%s%s%s" "%s" "%s"\n' % (head, out[0], middle, out[1], out[2], out[3])


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
