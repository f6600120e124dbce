"""fsmfast.edge.throttle: the byte-rate throttle's arithmetic over simulated time, and the shim that
applies it to a connection, over a simulated loop and transport (issue 20).

A simulated writer writes chunks back to back and, when told to pause, writes again exactly that many
seconds later. The shim's tests drive ``Throttled`` as the loop would (``connection_made``,
``data_received``, ``pause_writing``...) with a clock that moves only when a test says so, and check
what the wrapped protocol and the real transport were told.
"""

from __future__ import annotations

import random
from typing import Any

import pytest

from fsmfast.edge.throttle import ByteRate, Throttled

T0 = 5_000_000.0  # CLOCK_MONOTONIC after some weeks up: times this large must not lose bytes


def stream(rate: ByteRate, chunks: list[int], start: float = T0) -> list[tuple[float, int]]:
    """Write ``chunks`` back to back, pausing as told: (time written, total bytes after it)."""
    now, sent, log = start, 0, []
    for n in chunks:
        sent += n
        log.append((now, sent))
        now += rate.pause_for(n, now)
    log.append((now, sent))  # when the last pause ends
    return log


def sent_between(log: list[tuple[float, int]], start: float, end: float) -> int:
    """Bytes written at times within [start, end)."""
    before = max((s for t, s in log if t < start), default=0)
    upto = max((s for t, s in log if t < end), default=0)
    return upto - before


@pytest.mark.parametrize("bps", [0, -1, 1.5, True, "100"])
def test_bps_must_be_a_whole_number_of_bytes_at_least_one(bps: object) -> None:
    with pytest.raises(ValueError):
        ByteRate(bps)  # type: ignore[arg-type]


def test_a_connection_starts_with_one_seconds_worth() -> None:
    rate = ByteRate(2048)
    assert rate.allowance(T0) == 2048
    assert rate.pause_for(1000, T0) == 0.0
    assert rate.allowance(T0) == 1048
    assert rate.pause_for(1048, T0) == 0.0
    assert rate.allowance(T0) == 0
    assert rate.pause_for(1024, T0) == 0.5  # in debt: half a second's worth


def test_pause_durations_pay_the_debt_exactly() -> None:
    rate = ByteRate(100_000)
    assert rate.pause_for(150_000, T0) == pytest.approx(0.5)  # 100,000 from the bucket, 50,000 owed
    assert rate.allowance(T0 + 0.25) == 0  # still owing 25,000
    assert rate.allowance(T0 + 0.5) == 0
    assert rate.allowance(T0 + 0.75) == 25_000
    assert rate.pause_for(25_000, T0 + 0.75) == 0.0
    assert rate.pause_for(200_000, T0 + 0.75) == pytest.approx(2.0)
    assert rate.pause_for(1, T0 + 10.0) == 0.0  # long paid: a full bucket again


def test_idle_time_refills_at_most_one_second() -> None:
    rate = ByteRate(10_000)
    rate.pause_for(10_000, T0)
    assert rate.allowance(T0 + 0.1) == 1_000
    assert rate.allowance(T0 + 3600) == 10_000  # an hour idle still bursts one second's worth
    assert rate.pause_for(10_000, T0 + 3600) == 0.0
    assert rate.pause_for(10_000, T0 + 3600) == pytest.approx(1.0)


def test_ready_in_agrees_with_the_allowance() -> None:
    rate = ByteRate(65_536)
    rate.pause_for(65_536 + 10_000, T0)
    for n in (1, 1000, 16_384, 65_536, 10**9):
        wait = rate.ready_in(n, T0)
        assert wait > 0
        assert rate.allowance(T0 + wait) >= min(n, 65_536)
        assert rate.allowance(T0 + wait * 0.999) < min(n, 65_536)
    assert ByteRate(10).ready_in(10, T0) == 0.0


