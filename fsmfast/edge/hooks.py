"""The edge policies of one rule as pipeline hooks (``fsmfast.pipeline.hooks``): what the router puts
in ``RouteRule.policies`` for a rule whose virtual host has an ``EdgeRule`` (issue 20).

Access control runs first (a denied client gets its answer and nothing else is asked), then the
rate limits (hostname level, then route level: all in one hook, so a request waiting in one's
backlog is still counted by the other), then fault injection (so an injected delay never skips a
limit; a request waiting in a backlog is not picked for a fault). Each hook is built once per
snapshot, and a rule without edge policies gets none, so its requests pay nothing. Rate limits that
come first and read nothing of the request (local, one quota for all) are not a hook but the rule's
gate (``fsmfast.edge.gate``), asked in C before any view of the request is made.

Local rate limits are exact on the machine: every worker takes its tokens from the same quota in the
arena (``fsmfast.edge.ratelimit``, one compare-and-swap), at the place the master gave the policy's
entry (``RateLimit.cell``). Fleet-wide (``mode: Global``) limits ask the fleet's Redis
(``fsmfast.edge.redis_limit``, with ``--ratelimit-redis``; without it they are not applied): all of
a rule's global limits in one script call, batched with the worker's other requests; the request
waits for the answer (``Delayed`` with a future) after its local limits passed.

A fault's delay is a decision of its own, ``Delayed``: the request waits that long in its
connection's queue (``fsmfast.proxy.exchange``: ``Exchange.local`` holds it), then is forwarded, or
answered with the abort when both fire (FSM's order: the delay first).
"""

from __future__ import annotations

import time
from typing import Any

from fsmfast.edge.access import AccessRule, AddressSet, client_address
from fsmfast.edge.faults import FaultPlan
from fsmfast.edge.gate import QuotaGate
from fsmfast.edge.ratelimit import Decision, KeyedQuotas, Quota, refusal_headers
from fsmfast.edge.redis_limit import FleetLimit, GlobalQuotas, quota_key
from fsmfast.pipeline.decision import Delayed, LocalReply
from fsmfast.pipeline.hooks import PolicyRequest
from fsmfast.snapshot import AccessControl, EdgeRule, FaultInjection, RateLimit

# The body of a denial whose policy has no message (FSM sends an empty one; a line saying why helps
# whoever reads it with curl, as fsmfast's other answers do).
DENIED = "access denied"


class AccessHook:
    """An AccessControlPolicy at hostname or route level: 403 (or its ``statusCode``) with its message
    for a client it does not allow."""

    __slots__ = ("_hops", "_proxies", "_xff", "policy", "reply", "rule")

    def __init__(self, spec: AccessControl) -> None:
        self.policy = spec.policy
        self.rule = AccessRule(spec.whitelist, spec.blacklist, spec.status, spec.message, spec.enable_xff)
        self._xff = spec.enable_xff and (spec.trusted_hops > 0 or bool(spec.trusted_proxies))
        self._hops = spec.trusted_hops
        self._proxies = AddressSet(spec.trusted_proxies) if spec.trusted_proxies else None
        deny = self.rule.deny_reply
        text = deny.body.decode("utf-8", "replace") or DENIED
        self.reply = LocalReply(deny.status, text, "access_denied", f"{text} ({spec.policy})")

    def client(self, request: PolicyRequest) -> bytes:
        """The client's address: the TCP peer, or X-Forwarded-For through the trusted hops or proxies."""
        if not self._xff:
            return request.client
        xff = [v for n, v in request.headers if len(n) == 15 and n.lower() == b"x-forwarded-for"]
        return client_address(request.client, xff, self._hops, self._proxies)

    def __call__(self, request: PolicyRequest) -> LocalReply | None:
        return None if self.rule.allows(self.client(request)) else self.reply


