"""fsmfast.edge.throttle: the byte-rate throttle's arithmetic over simulated time (issue 20).

A simulated transport writes what it read and, when told to pause, resumes reading exactly that many
seconds later, as the data plane's ``pause_reading``/``call_later(resume_reading)`` will.
"""

from __future__ import annotations

import random

import pytest

from fsmfast.edge.throttle import ByteRate

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