@pytest.mark.parametrize(("bps", "chunk"), [(2048, 1024), (100_000, 16_384), (1_000_000, 65_536), (10**8, 262_144)])
def test_the_rate_over_ten_seconds_is_within_one_percent(bps: int, chunk: int) -> None:
    log = stream(ByteRate(bps), [chunk] * (14 * bps // chunk))  # 14 s worth: past every window below
    # After the first second's burst, any ten seconds carry bps * 10 bytes (to a chunk).
    for start in (T0 + 1.0, T0 + 1.3, T0 + 2.0):
        got = sent_between(log, start, start + 10.0)
        assert abs(got - 10 * bps) <= max(0.01 * 10 * bps, chunk), (start, got)
    assert log[-1][0] - T0 >= 12.0


def test_burst_bound_over_every_span() -> None:
    """From the start, by time t at most bps * (t + 1) bytes plus the chunk being written, and (the
    writer never idle) at least bps * t minus one chunk."""
    bps, rng = 50_000, random.Random(24)
    chunks = [rng.randint(1, 40_000) for _ in range(2_000)]
    log = stream(ByteRate(bps), chunks)
    for t, sent in log:
        elapsed = t - T0
        assert sent <= bps * (elapsed + 1) + 40_000 + 1e-6, (elapsed, sent)
        assert sent >= bps * elapsed - 40_000, (elapsed, sent)
    total_time = log[-1][0] - T0
    assert abs(sum(chunks) / (total_time + 1) - bps) < 0.01 * bps


def test_a_slow_writer_is_never_paused() -> None:
    rate = ByteRate(10_000)
    now = T0
    for _ in range(1000):  # 9,000 bytes a second, in 900-byte writes every 0.1 s
        assert rate.pause_for(900, now) == 0.0
        now += 0.1


def test_fsm_demo_8_kib_at_2048_bytes_a_second() -> None:
    """FSM's rate-limit demo: an 8 KiB body through a port of bps 2048. Here the first 2 KiB go at
    once and the other 6 KiB take 3 s."""
    log = stream(ByteRate(2048), [1024] * 8)
    assert log[-1][0] - T0 == pytest.approx(3.0)
    assert [round(t - T0, 6) for t, _ in log[:-1]] == [0.0, 0.0, 0.0, 0.5, 1.0, 1.5, 2.0, 2.5]


def test_directions_are_independent() -> None:
    up, down = ByteRate(1000), ByteRate(1000)
    assert up.pause_for(3000, T0) == pytest.approx(2.0)
    assert down.allowance(T0) == 1000
    assert down.pause_for(1000, T0) == 0.0


# --- the shim -------------------------------------------------------------------------------------


class Timer:
    def __init__(self, when: float, callback: Any) -> None:
        self.when = when
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class Loop:
    """time() and call_later(), with a clock that moves only in run_until()."""

    def __init__(self) -> None:
        self.now = T0
        self.timers: list[Timer] = []

    def time(self) -> float:
        return self.now

    def call_later(self, delay: float, callback: Any) -> Timer:
        assert delay >= 0
        timer = Timer(self.now + delay, callback)
        self.timers.append(timer)
        return timer

    def pending(self) -> list[Timer]:
        return [t for t in self.timers if not t.cancelled]

    def run_until(self, end: float) -> None:
        """Fires every timer due by ``end``, in order, the clock at each one's time."""
        while True:
            due = [t for t in self.pending() if t.when <= end]
            if not due:
                break
            timer = min(due, key=lambda t: t.when)
            self.timers.remove(timer)
            self.now = max(self.now, timer.when)
            timer.callback()
        self.now = end


class Real:
    """The loop's TCP transport: what was written, whether it reads, and each call."""

    def __init__(self) -> None:
        self.written: list[tuple[float, int]] = []  # (time, bytes)
        self.reading = True
        self.calls: list[str] = []
        self.closing = False
        self.loop: Loop | None = None

    def write(self, data: bytes) -> None:
        assert not self.closing
        self.written.append((self.loop.now if self.loop else 0.0, len(data)))

    def writelines(self, pieces: list[bytes]) -> None:
        self.write(b"".join(pieces))

    def pause_reading(self) -> None:
        assert self.reading, "paused twice"
        self.reading = False
        self.calls.append("pause_reading")

    def resume_reading(self) -> None:
        assert not self.reading, "resumed while reading"
        self.reading = True
        self.calls.append("resume_reading")

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True
        self.calls.append("close")

    def abort(self) -> None:
        self.closing = True
        self.calls.append("abort")

    def write_eof(self) -> None:
        self.calls.append("write_eof")

    def can_write_eof(self) -> bool:
        return True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.9", 4242) if name == "peername" else default

    def get_write_buffer_size(self) -> int:
        return 0


class Inner:
    """The wrapped protocol: what it received and was told, in order."""

    def __init__(self, keep_open: bool = False) -> None:
        self.transport: Any = None
        self.received: list[tuple[float, int]] = []
        self.told: list[str] = []
        self.keep_open = keep_open
        self.loop: Loop | None = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        assert type(data) is bytes
        self.received.append((self.loop.now if self.loop else 0.0, len(data)))

    def eof_received(self) -> bool:
        self.told.append("eof")
        return self.keep_open

    def connection_lost(self, exc: Exception | None) -> None:
        self.told.append("lost")

    def pause_writing(self) -> None:
        self.told.append("pause_writing")

    def resume_writing(self) -> None:
        self.told.append("resume_writing")


def connected(bps: int, inner: Inner | None = None) -> tuple[Throttled, Loop, Real, Inner]:
    loop, real, inner = Loop(), Real(), inner or Inner()
    real.loop = inner.loop = loop
    shim = Throttled(inner, bps, loop)  # type: ignore[arg-type]
    shim.connection_made(real)
    assert inner.transport is shim.transport and inner.transport is not real
    return shim, loop, real, inner


def relative(log: list[tuple[float, int]]) -> list[tuple[float, int]]:
    return [(round(t - T0, 6), n) for t, n in log]


def test_reads_the_bucket_allows_go_through_at_once_with_no_timer() -> None:
    shim, loop, real, inner = connected(2048)
    shim.data_received(b"x" * 1000)
    shim.data_received(b"x" * 1048)
    assert relative(inner.received) == [(0.0, 1000), (0.0, 1048)]
    assert real.calls == [] and loop.timers == []


def test_fsm_demo_a_read_of_8_kib_at_2048_reaches_the_protocol_over_3_s() -> None:
    shim, loop, real, inner = connected(2048)
    shim.data_received(b"p" * 8192)  # one read: 2 KiB pass, the rest is held and reading stops
    assert relative(inner.received) == [(0.0, 2048)] and real.calls == ["pause_reading"]
    loop.run_until(T0 + 10)
    assert relative(inner.received) == [(0.0, 2048), (1.0, 2048), (2.0, 2048), (3.0, 2048)]
    assert real.calls == ["pause_reading", "resume_reading"] and real.reading
    # The bucket is empty now: the next read waits for its bytes' worth.
    loop.now = T0 + 3.0
    shim.data_received(b"p" * 1024)
    assert inner.received[-1] == (T0 + 3.0, 2048) and not real.reading
    loop.run_until(T0 + 10)
    assert relative(inner.received[-1:]) == [(3.5, 1024)] and real.reading


def test_the_protocols_own_pause_and_the_rates_are_two_reasons() -> None:
    shim, loop, real, inner = connected(1000)
    shim.data_received(b"a" * 3000)  # 1000 pass, 2000 held
    inner.transport.pause_reading()  # its own back-pressure, during the rate's pause
    assert real.calls == ["pause_reading"]  # once
    assert inner.transport.is_reading() is False
    loop.run_until(T0 + 5)
    assert relative(inner.received) == [(0.0, 1000)]  # a paused protocol is not handed bytes
    inner.transport.resume_reading()
    assert not real.reading  # 2000 bytes still held: the rate's reason holds
    loop.run_until(T0 + 10)
    assert relative(inner.received) == [(0.0, 1000), (5.0, 1000), (6.0, 1000)]
    assert real.calls == ["pause_reading", "resume_reading"]
    # And the other way round: the rate ends first, the protocol's pause keeps the transport paused.
    loop.now = T0 + 20
    shim.data_received(b"b" * 1500)
    inner.transport.pause_reading()
    loop.run_until(T0 + 30)
    assert not real.reading and inner.received[-1] == (T0 + 20, 1000)
    inner.transport.resume_reading()
    loop.run_until(T0 + 40)
    assert inner.received[-1] == (T0 + 30, 500) and real.reading
    inner.transport.resume_reading()  # a resume it did not pause for changes nothing
    assert real.calls.count("resume_reading") == 2


def test_writes_beyond_the_bucket_are_held_and_the_protocol_paused_until_they_went() -> None:
    _, loop, real, inner = connected(2048)
    t = inner.transport
    t.write(b"r" * 1024)
    assert relative(real.written) == [(0.0, 1024)] and inner.told == []
    t.writelines([b"r" * 4096, b"r" * 3072])  # 1024 go now, 6144 are held
    assert relative(real.written) == [(0.0, 1024), (0.0, 1024)] and inner.told == ["pause_writing"]
    assert t.get_write_buffer_size() == 6144
    loop.now = T0 + 0.5
    t.write(b"r" * 100)  # written while paused (a later request's response): held, and told again
    assert inner.told == ["pause_writing", "pause_writing"] and len(real.written) == 2
    loop.run_until(T0 + 10)
    assert relative(real.written[:5]) == [(0.0, 1024), (0.0, 1024), (1.0, 2048), (2.0, 2048), (3.0, 2048)]
    assert relative(real.written[5:]) == [(3.048828, 100)]  # 100 bytes at 2048/s: 48.8 ms
    assert inner.told == ["pause_writing", "pause_writing", "resume_writing"]
    assert t.get_write_buffer_size() == 0


def test_a_full_write_buffer_and_the_rate_make_one_pause_and_one_resume() -> None:
    shim, loop, real, inner = connected(1000)
    t = inner.transport
    shim.pause_writing()  # the real transport's buffer is full
    assert inner.told == ["pause_writing"]
    t.write(b"w" * 1500)  # it wrote anyway (what it had read): 500 held
    loop.run_until(T0 + 5)  # the held bytes went: the full buffer still holds the protocol
    assert relative(real.written) == [(0.0, 1000), (0.5, 500)]
    assert inner.told == ["pause_writing", "pause_writing"]  # the rate said so too, and nobody resumed
    shim.resume_writing()
    assert inner.told[-1] == "resume_writing" and inner.told.count("resume_writing") == 1
    # The rate first, then the full buffer, then the rate is paid: resumed only by the last.
    loop.now = T0 + 10
    t.write(b"w" * 2000)
    shim.pause_writing()
    shim.resume_writing()
    assert inner.told.count("resume_writing") == 1
    loop.run_until(T0 + 20)
    assert inner.told.count("resume_writing") == 2


def test_close_waits_for_the_held_bytes_abort_does_not() -> None:
    shim, loop, real, inner = connected(1000)
    t = inner.transport
    t.write(b"c" * 2500)
    t.close()
    assert t.is_closing() and "close" not in real.calls
    assert not real.reading  # a closed transport reads no more
    shim.data_received(b"late")
    t.write(b"dropped")  # after close(): dropped, as by a closing transport
    assert inner.received == []
    loop.run_until(T0 + 10)
    assert relative(real.written) == [(0.0, 1000), (1.0, 1000), (1.5, 500)] and real.calls[-1] == "close"
    assert "resume_writing" not in inner.told

    shim, loop, real, inner = connected(1000)
    inner.transport.write(b"c" * 2500)
    shim.data_received(b"d" * 2500)
    inner.transport.abort()
    assert real.calls[-1] == "abort" and loop.pending() == []


def test_write_eof_and_the_clients_eof_wait_for_the_held_bytes() -> None:
    shim, loop, real, inner = connected(1000, Inner(keep_open=True))
    inner.transport.write(b"e" * 1500)
    inner.transport.write_eof()
    assert "write_eof" not in real.calls
    shim.data_received(b"f" * 1200)
    assert shim.eof_received() is True and inner.told == ["pause_writing"]  # EOF after the held 200
    loop.run_until(T0 + 0.4)  # 500 bytes still held
    assert "write_eof" not in real.calls and inner.told[-1] == "eof"
    loop.run_until(T0 + 5)
    assert real.calls.count("write_eof") == 1
    assert relative(inner.received) == [(0.0, 1000), (0.2, 200)] and inner.told.count("eof") == 1
    assert relative(real.written) == [(0.0, 1000), (0.5, 500)]

    shim, loop, real, inner = connected(1000)  # a protocol that closes on EOF
    shim.data_received(b"f" * 1200)
    shim.eof_received()
    loop.run_until(T0 + 5)
    assert inner.told == ["eof"] and real.calls[-1] == "close"


def test_after_the_connection_is_lost_no_timer_fires() -> None:
    shim, loop, _, inner = connected(1000)
    shim.data_received(b"g" * 5000)
    inner.transport.write(b"h" * 5000)
    assert len(loop.pending()) == 2
    shim.connection_lost(None)
    assert loop.pending() == [] and inner.told[-1] == "lost"
    inner.transport.write(b"i")  # a protocol finishing up writes into nothing
    assert inner.transport.is_closing()


def test_set_protocol_changes_the_protocol_and_keeps_the_throttle() -> None:
    shim, loop, _, inner = connected(1000)
    other = Inner()
    other.loop = loop
    inner.transport.set_protocol(other)
    assert inner.transport.get_protocol() is other
    shim.data_received(b"j" * 1500)
    loop.run_until(T0 + 5)
    assert relative(other.received) == [(0.0, 1000), (0.5, 500)] and inner.received == []
    assert inner.transport.get_extra_info("peername") == ("127.0.0.9", 4242)
