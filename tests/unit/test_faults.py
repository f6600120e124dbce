"""fsmfast.edge.faults: a fault plan's decision per request (issue 20).

Draws come from a seeded ``random.Random`` or a scripted sequence, so every count below is the same on
every run: the statistical bounds are checked once, on fixed draws, and cannot flake.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterable

import pytest

from fsmfast.edge.faults import Fault, FaultPlan, seconds

N = 10_000


def scripted(values: Iterable[float]) -> Callable[[], float]:
    it = iter(values)
    return lambda: next(it)


def no_draw() -> float:
    raise AssertionError("a percent of 0 or 100 must not draw")


def test_units_are_converted_exactly() -> None:
    assert seconds(300) == 0.3  # milliseconds by default, divided (0.3, not 0.30000000000000004)
    assert seconds(1500, "ms") == 1.5
    assert seconds(2, "s") == 2.0
    assert seconds(3, "m") == 180.0
    assert seconds(2, "h") == 7200.0  # FSM's script reads h as milliseconds
    assert seconds(1, "d") == 86400.0  # and d too
    assert seconds(0) == 0.0


def test_the_delay_unit_falls_back_to_the_policy_unit_then_milliseconds() -> None:
    assert seconds(5, None, "s") == 5.0
    assert seconds(5, "m", "s") == 300.0  # the delay's own unit wins
    assert seconds(5, None, None) == 0.005
    assert seconds(5, "", "h") == 18000.0


@pytest.mark.parametrize(("amount", "unit"), [(1, "us"), (1, "S"), (1, "min"), (-1, "ms"), (-5, "s")])
def test_bad_units_and_negative_delays_are_refused(amount: int, unit: str) -> None:
    with pytest.raises(ValueError):
        seconds(amount, unit)


def test_zero_percent_never_fires_and_never_draws() -> None:
    plan = FaultPlan(delay_percent=0, delay_fixed=1.0, abort_percent=0, status=503)
    assert not plan.armed
    assert all(plan.decide(no_draw) is None for _ in range(1000))
    assert plan.decide() is None


def test_hundred_percent_always_fires_and_never_draws() -> None:
    plan = FaultPlan(delay_percent=100, delay_fixed=0.25, abort_percent=100, status=503, message="boom")
    assert plan.armed
    for _ in range(1000):
        assert plan.decide(no_draw) == Fault(0.25, 503, b"boom")
    assert plan.decide() == Fault(0.25, 503, b"boom")


def test_a_plan_that_cannot_fire_is_not_armed() -> None:
    assert not FaultPlan().armed
    assert not FaultPlan(delay_percent=50).armed  # no delay given
    assert not FaultPlan(delay_percent=50, delay_fixed=0).armed  # FSM: fixed must be above 0
    assert not FaultPlan(delay_percent=100, delay_range=(0, 0)).armed
    assert FaultPlan(delay_percent=1, delay_range=(0, 0.001)).armed
    assert FaultPlan(abort_percent=1, status=500).armed


@pytest.mark.parametrize("percent", [1, 30, 50, 99])
def test_percent_is_a_probability_of_percent_over_100_exactly(percent: int) -> None:
    """Over an even grid of [0, 1), exactly ``percent`` in 100 fire; FSM's ``floor(r*100) <= percent``
    would fire ``percent + 1`` in 100 (and 99 % would always fire)."""
    plan = FaultPlan(abort_percent=percent, status=500)
    fired = sum(plan.decide(scripted([i / N])) is not None for i in range(N))
    assert fired == percent * N // 100
    delay = FaultPlan(delay_percent=percent, delay_fixed=1.0)
    assert sum(delay.decide(scripted([i / N])) is not None for i in range(N)) == percent * N // 100


@pytest.mark.parametrize(("percent", "seed"), [(30, 20), (50, 21)])
def test_percent_holds_within_a_binomial_bound_on_seeded_draws(percent: int, seed: int) -> None:
    rng = random.Random(seed)
    p = percent / 100
    sigma = math.sqrt(N * p * (1 - p))
    abort = FaultPlan(abort_percent=percent, status=503)
    fired = sum(abort.decide(rng.random) is not None for _ in range(N))
    assert abs(fired - N * p) < 3 * sigma, fired
    delay = FaultPlan(delay_percent=percent, delay_range=(0.1, 0.2))
    fired = sum(delay.decide(rng.random) is not None for _ in range(N))
    assert abs(fired - N * p) < 3 * sigma, fired


def test_delay_and_abort_are_drawn_apart() -> None:
    """At 50 % each the four outcomes are equally likely: a chi-square test with 3 degrees of freedom
    (16.27 is its 0.1 % critical value) on seeded draws."""
    rng = random.Random(22)
    plan = FaultPlan(delay_percent=50, delay_fixed=0.5, abort_percent=50, status=500)
    counts = {"none": 0, "delay": 0, "abort": 0, "both": 0}
    for _ in range(N):
        fault = plan.decide(rng.random)
        if fault is None:
            counts["none"] += 1
        elif fault.aborts:
            counts["both" if fault.delay else "abort"] += 1
        else:
            counts["delay"] += 1
    expected = N / 4
    chi2 = sum((c - expected) ** 2 / expected for c in counts.values())
    assert chi2 < 16.27, counts


def test_the_default_random_source_mixes_outcomes() -> None:
    plan = FaultPlan(abort_percent=50, status=500)
    outcomes = {plan.decide() is None for _ in range(200)}
    assert outcomes == {True, False}  # both in 200 draws at 50 %: all but certain (2 ** -199 otherwise)


def test_range_delays_are_uniform_within_min_and_max() -> None:
    plan = FaultPlan(delay_percent=100, delay_range=(0.5, 1.0))
    assert plan.decide(scripted([0.0])) == Fault(0.5)
    assert plan.decide(scripted([0.5])) == Fault(0.75)
    top = plan.decide(scripted([1 - 2**-53]))
    assert top is not None and 0.999 < top.delay <= 1.0
    rng = random.Random(23)
    delays = []
    for _ in range(N):
        fault = plan.decide(rng.random)
        assert fault is not None
        delays.append(fault.delay)
    assert min(delays) >= 0.5 and max(delays) <= 1.0
    assert min(delays) < 0.505 and max(delays) > 0.995  # the whole range is used
    assert abs(sum(delays) / N - 0.75) < 0.005  # mean 0.75, standard error 0.0014
    tenths = [0] * 10  # and evenly: chi-square, 9 degrees of freedom, 0.1 % critical value 27.88
    for d in delays:
        tenths[min(int((d - 0.5) * 20), 9)] += 1
    assert sum((c - N / 10) ** 2 / (N / 10) for c in tenths) < 27.88, tenths


def test_a_range_wins_over_fixed_as_in_fsm() -> None:
    plan = FaultPlan(delay_percent=100, delay_fixed=9.0, delay_range=(1.0, 2.0))
    assert plan.decide(scripted([0.0])) == Fault(1.0)


def test_a_range_of_one_point_is_a_fixed_delay() -> None:
    plan = FaultPlan(delay_percent=100, delay_range=(2.0, 2.0))
    assert plan.decide(no_draw) == Fault(2.0)


def test_delay_and_abort_together_wait_then_abort() -> None:
    plan = FaultPlan(delay_percent=100, delay_fixed=0.1, abort_percent=100, status=504, message="late")
    fault = plan.decide(no_draw)
    assert fault == Fault(0.1, 504, b"late")
    assert fault.aborts and fault.delay == 0.1


def test_draws_in_order_delay_percent_then_length_then_abort_percent() -> None:
    plan = FaultPlan(delay_percent=40, delay_range=(1.0, 3.0), abort_percent=60, status=500)
    # Delay fires (0.1 < 0.4), its length is 1 + 2 * 0.25, the abort does not fire (0.7 >= 0.6).
    assert plan.decide(scripted([0.1, 0.25, 0.7])) == Fault(1.5)
    # Delay does not fire (0.4 is not below 0.4): no length drawn; the abort fires (0.59 < 0.6).
    assert plan.decide(scripted([0.4, 0.59])) == Fault(0.0, 500, b"")
    both = plan.decide(scripted([0.0, 1 - 2**-53, 0.0]))
    assert both is not None and both.status == 500 and 2.999 < both.delay <= 3.0
    assert plan.decide(scripted([0.9, 0.9])) is None


def test_abort_only_and_delay_only_faults() -> None:
    abort = FaultPlan(abort_percent=100, status=418, message="tea ☕")
    fault = abort.decide(no_draw)
    assert fault == Fault(0.0, 418, "tea ☕".encode())
    assert fault.aborts and fault.delay == 0.0
    delay = FaultPlan(delay_percent=100, delay_fixed=0.02).decide(no_draw)
    assert delay == Fault(0.02) and not delay.aborts and delay.body == b""


@pytest.mark.parametrize(
    "kwargs",
    [
        {"delay_percent": 101, "delay_fixed": 1.0},
        {"delay_percent": -1, "delay_fixed": 1.0},
        {"abort_percent": 100.5, "status": 500},
        {"abort_percent": 10, "status": 0},
        {"abort_percent": 10, "status": 10001},
        {"delay_percent": 10, "delay_fixed": -0.1},
        {"delay_percent": 10, "delay_range": (2.0, 1.0)},
        {"delay_percent": 10, "delay_range": (-1.0, 1.0)},
    ],
)
def test_out_of_range_values_are_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        FaultPlan(**kwargs)  # type: ignore[arg-type]
