"""Words for the resilience policies of a snapshot (issue 19), shared by ``fsmfast explain`` and
the admin listener's /config, so the two never describe a policy differently.

``backend_policy_texts`` describes each policy set on a backend; ``policy_lines`` lists, for a
request through one rule, the rule's own retry and session persistence and its backends'
policies, marking a backend policy ``[overridden: ...]`` where the rule's field (or a
BackendLBPolicy) governs the request instead.
"""

from __future__ import annotations

from collections.abc import Sequence

from fsmfast.config.duration import format_duration
from fsmfast.edge.describe import port_edge_texts, rule_edge_texts
from fsmfast.snapshot import (
    Backend,
    BackendPolicies,
    CircuitBreaker,
    EdgeRule,
    HealthCheck,
    LoadBalancing,
    Persistence,
    PortEdge,
    Retry,
    Rule,
    StickyCookie,
)


def retry_text(r: Retry) -> str:
    parts = ["on " + ", ".join(r.on) if r.on else "on connection failures only"]
    if r.attempts is not None:
        parts.append(f"{r.attempts} {'retry' if r.attempts == 1 else 'retries'}")
    if r.backoff is not None:
        parts.append(f"backoff {format_duration(r.backoff)}")
    return "; ".join(parts)


def persistence_text(s: Persistence) -> str:
    name = s.session_name or "(implementation's name)"
    parts = [f"{s.type.lower()} {name}"]
    if s.type == "Cookie":
        parts.append(f"{s.lifetime_type.lower()} cookie")
    if s.absolute_timeout is not None:
        parts.append(f"absolute timeout {format_duration(s.absolute_timeout)}")
    if s.idle_timeout is not None:
        parts.append(f"idle timeout {format_duration(s.idle_timeout)}")
    return "; ".join(parts)


def _lb_text(lb: LoadBalancing) -> str:
    return lb.type


def _health_text(h: HealthCheck) -> str:
    what = f"HTTP GET {h.path}" if h.path is not None else "TCP connect"
    parts = [f"{what} every {h.interval}s", f"out after {h.max_fails} failures"]
    for match in h.matches:
        cond = []
        if match.status_codes:
            cond.append("status " + "|".join(str(c) for c in match.status_codes))
        if match.body is not None:
            cond.append(f"body contains {match.body!r}")
        cond += [f"header {hv.name} = {hv.value!r}" for hv in match.headers]
        parts.append("passes on " + ", ".join(cond))
    if h.fail_timeout is not None:
        parts.append(f"failTimeout {h.fail_timeout}s")
    return "; ".join(parts)


def _circuit_text(c: CircuitBreaker) -> str:
    parts = [f"after {c.min_request_amount} requests in {c.stat_time_window}s"]
    if c.slow_time_threshold is not None:
        parts.append(f"slow above {c.slow_time_threshold:g}s")
    for label, value in (
        ("slow count", c.slow_amount_threshold),
        ("slow ratio", c.slow_ratio_threshold),
        ("error count", c.error_amount_threshold),
        ("error ratio", c.error_ratio_threshold),
    ):
        if value is not None:
            parts.append(f"opens at {label} {value:g}")
    parts.append(f"then {c.degraded_status_code} for {c.degraded_time_window}s")
    return "; ".join(parts)


def _sticky_text(s: StickyCookie) -> str:
    return f"cookie {s.cookie_name}, expires {s.expires}s"


def backend_policy_texts(p: BackendPolicies) -> list[tuple[str, str, str]]:
    """(kind, source policy, words) for each policy set on a backend, in a fixed order."""
    out = []
    if p.lb is not None:
        out.append(("load balancing", p.lb.policy, _lb_text(p.lb)))
    if p.health is not None:
        out.append(("health check", p.health.policy, _health_text(p.health)))
    if p.retry is not None:
        out.append(("retry", p.retry.policy, retry_text(p.retry)))
    if p.circuit is not None:
        out.append(("circuit breaking", p.circuit.policy, _circuit_text(p.circuit)))
    if p.sticky is not None:
        out.append(("sticky session", p.sticky.policy, _sticky_text(p.sticky)))
    if p.session is not None:
        out.append(("session persistence", p.session.policy, persistence_text(p.session)))
    return out


def _overridden(rule: Rule, p: BackendPolicies, kind: str) -> str | None:
    """Why a backend policy does not govern requests through ``rule`` (precedence), or None."""
    if kind == "retry" and rule.retry is not None:
        return "the rule's retry wins"
    if kind == "session persistence" and rule.session_persistence is not None:
        return "the rule's sessionPersistence wins"
    if kind == "sticky session" and rule.session_persistence is not None:
        return "the rule's sessionPersistence wins"
    if kind == "sticky session" and p.session is not None:
        return "BackendLBPolicy's session persistence wins"
    return None


def policy_lines(rule: Rule, backends: Sequence[Backend]) -> list[str]:
    """What ``fsmfast explain`` prints about the policies for a request through ``rule``."""
    rows = []
    if rule.retry is not None:
        rows.append(f"rule: retry {retry_text(rule.retry)} ({rule.retry.policy})")
    if rule.session_persistence is not None:
        sp = rule.session_persistence
        rows.append(f"rule: session persistence {persistence_text(sp)} ({sp.policy})")
    for backend in backends:
        if backend.resilience is None:
            continue
        for kind, source, text in backend_policy_texts(backend.resilience):
            why = _overridden(rule, backend.resilience, kind)
            rows.append(f"{backend.name}: {kind} {text} ({source})" + (f" [overridden: {why}]" if why else ""))
    if not rows:
        return []
    return ["policies", *("           " + row for row in rows)]


def edge_lines(port: int, port_edge: PortEdge | None, rule_edge: EdgeRule | None) -> list[str]:
    """What ``fsmfast explain`` prints about the edge policies (issue 20) for a request on ``port``
    through a rule: the port's, then the rule's in the order they apply."""
    rows = [f"port {port}: {kind} {text} ({source})" for kind, source, text in port_edge_texts(port_edge or PortEdge())]
    if rule_edge is not None:
        rows += [f"rule: {kind} {text} ({source})" for kind, source, text in rule_edge_texts(rule_edge)]
    if not rows:
        return []
    return ["edge       (explain draws no fault and takes no token)", *("           " + row for row in rows)]
