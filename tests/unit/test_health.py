"""fsmfast.resilience.health: endpoint health in a real arena, passive and active, and the one
transition a machine reports when several processes see the last failure at once (issue 19)."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator

import pytest

from fsmfast.resilience.health import FOREVER, HEALTH_CELLS, EndpointHealth
from fsmfast.shared.arena import USING_EXTENSION, Arena
from fsmfast.snapshot import HealthCheck
from tests.support.forks import fork as _fork

GO = 0  # the cell forked children wait on
TALLY = 1  # the cell they add their reported transitions to
FIRST = 8  # the first endpoint's base: bases need not start at 0


@pytest.fixture
def arena() -> Iterator[Arena]:
    arena = Arena(2, 1, 64)
    try:
        yield arena
    finally:
        arena.close()


def _policy(max_fails: int = 3, fail_timeout: int | None = None) -> HealthCheck:
    return HealthCheck(policy="ns/hc", interval=1, max_fails=max_fails, fail_timeout=fail_timeout)


def _health(arena: Arena, policy: HealthCheck, n: int = 2) -> EndpointHealth:
    return EndpointHealth(arena.cells, tuple(FIRST + k * HEALTH_CELLS for k in range(n)), policy)


def test_passive_failures_take_an_endpoint_out_until_a_probe_passes(arena: Arena) -> None:
    health = _health(arena, _policy(max_fails=3))
    now = 1_000_000
    assert health.usable(0, now) and health.usable(1, now)
    assert health.failed(0, now) is False
    assert health.failed(0, now) is False
    assert health.usable(0, now)
    assert health.failed(0, now) is True  # the third one
    assert not health.usable(0, now) and not health.usable(0, now + 10**9)
    assert health.out_until(0) == FOREVER
    assert health.usable(1, now), "the other endpoint's words are its own"
    assert health.failed(0, now) is False, "already out: no second transition"
    assert health.probed(0, False, now) == 0
    assert health.probed(0, True, now) == 1  # back after one success
    assert health.usable(0, now) and health.failures(0) == 0
    assert health.probed(0, True, now) == 0


def test_a_success_resets_the_consecutive_count(arena: Arena) -> None:
    health = _health(arena, _policy(max_fails=2))
    now = 5_000
    assert health.failed(1, now) is False
    health.succeeded(1)
    assert health.failures(1) == 0
    assert health.failed(1, now) is False, "not consecutive: the success in between reset the count"
    assert health.failed(1, now) is True
    health.succeeded(0)  # nothing to reset: no write, nothing changes
    assert health.failures(0) == 0 and health.usable(0, now)


def test_fail_timeout_puts_it_back_and_one_more_failure_takes_it_out_again(arena: Arena) -> None:
    health = _health(arena, _policy(max_fails=2, fail_timeout=10))
    now = 1_000_000
    health.failed(0, now)
    assert health.failed(0, now) is True
    assert health.out_until(0) == now + 10_000
    assert not health.usable(0, now + 9_999)
    assert health.usable(0, now + 10_000)
    # nginx: after fail_timeout the endpoint is tried again, and its count still stands.
    later = now + 12_000
    assert health.failed(0, later) is True
    assert health.out_until(0) == later + 10_000
    # A success after the timeout resets the count: two failures are needed again.
    health.succeeded(0)
    again = later + 20_000
    assert health.failed(0, again) is False and health.usable(0, again)


def test_active_failures_take_it_out_for_good_even_over_a_passive_timeout(arena: Arena) -> None:
    health = _health(arena, _policy(max_fails=2, fail_timeout=10))
    now = 1_000_000
    assert health.probed(0, False, now) == 0
    assert health.probed(0, False, now) == -1
    assert health.out_until(0) == FOREVER and not health.usable(0, now + 60_000)
    assert health.probed(0, True, now) == 1
    # Out passively (10 s), then failing probes: still out, no second transition, and no return
    # when the 10 s are up. Probes count apart from requests: one failed probe is not enough.
    health.failed(1, now)
    assert health.failed(1, now) is True
    assert health.probed(1, False, now + 1) == 0
    assert health.out_until(1) == now + 10_000
    assert health.probed(1, False, now + 2) == 0
    assert not health.usable(1, now + 20_000)
    assert health.probed(1, True, now + 20_000) == 1


def test_a_passing_probe_after_the_timeout_is_no_transition(arena: Arena) -> None:
    health = _health(arena, _policy(max_fails=1, fail_timeout=1))
    assert health.failed(0, 1000) is True
    assert health.usable(0, 2000)
    assert health.probed(0, True, 2000) == 0, "it was already back: nothing to report"
    assert health.out_until(0) == 0


def test_max_fails_zero_never_takes_an_endpoint_out(arena: Arena) -> None:
    health = _health(arena, _policy(max_fails=0))
    now = 1000
    for _ in range(5):
        assert health.failed(0, now) is False
        assert health.probed(0, False, now) == 0
    assert health.usable(0, now) and health.failures(0) == 0
    # Left out by an earlier policy with max_fails > 0: usable all the same.
    strict = _health(arena, _policy(max_fails=1))
    assert strict.failed(1, now) is True and not strict.usable(1, now)
    assert health.usable(1, now)


def _reap(pids: list[int], timeout: float = 30.0) -> list[int]:
    """Exit statuses; children still running after ``timeout`` (a failed parent stops advancing
    the rounds they wait on) are killed, so none outlives the test."""
    deadline = time.monotonic() + timeout
    statuses: dict[int, int] = {}
    while len(statuses) < len(pids) and time.monotonic() < deadline:
        for pid in pids:
            if pid not in statuses:
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    statuses[pid] = status
        time.sleep(0.005)
    for pid in pids:
        if pid not in statuses:
            os.kill(pid, signal.SIGKILL)
            statuses[pid] = os.waitpid(pid, 0)[1]
    return [statuses[pid] for pid in pids]


@pytest.mark.parametrize("fail_timeout", [None, 3600])
def test_racing_processes_report_exactly_one_transition(arena: Arena, fail_timeout: int | None) -> None:
    """Two processes (as many as the test machine has cores) fail the same endpoint at the same
    instant, several times each, round after round, a probe bringing it back in between: each
    round it goes out once, and exactly one call on the machine says it took it out. With
    ``max_fails`` 1 both see the endpoint in and both cross the count, so a plain store in place
    of the compare-and-swap reports two transitions in many rounds."""
    rounds = 200 if USING_EXTENSION else 50
    processes = 2
    policy = _policy(max_fails=1, fail_timeout=fail_timeout)
    health = _health(arena, policy, 1)
    now = int(time.monotonic() * 1000)
    done = GO + 2

    def hammer() -> None:
        mine = EndpointHealth(arena.cells, health.bases, policy)
        for r in range(1, rounds + 1):
            while arena.cells.load(GO) < r:
                pass  # spin, not yield: both must start at the same instant
            arena.cells.add(TALLY, sum(mine.failed(0, now) for _ in range(4)))
            arena.cells.add(done, 1)

    pids = [_fork(hammer) for _ in range(processes)]
    reports = []
    try:
        for r in range(1, rounds + 1):
            arena.cells.store(GO, r)
            deadline = time.monotonic() + 30
            while arena.cells.load(done) < r * processes:
                assert time.monotonic() < deadline, "the children stopped"
                os.sched_yield()
            reports.append(arena.cells.load(TALLY) - sum(reports))
            assert not health.usable(0, now)
            assert health.probed(0, True, now) == 1
    finally:
        statuses = _reap(pids)
    assert statuses == [0] * processes
    assert reports == [1] * rounds, f"{sum(n != 1 for n in reports)} of {rounds} rounds reported {set(reports)}"


def test_requests_that_succeed_do_not_hide_failing_probes(arena: Arena) -> None:
    # An application whose health check says it is draining while its requests still succeed.
    health = _health(arena, _policy(max_fails=2))
    now = 1_000_000
    assert health.probed(0, False, now) == 0
    health.succeeded(0)
    assert health.probed(0, False, now + 1000) == -1
    assert not health.usable(0, now + 2000)
    # And a passing probe does not hide failing requests either: they count on their own.
    health.failed(0, now)
    assert health.probed(0, True, now + 3000) == 1
    assert health.failed(0, now + 3001) is False and health.failed(0, now + 3002) is True
