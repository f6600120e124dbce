"""The logs' own protections, on real pipes: ``LineSink`` (never blocks, drops and says so),
``RateLimit`` (a fake clock and a fake timer), the access log's cut of over-long lines and the
error log's cut of over-long messages."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from fsmfast import logs
from fsmfast.logsink import PIPE_BUF, LineSink
from fsmfast.proxy import accesslog
from fsmfast.proxy.accesslog import AccessLog


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    r, w = os.pipe()
    os.set_blocking(r, False)
    yield r, w
    for fd in (r, w):
        try:
            os.close(fd)
        except OSError:
            pass


def fill(w: int) -> int:
    """Fills the pipe with 100-byte lines, then newlines, until it takes no byte more; the bytes
    written."""
    os.set_blocking(w, False)
    total = 0
    for line in (b"#" * 99 + b"\n", b"\n"):
        try:
            while True:
                total += os.write(w, line)
        except BlockingIOError:
            pass
    os.set_blocking(w, True)
    return total


def read_all(r: int) -> bytes:
    out = b""
    while True:
        try:
            chunk = os.read(r, 1 << 20)
        except BlockingIOError:
            return out
        if not chunk:
            return out
        out += chunk


def notice(n: int) -> bytes:
    return f"{n} dropped\n".encode()


# -- LineSink ---------------------------------------------------------------------------------


def test_a_full_pipe_costs_lines_then_says_how_many(pipe: tuple[int, int]) -> None:
    r, w = pipe
    filled = fill(w)
    sink = LineSink(w, 1000, notice)
    lines = [f"line {i:04d}\n".encode() for i in range(200)]  # 10 bytes each: 100 fit the limit
    for line in lines:
        sink.add(line)
    assert not sink.flush()  # the pipe is full: nothing written, nothing blocked on
    assert sink.blocked and sink.dropped == 100
    assert os.get_blocking(w), "O_NONBLOCK was set on the shared file description"
    assert len(read_all(r)) == filled
    assert sink.flush()
    assert read_all(r) == b"".join(lines[:100]) + b"100 dropped\n"
    assert not sink.blocked and sink.dropped == 0
    sink.add(b"after\n")
    assert sink.flush() and read_all(r) == b"after\n"


def test_writes_hold_whole_lines_of_at_most_pipe_buf(pipe: tuple[int, int]) -> None:
    """A pipe with one page free takes 4,096 bytes of a larger write, cutting a line that another
    worker's write could then follow: the sink writes at most a page of whole lines at a time."""
    r, w = pipe
    filled = fill(w)
    os.read(r, 4096)  # frees one page of the pipe
    sink = LineSink(w, 1 << 20, notice)
    lines = [f"{i:05d} {'x' * 93}\n".encode() for i in range(100)]
    for line in lines:
        sink.add(line)
    assert not sink.flush()
    assert sink.size == 6000  # 40 lines went in, whole; the rest wait
    data = read_all(r)[filled - 4096 :]
    while not sink.flush():
        data += read_all(r)
    assert data + read_all(r) == b"".join(lines)
    long = b"L" * (3 * PIPE_BUF) + b"\n"  # longer than one atomic write: alone, and whole
    sink.add(b"short\n")
    sink.add(long)
    sink.add(b"end\n")
    assert sink.flush()
    assert read_all(r).endswith(b"short\n" + long + b"end\n")


def test_a_closed_pipe_stops_the_sink(pipe: tuple[int, int]) -> None:
    r, w = pipe
    os.close(r)
    sink = LineSink(w, 1000, notice)
    sink.add(b"x\n")
    assert sink.flush() and sink.dead
    assert not sink.add(b"y\n")


def test_a_regular_file_takes_everything(tmp_path: Path) -> None:
    path = tmp_path / "log"
    with open(path, "wb") as f:
        sink = LineSink(f.fileno(), 1 << 20, notice)
        for i in range(1000):
            sink.add(f"{i}\n".encode())
        assert sink.flush()
    assert path.read_bytes() == b"".join(f"{i}\n".encode() for i in range(1000))


# -- the access log ---------------------------------------------------------------------------


def test_access_log_drops_and_reports_as_json(pipe: tuple[int, int]) -> None:
    r, w = pipe
    fill(w)
    loop = asyncio.new_event_loop()
    try:
        log = AccessLog(loop, fd=w)
        n = accesslog.BACKLOG // 100 + 10
        for i in range(n):
            log.write({"i": i, "pad": "p" * 60})
        log.flush()
        read_all(r)  # what fill() wrote, and the first of the log
        data = b""
        for _ in range(1000):
            data += read_all(r)
            log.flush()
            if not log._sink.pending:
                break
        data += read_all(r)
        lines = [json.loads(x) for x in data.splitlines() if x.startswith(b"{")]
    finally:
        loop.close()
    notices = [e for e in lines if "dropped" in e]
    assert len(notices) == 1
    assert notices[0]["message"] == f"{notices[0]['dropped']} access-log lines dropped: fd {w} not writable"
    assert len(lines) - 1 + notices[0]["dropped"] == n
    assert [e["i"] for e in lines if "i" in e] == list(range(len(lines) - 1))


def test_an_over_long_line_is_cut_to_one_atomic_write() -> None:
    entry = {"method": "GET", "path": "/" + "a" * 60000, "host": "h.test", "status": 414}
    line = accesslog._capped(entry)
    assert len(line) <= accesslog.LINE_MAX
    got = json.loads(line)
    assert got["path"] == "/" + "a" * 2047 + "...[cut from 60001]"
    assert got["host"] == "h.test" and got["status"] == 414