class _Limit:
    """One rate limit: its quota (local: in the arena, shared or one per client key; global: a key in
    the fleet's Redis) and its refusal."""

    __slots__ = ("fast", "fleet_key", "header", "keyed", "max_wait", "quota", "spec")

    def __init__(self, spec: RateLimit, cells: Any, table_entries: int) -> None:
        self.spec = spec
        self.keyed = spec.key is not None
        # ClientIP: the TCP peer; Header: that header's first value (absent: one quota for all such).
        self.header = spec.key.header.encode() if spec.key is not None and spec.key.header else None
        self.fast = spec.mode == "Local" and not self.keyed  # Quota.admit first
        self.fleet_key: str | None = None
        if spec.mode == "Global":
            self.max_wait = spec.window / spec.requests * spec.backlog if spec.backlog > 0 else 0.0
            self.quota: Any = FleetLimit(spec.requests, spec.window, spec.burst, self.max_wait)
            if not self.keyed:
                self.fleet_key = quota_key(spec.policy, spec.scope)  # one for all: made once
            return
        if self.keyed:
            self.quota = KeyedQuotas(cells, spec.cell, table_entries, spec.requests, spec.window, spec.burst)
        else:
            self.quota = Quota(cells, spec.cell, spec.requests, spec.window, spec.burst)
        self.max_wait = self.quota.backlog_wait(spec.backlog) if spec.backlog > 0 else 0.0

    def key(self, request: PolicyRequest) -> bytes:
        if self.header is None:
            return request.client
        name = self.header
        return next((v for n, v in request.headers if len(n) == len(name) and n.lower() == name), b"")

    def refusal(self, decision: Decision) -> LocalReply:
        spec = self.spec
        extra = [(h.name, h.value) for h in spec.headers]
        fields = tuple((n.encode("latin-1"), v.encode("latin-1")) for n, v in refusal_headers(decision, extra))
        text = "rate limit exceeded"
        return LocalReply(spec.status, text, "rate_limited", f"{text} ({spec.policy})", headers=fields)


# The answer when the fleet's Redis gives no decision and the gateway fails closed.
UNAVAILABLE = LocalReply(503, "rate limit unavailable", "rate_limit_unavailable")


class RateLimitHook:
    """The local rate limits of a rule, in order: a token from each, or the first refusal
    (``responseStatusCode``, 429 by default, with ``RateLimit-*``, ``Retry-After`` and the policy's
    ``responseHeadersToAdd``). A request whose token is free within its backlog's reach waits for it
    (``Delayed``); the longest of the waits counts."""

    __slots__ = ("args", "fleet", "globals", "keys", "limits")

    def __init__(
        self, limits: list[_Limit], globals_: list[_Limit] | None = None, fleet: GlobalQuotas | None = None
    ) -> None:
        self.limits = limits
        self.globals = globals_ or []
        self.fleet = fleet
        # The script's arguments for the global limits, in order, and their keys when none is per
        # client (the same for every request: made once).
        self.args = [n for g in self.globals for n in g.quota.args]
        fixed = [g.fleet_key for g in self.globals if g.fleet_key is not None]
        self.keys = fixed if len(fixed) == len(self.globals) else None

    def __call__(self, request: PolicyRequest) -> LocalReply | Delayed | None:
        wait = self._local(request, 0)
        if isinstance(wait, LocalReply):
            return wait
        fleet = self.fleet
        if fleet is not None and self.globals:
            keys = self.keys
            if keys is None:
                keys = [g.fleet_key or quota_key(g.spec.policy, g.spec.scope, g.key(request)) for g in self.globals]
            return Delayed(wait, None, fleet.ask(keys, self.args), self._outcome)
        return Delayed(wait, None) if wait > 0 else None

    def after(self, start: int) -> LocalReply | Delayed | None:
        """The answer once local limit ``start`` had no token at once (``fsmfast.edge.gate``; the
        limits before it gave theirs): the hook's own, from that limit on. Only for a hook whose
        limits read nothing of the request (no ``key``) and with no global ones."""
        wait = self._local(None, start)
        if isinstance(wait, LocalReply):
            return wait
        return Delayed(wait, None) if wait > 0 else None

    def _local(self, request: PolicyRequest | None, start: int) -> float | LocalReply:
        """The local limits from ``start`` on: the longest wait for a backlog slot, or the first refusal."""
        now = 0.0
        wait = 0.0
        limits = self.limits
        for k in range(start, len(limits)):
            limit = limits[k]
            if limit.fast and limit.quota.admit():
                continue  # a token at once: the common case, no Decision made
            if not now:
                now = time.monotonic()
            if limit.keyed:
                assert request is not None
                decision = limit.quota.reserve(limit.key(request), now, limit.max_wait)
            else:
                decision = limit.quota.reserve(now, limit.max_wait)
            if not decision.admitted:
                return limit.refusal(decision)
            if decision.wait > wait:
                wait = decision.wait
        return wait

    def _outcome(self, future: Any) -> Any:
        """``Delayed.resolve`` of the global limits' future: the fleet's one decision for all of them
        (the first refusal, or the longest wait); no decision fails open (go on) or closed (503)."""
        reply = None if future.cancelled() else future.result()
        if reply is None:
            return UNAVAILABLE if self.fleet is not None and self.fleet.fail_closed else None
        admitted, index, wait, reset = reply
        if admitted:
            return wait / 1_000_000 or None
        limit = self.globals[index - 1]
        return limit.refusal(limit.quota.refused(wait, reset))


