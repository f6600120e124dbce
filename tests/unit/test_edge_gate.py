"""fsmfast.edge.gate: a rule's unkeyed local rate limits checked before any view of the request, and
``pipeline.route.choose`` asking the gate first. Runs compiled and, with FSMFAST_NO_EXTENSIONS=1, over the
pure-Python twins (the gate, ``choose`` and the atomics' ``Cells.take_now``).
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from fsmfast import snapshot as s
from fsmfast.edge.gate import QuotaGate
from fsmfast.edge.hooks import AccessHook, FaultHook, RateLimitHook, edge_hooks
from fsmfast.edge.ratelimit import CELLS_PER_QUOTA
from fsmfast.edge.redis_limit import GlobalQuotas
from fsmfast.pipeline.decision import Delayed, LocalReply
from fsmfast.pipeline.route import choose
from fsmfast.proxy.router import RouteRule
from fsmfast.shared.arena import Arena

HOST = "RateLimitPolicy ns/host"
ROUTE = "RateLimitPolicy ns/route"


@pytest.fixture
def arena() -> Iterator[Arena]:
    arena = Arena(workers=1, slots=1, cells=64)
    yield arena
    arena.close()


def limit(policy: str, cell: int, burst: int, backlog: int = 0, **extra: object) -> s.RateLimit:
    return s.RateLimit(policy=policy, requests=burst, window=60, burst=burst, backlog=backlog, cell=cell, **extra)  # type: ignore[arg-type]


def test_take_now_is_gcra_on_the_monotonic_clock(arena: Arena) -> None:
    emission = 10**9
    before = time.monotonic_ns()
    assert [arena.cells.take_now(0, 2 * emission, emission) for _ in range(4)] == [True, True, True, False]
    after = time.monotonic_ns()
    tat = arena.cells.load(0)
    # Three tokens from a full bucket: the TAT is three emissions past the clock of the first call.
    assert before <= tat - 3 * emission <= after
    assert arena.cells.take_now(0, 2 * emission, emission) is False
    assert arena.cells.load(0) == tat  # a refusal writes nothing


def test_unkeyed_local_limits_first_become_the_gate(arena: Arena) -> None:
    fault = s.FaultInjection(policy="FaultInjectionPolicy ns/f", abort=s.Abort(percent=100, status=500))
    edge = s.EdgeRule(rate_limits=(limit(HOST, 0, 3), limit(ROUTE, CELLS_PER_QUOTA, 3)), fault=fault)
    gate, hooks = edge_hooks(edge, arena.cells, 16)
    assert isinstance(gate, QuotaGate) and gate.places == (0, CELLS_PER_QUOTA)
    assert [type(h) for h in hooks] == [FaultHook]  # the limits are not a hook as well


@pytest.mark.parametrize(
    "edge",
    [
        s.EdgeRule(rate_limits=(limit(HOST, 0, 3),), access=(s.AccessControl(policy="a", whitelist=("10.0.0.0/8",)),)),
        s.EdgeRule(rate_limits=(limit(HOST, 0, 3, key=s.ClientKey(type="ClientIP")),)),
        s.EdgeRule(
            rate_limits=(limit(HOST, 0, 3), s.RateLimit(policy=ROUTE, requests=1, window=1, burst=1, mode="Global"))
        ),
    ],
    ids=["access-control-first", "per-client", "with-a-global-one"],
)
def test_limits_that_read_the_request_or_follow_access_control_stay_a_hook(arena: Arena, edge: s.EdgeRule) -> None:
    # A denied client must not spend a token; a keyed or fleet-wide limit needs the request.
    gate, hooks = edge_hooks(edge, arena.cells, 16, GlobalQuotas("redis://127.0.0.1:1/0", 0.01, False))
    assert gate is None
    assert RateLimitHook in [type(h) for h in hooks]
    assert (AccessHook in [type(h) for h in hooks]) == bool(edge.access)


def rule_with(gate: QuotaGate | None) -> RouteRule:
    rule = RouteRule(
        s.Rule(name="httproute/ns/r/rule/0/match/0", path=s.PathMatch(type="PathPrefix", value="/"), backends=()),
        {},
    )
    rule.gate = gate
    return rule


def ask(rule: RouteRule) -> object:
    return choose(rule, b"http", b"h", 80, b"GET", [], b"/", b"/", b"127.0.0.1")


def test_choose_asks_the_gate_then_answers_as_the_hook_would(arena: Arena) -> None:
    # Host limit: burst 2, backlog 1; route limit: burst 3. No backend: an admitted request gets the
    # rule's 500, which shows it went past the limits.
    gate, hooks = edge_hooks(
        s.EdgeRule(rate_limits=(limit(HOST, 0, 2, backlog=1), limit(ROUTE, CELLS_PER_QUOTA, 3))), arena.cells, 16
    )
    assert gate is not None and hooks == ()
    rule = rule_with(gate)
    before = time.monotonic_ns()
    answers = [ask(rule) for _ in range(4)]
    after = time.monotonic_ns()
    assert [type(a) for a in answers] == [LocalReply, LocalReply, Delayed, LocalReply]
    assert [a.status for a in answers[:2]] == [500, 500]  # type: ignore[attr-defined]
    waited = answers[2]
    assert isinstance(waited, Delayed) and 29 < waited.seconds <= 30  # the host's backlog slot, 60 s / 2
    assert isinstance(waited.then, LocalReply) and waited.then.status == 500
    refused = answers[3]
    assert isinstance(refused, LocalReply) and refused.status == 429 and refused.code == "rate_limited"
    assert HOST in refused.detail
    headers = dict(refused.headers)
    assert headers[b"RateLimit-Limit"] == b"2" and int(headers[b"Retry-After"]) >= 30
    # The route's quota gave a token to each request the host's let through, the waiting one included:
    # three of its 20 s tokens, and none to the refused one.
    spent = arena.cells.load(CELLS_PER_QUOTA) - 3 * 20 * 10**9
    assert before <= spent <= after


def test_the_route_limit_refuses_after_the_host_gave_its_token(arena: Arena) -> None:
    gate, _ = edge_hooks(s.EdgeRule(rate_limits=(limit(HOST, 0, 5), limit(ROUTE, CELLS_PER_QUOTA, 1))), arena.cells, 16)
    rule = rule_with(gate)
    first, second = ask(rule), ask(rule)
    assert isinstance(first, LocalReply) and first.status == 500
    assert isinstance(second, LocalReply) and second.status == 429 and ROUTE in second.detail
    host_tat = arena.cells.load(0)
    assert host_tat - time.monotonic_ns() > 12 * 10**9 * 1.5  # two of the host's 12 s tokens spent