def test_escapes_that_swell_a_line_are_cut_further() -> None:
    # Each control byte is six bytes of JSON: 3,000 of them do not fit even cut to 2 KiB.
    entry = {"method": "-", "path": "/" + "\x01" * 3000, "host": "\x02" * 3000, "status": 400}
    line = accesslog._capped(entry)
    assert len(line) <= accesslog.LINE_MAX
    got = json.loads(line)
    assert got["path"].endswith("...[cut from 3001]") and got["host"].endswith("...[cut from 3000]")


# -- the error log ----------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.timers: list[tuple[float, Callable[[], None]]] = []

    def __call__(self) -> float:
        return self.now

    def schedule(self, delay: float, fn: Callable[[], None]) -> None:
        self.timers.append((self.now + delay, fn))

    def advance(self, seconds: float) -> None:
        self.now += seconds
        due = [t for t in self.timers if t[0] <= self.now]
        self.timers = [t for t in self.timers if t[0] > self.now]
        for _, fn in due:
            fn()


@pytest.fixture
def limited() -> Iterator[tuple[logging.Logger, list[str], Clock]]:
    clock = Clock()
    out: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            out.append(f"{record.name} {record.levelname} {record.getMessage()}")

    handler = Collect()
    handler.addFilter(logs.RateLimit(handler.handle, burst=3, interval=10.0, clock=clock, schedule=clock.schedule))
    logger = logging.getLogger("fsmfast-test-ratelimit")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    yield logger, out, clock
    logger.removeHandler(handler)


def test_a_kind_is_its_template_not_its_arguments(limited: tuple[logging.Logger, list[str], Clock]) -> None:
    logger, out, clock = limited
    for i in range(20_000):
        logger.info("handshake with 10.0.0.%d failed: %s", i % 250, "wrong version")
    clock.now += 2
    logger.info("another kind %d", 1)
    logger.warning("handshake with 10.0.0.%d failed: %s", 1, "x")  # another level: another kind
    assert len(out) == 3 + 1 + 1
    assert len(clock.timers) == 1
    clock.advance(8)  # the first kind's interval ends
    assert (
        out[-1]
        == "fsmfast-test-ratelimit INFO ... and 19,997 more like 'handshake with 10.0.0.%d failed: %s' in the last 10 s"
    )
    assert clock.timers == []
    logger.info("handshake with 10.0.0.%d failed: %s", 7, "again")  # a new interval
    assert out[-1].endswith("10.0.0.7 failed: again")


def test_a_kind_that_returns_after_its_interval_is_summarized_first(
    limited: tuple[logging.Logger, list[str], Clock],
) -> None:
    logger, out, clock = limited
    for _ in range(5):
        logger.error("boom %s", "x")
    clock.now += 11  # its sweep is late (a timer thread held up): the next record brings the summary
    logger.error("boom %s", "y")
    assert out[-2:] == [
        "fsmfast-test-ratelimit ERROR ... and 2 more like 'boom %s' in the last 11 s",
        "fsmfast-test-ratelimit ERROR boom y",
    ]


def test_idle_kinds_are_forgotten(limited: tuple[logging.Logger, list[str], Clock]) -> None:
    logger, out, clock = limited
    for i in range(10):
        logger.info("kind %d" + " " * i, i)
    limiter = logger.handlers[0].filters[0]
    assert isinstance(limiter, logs.RateLimit) and len(limiter.kinds) == 10
    clock.now += 10
    limiter.sweep()
    assert limiter.kinds == {} and len(out) == 10


def test_the_error_log_cuts_long_messages_and_keeps_tracebacks(pipe: tuple[int, int]) -> None:
    r, w = pipe
    handler = logs.SinkHandler(LineSink(w, 1 << 20, notice))
    handler.setFormatter(logs._Formatter("%(levelname)s %(message)s"))
    logger = logging.getLogger("fsmfast-test-cut")
    logger.propagate = False
    logger.addHandler(handler)
    try:
        logger.warning("no route for %r", "/" + "a" * 5000)
        try:
            raise ValueError("the cause")
        except ValueError:
            logger.exception("failed %s", "b" * 5000)
    finally:
        logger.removeHandler(handler)
    text = read_all(r).decode()
    first, rest = text.split("\n", 1)
    assert len(first) < logs.MESSAGE_MAX + 100 and first.endswith(f"...[cut from {5000 + 16}]")
    assert "...[cut from 5007]" in rest and rest.rstrip().endswith("ValueError: the cause")


def test_a_full_stderr_does_not_block_and_is_retried(pipe: tuple[int, int]) -> None:
    r, w = pipe
    fill(w)
    handler = logs.SinkHandler(LineSink(w, 1 << 20, notice), retry=0.05)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger("fsmfast-test-full")
    logger.propagate = False
    logger.addHandler(handler)
    try:
        logger.warning("held")
        assert handler.sink.blocked
        read_all(r)
        for _ in range(100):  # the retry timer writes it once there is room
            if not handler.sink.pending:
                break
            time.sleep(0.02)
    finally:
        logger.removeHandler(handler)
    assert read_all(r) == b"held\n"


@pytest.mark.parametrize(("rate_limit", "expected"), [(False, 20), (True, logs.BURST)])
def test_the_master_log_is_not_rate_limited(
    rate_limit: bool, expected: int, pipe: tuple[int, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The master's lines are operator events (twenty reloads in a row each say their generation);
    # only the workers' traffic-driven lines are summarized.
    r, w = pipe
    monkeypatch.setattr(sys, "stderr", os.fdopen(w, "w", closefd=False))
    try:
        logger = logs.setup("master" if not rate_limit else "worker 0", rate_limit=rate_limit)
        for generation in range(20):
            logger.info("reloaded: generation %d", generation)
    finally:
        monkeypatch.undo()
        logs.setup("fsmfast")
    lines = [line for line in read_all(r).decode().splitlines() if "reloaded: generation" in line]
    assert len(lines) == expected
