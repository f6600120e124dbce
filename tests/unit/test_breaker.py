"""fsmfast.resilience.breaker: FSM's CircuitBreakingPolicy over the machine-wide arena.

Times are injected (``now``) except where the request-path hook reads the clock itself. Runs over
the compiled atomics and, with FSMFAST_NO_EXTENSIONS=1, over their pure-Python twin.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

import pytest

from fsmfast.pipeline.decision import LocalReply
from fsmfast.resilience.breaker import BREAKER_CELLS, DEFAULT_TEXT, Breaker
from fsmfast.shared.arena import USING_EXTENSION, Arena
from fsmfast.snapshot import CircuitBreaker
from tests.support.forks import fork as _fork
from tests.support.forks import reap as _reap

T0 = 5000.0  # an injected monotonic time, on a bucket boundary for windows of whole seconds


@pytest.fixture
def arena() -> Iterator[Arena]:
    arena = Arena(workers=2, slots=1, cells=4 + 32 * BREAKER_CELLS)
    yield arena
    arena.close()


def policy(**kw: Any) -> CircuitBreaker:
    fields: dict[str, Any] = {
        "policy": "CircuitBreakingPolicy ns/cb",
        "min_request_amount": 5,
        "stat_time_window": 10,
        "degraded_time_window": 30,
    }
    fields.update(kw)
    return CircuitBreaker(**fields)


def breaker(arena: Arena, base: int = 4, **kw: Any) -> Breaker:
    return Breaker(arena.cells, base, policy(**kw), "ns/svc:80")


def test_error_count_opens_at_the_threshold_and_the_next_request_is_degraded(
    arena: Arena, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "fsmfast.proxy")
    b = breaker(arena, error_amount_threshold=5)
    now = time.monotonic()
    assert [b.record(500, 0.01, now) for _ in range(4)] == [None] * 4
    assert b(None) is None and not b.is_open(now)
    assert b.record(502, 0.01, now) == "open"
    assert b.is_open(now) and b.is_open(now + 29.9) and not b.is_open(now + 30)
    reply = b(None)
    assert isinstance(reply, LocalReply)
    assert (reply.status, reply.text, reply.code) == (503, DEFAULT_TEXT, "circuit_open")
    assert "ns/svc:80" not in reply.text and reply.detail is not None and "ns/svc:80" in reply.detail
    # What requests sent before it opened report while it is open is not counted, and opens nothing.
    assert b.record(500, 0.01, now + 1) is None
    assert b.counts(now + 1) == (0, 0, 0)  # the window restarted when it opened
    [message] = [r.getMessage() for r in caplog.records]
    assert message == (
        "circuit breaker of backend ns/svc:80 opened for 30s: 5 errors of 5 requests in 10s "
        "(errorAmountThreshold 5) (CircuitBreakingPolicy ns/cb)"
    )


def test_what_counts_as_an_error(arena: Arena) -> None:
    b = breaker(arena, min_request_amount=1, error_amount_threshold=3)
    for status in (200, 404, 499, 429, 101):
        assert b.record(status, 0.0, T0) is None
    assert b.counts(T0) == (5, 0, 0)
    assert b.record(0, 0.0, T0) is None  # no response at all: refused, reset, timed out
    assert b.record(599, 0.0, T0) is None
    assert b.record(500, 0.0, T0) == "open"


def test_min_request_amount_gates_every_threshold(arena: Arena) -> None:
    b = breaker(arena, min_request_amount=10, error_amount_threshold=3)
    assert [b.record(503, 0.0, T0) for _ in range(3)] == [None] * 3
    assert [b.record(200, 0.0, T0) for _ in range(6)] == [None] * 6  # 9 requests: below the minimum
    assert b.counts(T0) == (9, 3, 0)
    assert b.record(200, 0.0, T0) == "open"  # the tenth, a success, reaches it with 3 errors in


def test_error_ratio(arena: Arena) -> None:
    b = breaker(arena, base=4, min_request_amount=4, error_ratio_threshold=0.5)
    assert [b.record(s, 0.0, T0) for s in (200, 500, 200)] == [None] * 3
    assert b.record(200, 0.0, T0) is None  # 1 of 4
    assert b.record(500, 0.0, T0) is None  # 2 of 5
    assert b.record(500, 0.0, T0) == "open"  # 3 of 6
    # 3 of 10 against 0.3, which 0.3 * 10 in floating point would miss.
    c = breaker(arena, base=4 + BREAKER_CELLS, min_request_amount=10, error_ratio_threshold=0.3)
    assert [c.record(s, 0.0, T0) for s in [200] * 7 + [500] * 2] == [None] * 9
    assert c.record(500, 0.0, T0) == "open"
    # A ratio of 0 is no threshold (as in FSM), not "always open".
    d = breaker(arena, base=4 + 2 * BREAKER_CELLS, min_request_amount=1, error_ratio_threshold=0.0)
    assert [d.record(500, 0.0, T0) for _ in range(20)] == [None] * 20


def test_slow_thresholds(arena: Arena) -> None:
    b = breaker(arena, base=4, min_request_amount=3, slow_time_threshold=1.5, slow_amount_threshold=2)
    assert b.record(200, 1.49, T0) is None
    assert b.record(500, 1.5, T0) is None  # slow (an error too, but no error threshold is set)
    assert b.counts(T0) == (2, 0, 1)
    assert b.record(200, 3.0, T0) == "open"
    ratio = breaker(
        arena, base=4 + BREAKER_CELLS, min_request_amount=4, slow_time_threshold=0.2, slow_ratio_threshold=0.75
    )
    assert [ratio.record(200, s, T0) for s in (0.3, 0.1, 0.3)] == [None] * 3  # 2 of 3: too few requests
    assert ratio.record(200, 0.1, T0) is None  # 2 of 4
    assert [ratio.record(200, 0.5, T0) for _ in range(3)] == [None] * 3  # 3 of 5, 4 of 6, 5 of 7
    assert ratio.record(200, 0.5, T0) == "open"  # 6 of 8 = 0.75
    # A slow threshold without slowTimeThreshold: FSM's own 5 s.
    fallback = breaker(arena, base=4 + 2 * BREAKER_CELLS, min_request_amount=1, slow_amount_threshold=1)
    assert fallback.record(200, 4.99, T0) is None
    assert fallback.record(200, 5.0, T0) == "open"
    # slowTimeThreshold alone opens nothing, and errors do not count as slow.
    neither = breaker(arena, base=4 + 3 * BREAKER_CELLS, min_request_amount=1, slow_time_threshold=0.1)
    assert [neither.record(500, 9.0, T0) for _ in range(10)] == [None] * 10


def test_configured_content_is_the_answer(arena: Arena) -> None:
    b = breaker(
        arena,
        min_request_amount=1,
        error_amount_threshold=1,
        degraded_status_code=409,
        degraded_response_content="Coming soon ...",
    )
    assert b.record(500, 0.0, time.monotonic()) == "open"
    reply = b(None)
    assert reply is not None and (reply.status, reply.text, reply.detail) == (409, "Coming soon ...", None)


def test_the_degraded_period_ends_once_and_counting_starts_afresh(
    arena: Arena, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "fsmfast.proxy")
    b = breaker(arena, min_request_amount=2, error_amount_threshold=2, degraded_time_window=3)
    assert [b.record(500, 0.0, T0) for _ in range(2)] == [None, "open"]
    assert b.is_open(T0 + 2.999)
    assert b.record(500, 0.0, T0 + 2.999) is None
    # The first request to end after the period sees it closed (and is counted, in a fresh window:
    # the two errors that opened it are still inside statTimeWindow but no longer count).
    assert b.record(500, 0.0, T0 + 3) == "closed"
    assert not b.is_open(T0 + 3)
    assert b.counts(T0 + 3) == (1, 1, 0)
    assert b.record(200, 0.0, T0 + 3.5) is None  # only one caller is told
    assert b.record(500, 0.0, T0 + 4) == "open"  # 2 errors of 3 since it closed
    assert b.record(500, 0.0, T0 + 7) == "closed"
    assert b.transitions() == (2, 2)
    assert [r.getMessage().split(":")[0] for r in caplog.records] == [
        "circuit breaker of backend ns/svc",
        "circuit breaker of backend ns/svc",
        "circuit breaker of backend ns/svc",
        "circuit breaker of backend ns/svc",
    ]
    assert ["opened" in r.getMessage() for r in caplog.records] == [True, False, True, False]
    assert "closed after 3s degraded" in caplog.records[1].getMessage()


def test_the_hook_reads_the_clock(arena: Arena) -> None:
    b = breaker(arena, min_request_amount=1, error_amount_threshold=1, degraded_time_window=1)
    past = time.monotonic() - 5  # opened 5 s ago for 1 s: over by now
    assert b(None) is None
    assert b.record(500, 0.0, past) == "open"
    assert b.is_open(past) and b(None) is None
    b2 = breaker(arena, base=4 + BREAKER_CELLS, min_request_amount=1, error_amount_threshold=1)
    assert b2.record(500, 0.0, time.monotonic()) == "open"
    assert b2(None) is not None and b(None) is None  # each backend its own words


def test_the_window_slides_and_old_counts_expire(arena: Arena) -> None:
    b = breaker(arena, base=4, error_amount_threshold=5, min_request_amount=1)
    for k in range(4):
        assert b.record(500, 0.0, T0 + k) is None  # 4 errors at T0, T0+1, T0+2, T0+3
    assert b.counts(T0 + 9.99) == (4, 4, 0)
    assert b.counts(T0 + 10) == (3, 3, 0)  # the bucket of T0 left the window
    assert b.counts(T0 + 13.5) == (0, 0, 0)
    assert b.record(500, 0.0, T0 + 10) is None  # 3 + 1: the first error no longer counts
    assert b.record(500, 0.0, T0 + 10.5) == "open"
    # Long idle: every bucket is stale (words from far older epochs in the same places).
    c = breaker(arena, base=4 + BREAKER_CELLS, min_request_amount=1, error_amount_threshold=2, stat_time_window=1)
    assert c.record(500, 0.0, T0) is None
    assert c.counts(T0 + 0.999) == (1, 1, 0)
    assert c.counts(T0 + 1.0) == (0, 0, 0)  # 100 ms buckets for a 1 s window
    assert c.record(500, 0.0, T0 + 100.0) is None  # the same ring place, 1000 buckets later
    assert c.counts(T0 + 100.0) == (1, 1, 0)


def test_counts_are_the_machines_across_processes(arena: Arena) -> None:
    b = breaker(arena, error_amount_threshold=5)

    def two_errors() -> None:
        assert b.record(500, 0.0, T0) is None

    for pid in [_fork(two_errors), _fork(two_errors)]:
        assert _reap(pid) == 0
    for pid in [_fork(two_errors), _fork(two_errors)]:
        assert _reap(pid) == 0
    assert b.counts(T0) == (4, 4, 0)  # 4 errors from 4 processes: below 5
    assert b.record(500, 0.0, T0) == "open"  # the fifth, from this one


ROUNDS = 400 if USING_EXTENSION else 60
PROCESSES = 3
BREAKERS = 16
GO = 0  # cell the children wait on
OPENED = 1  # cell counting "open" answers (each breaker's own below)


def test_exactly_one_process_is_told_it_opened(arena: Arena) -> None:
    """Several processes record errors at once into many breakers: each opens exactly once, at its
    threshold, and exactly one process hears "open" for it."""
    threshold = PROCESSES * ROUNDS // 3
    base = 4
    breakers = [
        Breaker(
            arena.cells,
            base + k * BREAKER_CELLS,
            policy(min_request_amount=1, error_amount_threshold=threshold),
            f"b{k}",
        )
        for k in range(BREAKERS)
    ]
    counter = Breaker(  # never opens: its counts must be exact
        arena.cells, base + BREAKERS * BREAKER_CELLS, policy(min_request_amount=1, error_amount_threshold=10**6), "c"
    )
    tally = base + (BREAKERS + 1) * BREAKER_CELLS  # spare cells after the breakers: "open" per breaker
    assert tally + BREAKERS <= len(arena.cells)

    def hammer() -> None:
        while arena.cells.load(GO) == 0:
            pass
        for i in range(ROUNDS):
            for k, b in enumerate(breakers):
                if b.record(500, 0.0, T0) == "open":
                    arena.cells.add(tally + k, 1)
            counter.record(500 if i % 2 else 200, 0.0, T0)

    pids = [_fork(hammer) for _ in range(PROCESSES)]
    arena.cells.store(GO, 1)
    assert [_reap(pid) for pid in pids] == [0] * PROCESSES
    assert [arena.cells.load(tally + k) for k in range(BREAKERS)] == [1] * BREAKERS
    assert all(b.is_open(T0) for b in breakers)
    assert {b.transitions() for b in breakers} == {(1, 0)}
    assert counter.counts(T0) == (PROCESSES * ROUNDS, PROCESSES * ROUNDS // 2, 0)


def test_breaker_cells_must_fit(arena: Arena) -> None:
    with pytest.raises(ValueError, match="outside the arena"):
        breaker(arena, base=len(arena.cells) - BREAKER_CELLS + 1)
    breaker(arena, base=len(arena.cells) - BREAKER_CELLS)