class FaultHook:
    """A FaultInjectionPolicy: for the share of requests it picks, a delay, an abort, or both."""

    __slots__ = ("plan", "policy")

    def __init__(self, spec: FaultInjection) -> None:
        delay = spec.delay
        abort = spec.abort
        self.policy = spec.policy
        self.plan = FaultPlan(
            delay_percent=delay.percent if delay is not None else 0,
            delay_range=(delay.min, delay.max) if delay is not None else None,
            abort_percent=abort.percent if abort is not None else 0,
            status=abort.status if abort is not None else 0,
            message=abort.message if abort is not None else "",
            policy=spec.policy,
        )

    def __call__(self, request: PolicyRequest) -> LocalReply | Delayed | None:
        fault = self.plan.decide()
        if fault is None:
            return None
        abort = None
        if fault.aborts:
            text = fault.body.decode("utf-8", "replace") or "fault injected"
            abort = LocalReply(fault.status, text, "fault_injected", f"{text} ({self.policy})")
        if fault.delay > 0:
            return Delayed(fault.delay, abort)
        return abort


def edge_hooks(
    edge: EdgeRule, cells: Any = None, table_entries: int = 0, fleet: GlobalQuotas | None = None
) -> tuple[QuotaGate | None, tuple[Any, ...]]:
    """The gate and the hooks of ``edge``, in the order they run (access control, rate limits, fault
    injection): the rate limits are the gate (``fsmfast.edge.gate``) rather than a hook when they come
    first and read nothing of the request. ``cells``: the arena's, where the master placed the local
    rate limits (None: none applied); ``fleet``: the worker's Redis for the global ones (None: not applied)."""
    hooks: list[Any] = [AccessHook(spec) for spec in edge.access]
    gate = None
    limits = []
    if cells is not None:
        limits = [_Limit(s, cells, table_entries) for s in edge.rate_limits if s.mode == "Local" and s.cell >= 0]
    globals_ = [_Limit(s, None, 0) for s in edge.rate_limits if s.mode == "Global"] if fleet is not None else []
    if limits and not hooks and not globals_ and all(limit.fast for limit in limits):
        gate = QuotaGate(cells, [limit.quota for limit in limits], RateLimitHook(limits).after)
    elif limits or globals_:
        hooks.append(RateLimitHook(limits, globals_, fleet))
    if edge.fault is not None:
        fault = FaultHook(edge.fault)
        if fault.plan.armed:
            hooks.append(fault)
    return gate, tuple(hooks)
