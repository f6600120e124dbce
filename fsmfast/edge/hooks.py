"""The edge policies of one rule as pipeline hooks (``fsmfast.pipeline.hooks``): what the router puts
in ``RouteRule.policies`` for a rule whose virtual host has an ``EdgeRule`` (issue 20).

Access control runs first (a denied client gets its answer and nothing else is asked), then fault
injection. Each hook is built once per snapshot, and a rule without edge policies gets none, so its
requests pay nothing. Rate limits are resolved into the snapshot but not applied yet: their quotas
need places in the machine's arena, which the master does not assign yet.

A fault's delay is a decision of its own, ``Delayed``: the request waits that long in its
connection's queue (``fsmfast.proxy.exchange``: ``Exchange.local`` holds it), then is forwarded, or
answered with the abort when both fire (FSM's order: the delay first).
"""

from __future__ import annotations

from typing import Any

from fsmfast.edge.access import AccessRule, AddressSet, client_address
from fsmfast.edge.faults import FaultPlan
from fsmfast.pipeline.decision import Delayed, LocalReply
from fsmfast.pipeline.hooks import PolicyRequest
from fsmfast.snapshot import AccessControl, EdgeRule, FaultInjection

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


def edge_hooks(edge: EdgeRule) -> tuple[Any, ...]:
    """The hooks of ``edge``, in the order they run (access control, then fault injection)."""
    hooks: list[Any] = [AccessHook(spec) for spec in edge.access]
    if edge.fault is not None:
        fault = FaultHook(edge.fault)
        if fault.plan.armed:
            hooks.append(fault)
    return tuple(hooks)
