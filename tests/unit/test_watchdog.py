"""The watchdog's decision (fsmfast.master.watchdog): when a worker is hung, and what then."""

from __future__ import annotations

import pytest

from fsmfast.master.watchdog import BOOT_TIMEOUT, KILL_GRACE, Verdict, check, silence


def test_a_beating_worker_is_alive() -> None:
    assert check(now=100.0, born=0.0, ready_at=10.0, heartbeat=99.8, aborted_at=0.0, timeout=30.0) is Verdict.ALIVE


def test_silence_beyond_the_timeout_aborts() -> None:
    assert check(now=100.0, born=0.0, ready_at=10.0, heartbeat=69.9, aborted_at=0.0, timeout=30.0) is Verdict.ABORT
    assert check(now=100.0, born=0.0, ready_at=10.0, heartbeat=70.1, aborted_at=0.0, timeout=30.0) is Verdict.ALIVE


def test_the_clock_starts_at_ready_not_before() -> None:
    # Ready 1 s ago, never beat since (the first tick is 0.25 s away): not hung.
    assert check(now=100.0, born=0.0, ready_at=99.0, heartbeat=0.0, aborted_at=0.0, timeout=2.0) is Verdict.ALIVE
    assert check(now=100.0, born=0.0, ready_at=97.0, heartbeat=0.0, aborted_at=0.0, timeout=2.0) is Verdict.ABORT


def test_booting_gets_the_boot_timeout() -> None:
    booting = {"born": 0.0, "ready_at": 0.0, "heartbeat": 0.0, "aborted_at": 0.0, "timeout": 1.0}
    assert check(now=BOOT_TIMEOUT - 1, **booting) is Verdict.ALIVE
    assert check(now=BOOT_TIMEOUT + 1, **booting) is Verdict.ABORT
    # A timeout longer than the boot timeout is the boot timeout too.
    assert check(now=90.0, born=0.0, ready_at=0.0, heartbeat=0.0, aborted_at=0.0, timeout=120.0) is Verdict.ALIVE


@pytest.mark.parametrize("timeout", [1.0, 30.0])
def test_an_aborted_worker_is_killed_after_the_grace(timeout: float) -> None:
    grace = min(KILL_GRACE, timeout)
    aborted = 50.0
    args = {"born": 0.0, "ready_at": 1.0, "heartbeat": 2.0, "timeout": timeout, "aborted_at": aborted}
    assert check(now=aborted + grace - 0.1, **args) is Verdict.ALIVE
    assert check(now=aborted + grace, **args) is Verdict.KILL


def test_silence_counts_from_the_last_sign_of_life() -> None:
    assert silence(now=10.0, ready_at=2.0, heartbeat=7.5) == 2.5
    assert silence(now=10.0, ready_at=4.0, heartbeat=0.0) == 6.0
