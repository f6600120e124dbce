"""fsmfast.resilience.retry: the retry plan's numbers and the machine-wide retry budget.

The budget runs over a real arena, with the compiled atomics and, with FSMFAST_NO_EXTENSIONS=1,
their pure-Python twin; times are injected.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from fsmfast.resilience.retry import BUDGET_CELLS, Budget, RetryPlan
from fsmfast.shared.arena import USING_EXTENSION, Arena
from fsmfast.snapshot import Retry
from tests.support.forks import fork as _fork
from tests.support.forks import reap as _reap

T0 = 7000.0


@pytest.fixture
def arena() -> Iterator[Arena]:
    arena = Arena(workers=2, slots=1, cells=2 + 3 * BUDGET_CELLS)
    yield arena
    arena.close()


def test_attempts_and_name() -> None:
    assert RetryPlan(Retry("HTTPRoute ns/r spec.rules[0].retry", ("503",)), None).attempts == 1  # Envoy's default
    plan = RetryPlan(Retry("RetryPolicy ns/p", ("5xx",), attempts=3, backoff=1.0), None)
    assert (plan.attempts, plan.name, plan.budget) == (3, "RetryPolicy ns/p", None)


def test_retriable_statuses() -> None:
    five = RetryPlan(Retry("p", ("5xx",)), None)
    assert [five.retriable(s) for s in (500, 503, 599, 499, 429, 200, 600, 0)] == [True] * 3 + [False] * 4 + [True]
    exact = RetryPlan(Retry("p", ("503", "429")), None)
    assert [exact.retriable(s) for s in (503, 429, 500, 502, 0)] == [True, True, False, False, True]
    both = RetryPlan(Retry("p", ("5xx", "409")), None)
    assert [both.retriable(s) for s in (409, 504, 404)] == [True, True, False]
    # The exchange asks ``retriable`` only from ``floor`` up: nothing below it may be retriable.
    assert (five.floor, exact.floor, both.floor) == (500, 429, 409)
    for plan in (five, exact, both):
        assert not any(plan.retriable(s) for s in range(1, plan.floor))


@pytest.mark.parametrize("backoff", [None, 0.1, 2.0])
def test_delay_grows_from_the_base_with_jitter_and_a_cap(backoff: float | None) -> None:
    plan = RetryPlan(Retry("p", ("5xx",), attempts=10, backoff=backoff), None)
    base = 0.025 if backoff is None else backoff
    for n in range(1, 11):
        floor = min(10 * base, base * 2 ** (n - 1))
        delays = [plan.delay(n) for _ in range(400)]
        assert all(floor <= d < 1.5 * floor for d in delays), (n, min(delays), max(delays))
        assert min(delays) >= base  # Gateway API: the backoff is the minimum
        assert max(delays) - min(delays) > 0.3 * floor  # jittered, across half the range
    assert plan.delay(1000) < 15 * base


def test_the_minimum_rate_allows_ten_retries_a_second_whatever_the_share(arena: Arena) -> None:
    budget = Budget(arena.cells, 2)
    assert [budget.allow(T0 + 0.5) for _ in range(11)] == [True] * 10 + [False]  # no requests at all
    assert budget.counts(T0 + 0.5) == (0, 10)
    assert budget.allow(T0 + 0.99) is False
    assert [budget.allow(T0 + 1) for _ in range(11)] == [True] * 10 + [False]  # the next second
    assert budget.counts(T0 + 1) == (0, 20)


def test_twenty_percent_of_the_requests_of_the_last_ten_seconds(arena: Arena) -> None:
    budget = Budget(arena.cells, 2 + BUDGET_CELLS)
    for _ in range(100):
        budget.request(T0)
    # 20 % of 100: 20 retries in all, the first ten of them the minimum rate's.
    assert [budget.allow(T0) for _ in range(21)] == [True] * 20 + [False]
    for _ in range(50):
        budget.request(T0 + 4)
    assert budget.counts(T0 + 4) == (150, 20)
    # 10 more on the minimum rate (a new second), then the budget's: 30 of 150.
    assert [budget.allow(T0 + 4) for _ in range(11)] == [True] * 10 + [False]
    assert budget.counts(T0 + 4) == (150, 30)
    # T0's requests and retries leave the window at T0 + 10: 50 requests, 10 retries left in it.
    assert budget.counts(T0 + 9.99) == (150, 30)
    assert budget.counts(T0 + 10) == (50, 10)
    assert [budget.allow(T0 + 10) for _ in range(11)] == [True] * 10 + [False]  # 20 of 50: minimum rate too
    assert budget.counts(T0 + 14) == (0, 10)  # only the retries of T0 + 10 are still in


def test_requests_handed_over_in_a_batch_count_as_many(arena: Arena) -> None:
    # A worker's tick hands over the requests it counted since the last one.
    budget = Budget(arena.cells, 2)
    budget.request(T0, 100)
    budget.request(T0, 50)
    assert budget.counts(T0) == (150, 0)
    assert [budget.allow(T0) for _ in range(31)] == [True] * 30 + [False]


def test_budgets_are_per_backend(arena: Arena) -> None:
    a, b = Budget(arena.cells, 2), Budget(arena.cells, 2 + BUDGET_CELLS)
    for _ in range(10):
        assert a.allow(T0)
    assert not a.allow(T0)
    assert b.allow(T0)
    with pytest.raises(ValueError, match="outside the arena"):
        Budget(arena.cells, len(arena.cells) - BUDGET_CELLS + 1)


PROCESSES = 2  # the machine's cores: they spin at a barrier
BUDGETS = 100 if USING_EXTENSION else 30
GO = 0
GRANTED = 1


def test_the_budget_is_exact_across_processes() -> None:
    """Processes asking at the same instants get exactly the budget between them: 20 % of the
    requests counted, the first ten on the minimum rate. Over many budgets, for many close calls."""
    arena = Arena(workers=1, slots=1, cells=2 + BUDGETS * BUDGET_CELLS)
    try:
        budgets = [Budget(arena.cells, 2 + k * BUDGET_CELLS) for k in range(BUDGETS)]
        for budget in budgets:
            for _ in range(100):
                budget.request(T0)

        def ask() -> None:
            for k, budget in enumerate(budgets):
                arena.cells.add(GO, 1)  # all start on each budget together: a barrier
                while arena.cells.load(GO) < PROCESSES * (k + 1):
                    pass
                for _ in range(18):  # 36 asked of each budget, 20 granted
                    if budget.allow(T0):
                        arena.cells.add(GRANTED, 1)

        pids = [_fork(ask) for _ in range(PROCESSES)]
        assert [_reap(pid) for pid in pids] == [0] * PROCESSES
        assert arena.cells.load(GRANTED) == 20 * BUDGETS
        assert {budget.counts(T0) for budget in budgets} == {(100, 20)}
    finally:
        arena.close()
