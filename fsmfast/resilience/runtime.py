"""One worker's run-time backends, from the snapshot and the machine-wide arena.

A backend without resilience policies (or with only round robin, which is what every backend
does) is a plain ``BackendState``: the request path pays nothing for what is not configured. Any
other is a ``PolicyBackend`` (``fsmfast.proxy.upstream``) holding the parts its policies ask for,
each reading and writing its words of the arena at the places the master gave them in the
snapshot (``BackendPolicies.cells``, ``LoadBalancing.slots``). A part whose places are missing
(the arena was full) is left out, as the master's log said.

A route rule with its own ``retry`` or ``sessionPersistence`` (Gateway API) gets its own view of
each of its backends (``BackendStates.for_rule``, asked by the router when it builds the rule):
the same endpoints, pools, health and breaker, with the rule's retry and session, which win over
the backend's RetryPolicy and BackendLBPolicy/SessionStickyPolicy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fsmfast.edge.hooks import edge_hooks
from fsmfast.edge.redis_limit import GlobalQuotas
from fsmfast.proxy.upstream import HASHING, LEAST_CONN, ROUND_ROBIN, BackendState, PolicyBackend, Pool
from fsmfast.resilience.breaker import Breaker
from fsmfast.resilience.health import EndpointHealth
from fsmfast.resilience.retry import Budget, RetryPlan
from fsmfast.resilience.session import RouteSession, Session, endpoint_names, rule_session, session_key
from fsmfast.shared.endpoints import TABLE_ENTRIES
from fsmfast.snapshot import Backend, EdgeRule, Persistence, Retry, Rule, StickyCookie

if TYPE_CHECKING:
    from fsmfast.shared.arena import Arena

_LB = {"RoundRobinLoadBalancer": ROUND_ROBIN, "HashingLoadBalancer": HASHING, "LeastConnectionLoadBalancer": LEAST_CONN}


def rule_scope(rule_name: str) -> str:
    """A rule's name without its match (``httproute/ns/r/rule/0``): one session for all its matches."""
    cut = rule_name.rfind("/match/")
    return rule_name[:cut] if cut >= 0 else rule_name


class BackendStates(dict[str, BackendState]):
    """The worker's backends by name, for the router and the L4 ports. ``arena`` None: no
    machine-wide state (the pure-Python tools), so only what needs none applies."""

    def __init__(self, arena: Arena | None, row: int, fleet: GlobalQuotas | None = None) -> None:
        super().__init__()
        self.arena = arena
        self.row = row
        self.fleet = fleet  # the fleet's Redis, for rate limits of mode Global (--ratelimit-redis)
        self._key: bytes | None = None
        # The states whose requests count for a retry budget: the worker's tick hands their counts over.
        self.budgeted: list[BackendState] = []
        self._views: dict[tuple[str, str], BackendState] = {}

    def add(self, backend: Backend, pools: list[Pool]) -> BackendState:
        state = self[backend.name] = self._build(backend, pools)
        self._budgeted(state)
        return state

    def _budgeted(self, state: BackendState) -> None:
        if state.retry is not None and state.retry.budget is not None:
            self.budgeted.append(state)

    @property
    def key(self) -> bytes:
        """The machine's session key (empty: no arena, or none written in it: no sessions)."""
        if self._key is None:
            try:
                self._key = session_key(self.arena.cells) if self.arena is not None else b""
            except (IndexError, RuntimeError):
                self._key = b""
        return self._key

    def _budget(self, backend: Backend) -> Budget | None:
        cells = backend.resilience.cells if backend.resilience is not None else None
        if self.arena is None or cells is None or cells.budget < 0:
            return None
        return Budget(self.arena.cells, cells.budget)

    def _session(self, spec: Persistence | StickyCookie, scope: str, backend: Backend) -> Session | None:
        if not self.key:
            return None
        return Session(spec, scope, self.key, endpoint_names(backend.endpoints))

    def _retry(self, spec: Retry, backend: Backend) -> RetryPlan:
        return RetryPlan(spec, self._budget(backend))

    def _build(self, backend: Backend, pools: list[Pool]) -> BackendState:
        policies = backend.resilience
        if policies is None:
            return BackendState(backend, pools)
        arena = self.arena
        cells = policies.cells
        lb = _LB[policies.lb.type] if policies.lb is not None else ROUND_ROBIN
        state = PolicyBackend(backend, pools, lb if lb != LEAST_CONN else ROUND_ROBIN)
        applied = lb == HASHING
        if lb == LEAST_CONN and arena is not None and policies.lb is not None and len(policies.lb.slots) == len(pools):
            state.count_in_flight(arena.counters, self.row, policies.lb.slots)
            applied = True
        placed = cells is not None and len(cells.endpoints) == len(pools)
        if policies.health is not None and arena is not None and cells is not None and placed:
            state.health = EndpointHealth(arena.cells, cells.endpoints, policies.health)
            applied = True
        if policies.circuit is not None and arena is not None and cells is not None and cells.breaker >= 0:
            state.breaker = Breaker(arena.cells, cells.breaker, policies.circuit, backend.name)
            state.policies = (state.breaker,)
            applied = True
        if policies.retry is not None:
            state.retry = self._retry(policies.retry, backend)
            applied = True
        spec = policies.session or policies.sticky  # BackendLBPolicy beats SessionStickyPolicy
        if spec is not None:
            state.session = self._session(spec, backend.name, backend)
            applied = applied or state.session is not None
        return state if applied else BackendState(backend, pools)

    def for_rule(self, name: str, rule: Rule) -> BackendState:
        """Backend ``name`` as rule ``rule`` uses it: with the rule's own retry and session."""
        scope = rule_scope(rule.name)
        view = self._views.get((scope, name))
        if view is not None:
            return view
        base = self[name]
        backend = base.backend
        retry = self._retry(rule.retry, backend) if rule.retry is not None else None
        session = None
        if rule.session_persistence is not None and self.key:
            session = rule_session(rule.session_persistence, scope, name, self.key, endpoint_names(backend.endpoints))
        if retry is None and session is None:
            view = base
        else:
            source = base if isinstance(base, PolicyBackend) else PolicyBackend(backend, base.pools)
            view = source.with_policies(retry, session)
            self._budgeted(view)
        self._views[(scope, name)] = view
        return view

    def edge_hooks(self, setting: EdgeRule) -> tuple[Any, tuple[Any, ...]]:
        """The router asks this for the edge policies (issue 20) of a rule of one virtual host."""
        cells = self.arena.cells if self.arena is not None else None
        return edge_hooks(setting, cells, TABLE_ENTRIES, self.fleet)

    def route_session(self, rule: Rule, choices: list[Any]) -> RouteSession | None:
        """The hook of a rule with ``sessionPersistence`` and several backends: the backend that holds
        the session's endpoint is taken whatever the weights say (GEP-1619)."""
        if rule.session_persistence is None or not self.key:
            return None
        endpoints = [endpoint_names(c.backend.backend.endpoints) if c.backend is not None else [] for c in choices]
        return RouteSession(rule.session_persistence, rule_scope(rule.name), self.key, choices, endpoints)
