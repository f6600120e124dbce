"""Which resilience policies apply to each Service port, and the route rules' own retry and
session persistence (issue 19; the data plane applies them: fsmfast.proxy.upstream and
fsmfast.resilience).

Per Service port and per kind, FSM's rule: policies are taken oldest first (creationTimestamp,
then namespace/name); the first one naming the port wins, and a later one whose computed config
differs is reported as Conflicted and ignored there (an identical one changes nothing, so FSM
does not call it a conflict). BackendLBPolicy targets a whole Service; among several, the oldest
wins the same way. A policy whose Service or port does not exist is reported and has no effect.

Precedence between kinds is recorded, not resolved, here (see fsmfast.snapshot): a rule's own
``retry``/``sessionPersistence`` beats the backend's policy, and BackendLBPolicy beats
SessionStickyPolicy (reported as overridden, as BackendTLSPolicy beats UpstreamTLSPolicy).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from typing import Any

from fsmfast.compile.conflicts import Candidate, oldest
from fsmfast.compile.index import Index, age_key
from fsmfast.config import model as m
from fsmfast.config import policies as p
from fsmfast.config.duration import parse_duration
from fsmfast.config.issues import Issues, Where
from fsmfast.snapshot import (
    BackendPolicies,
    CircuitBreaker,
    HeaderValue,
    HealthCheck,
    HealthMatch,
    LoadBalancing,
    Persistence,
    Retry,
    StickyCookie,
)


def _retry(name: str, cfg: m.RetryConfig) -> Retry:
    return Retry(
        policy=name,
        on=tuple(cfg.retry_on or ()),
        attempts=cfg.num_retries if cfg.num_retries is not None else p.DEFAULT_NUM_RETRIES,
        backoff=cfg.backoff_base_interval if cfg.backoff_base_interval is not None else p.DEFAULT_BACKOFF,
    )


def _health(name: str, cfg: m.HealthCheckConfig) -> HealthCheck:
    assert cfg.interval is not None and cfg.max_fails is not None  # checked when loading
    matches: tuple[HealthMatch, ...] = ()
    if cfg.path is not None:
        matches = tuple(
            HealthMatch(
                status_codes=tuple(x.status_codes),
                body=x.body,
                headers=tuple(HeaderValue(h.name, h.value) for h in x.headers),
            )
            for x in cfg.matches or ()
        ) or (HealthMatch(status_codes=(200,)),)
    return HealthCheck(
        policy=name,
        interval=cfg.interval,
        max_fails=cfg.max_fails,
        fail_timeout=cfg.fail_timeout,
        path=cfg.path,
        matches=matches,
    )


def _circuit(name: str, cfg: m.CircuitBreakingConfig) -> CircuitBreaker:
    assert cfg.min_request_amount and cfg.stat_time_window and cfg.degraded_time_window  # checked when loading
    status = cfg.degraded_status_code
    return CircuitBreaker(
        policy=name,
        min_request_amount=cfg.min_request_amount,
        stat_time_window=cfg.stat_time_window,
        degraded_time_window=cfg.degraded_time_window,
        degraded_status_code=status if status is not None else p.DEFAULT_DEGRADED_STATUS,
        slow_time_threshold=cfg.slow_time_threshold,
        slow_amount_threshold=cfg.slow_amount_threshold,
        slow_ratio_threshold=cfg.slow_ratio_threshold,
        error_amount_threshold=cfg.error_amount_threshold,
        error_ratio_threshold=cfg.error_ratio_threshold,
        degraded_response_content=cfg.degraded_response_content,
    )


def _sticky(name: str, cfg: m.SessionStickyConfig) -> StickyCookie:
    return StickyCookie(
        policy=name,
        cookie_name=cfg.cookie_name if cfg.cookie_name is not None else p.DEFAULT_COOKIE_NAME,
        expires=cfg.expires if cfg.expires is not None else p.DEFAULT_COOKIE_EXPIRES,
    )


def _lb(name: str, type_: Any) -> LoadBalancing:
    return LoadBalancing(policy=name, type=type_)


def persistence(name: str, sp: m.SessionPersistence) -> Persistence:
    def seconds(text: str | None) -> float | None:
        return None if text is None else parse_duration(text)

    return Persistence(
        policy=name,
        type=sp.type,
        session_name=sp.session_name,
        absolute_timeout=seconds(sp.absolute_timeout),
        idle_timeout=seconds(sp.idle_timeout),
        lifetime_type=sp.cookie_config.lifetime_type if sp.cookie_config else "Session",
    )


def route_retry(route: m.HTTPRoute, i: int, rule: m.HTTPRouteRule) -> Retry | None:
    retry = rule.retry
    if retry is None:
        return None
    backoff = None if retry.backoff is None else parse_duration(retry.backoff)
    name = f"HTTPRoute {route.key} spec.rules[{i}].retry"
    return Retry(policy=name, on=tuple(str(code) for code in retry.codes), attempts=retry.attempts, backoff=backoff)


def route_persistence(route: m.HTTPRoute, i: int, rule: m.HTTPRouteRule) -> Persistence | None:
    sp = rule.session_persistence
    if sp is None:
        return None
    return persistence(f"HTTPRoute {route.key} spec.rules[{i}].sessionPersistence", sp)


# slot of BackendPolicies, Manifests bucket, snapshot struct maker
_KINDS: tuple[tuple[str, str, Callable[[str, Any], Any]], ...] = (
    ("lb", "load_balancer_policies", _lb),
    ("health", "health_check_policies", _health),
    ("retry", "retry_policies", _retry),
    ("circuit", "circuit_breaking_policies", _circuit),
    ("sticky", "session_sticky_policies", _sticky),
)


class Resilience:
    """Every resilience policy resolved to Service ports once, with every conflict and missing
    target reported (so ``fsmfast check`` lists them even for Services no route uses)."""

    def __init__(self, index: Index, issues: Issues) -> None:
        self.index = index
        self.issues = issues
        self.by_port: dict[tuple[str, int], dict[str, Any]] = defaultdict(dict)
        for slot, bucket, make in _KINDS:
            candidates: dict[tuple[str, int], list[Candidate]] = defaultdict(list)
            for policy in sorted(getattr(index.manifests, bucket), key=age_key):
                self._add(policy, make, candidates)
            for (svc_key, port), found in sorted(candidates.items()):
                winner = oldest(self.issues, found, f"service {svc_key} port {port}")
                self.by_port[(svc_key, port)][slot] = winner.value
        self.session: dict[str, Candidate] = {}
        whole: dict[str, list[Candidate]] = defaultdict(list)
        for blp in sorted(index.manifests.backend_lb_policies, key=age_key):
            self._add_backend_lb(blp, whole)
        for svc_key, found in sorted(whole.items()):
            self.session[svc_key] = oldest(self.issues, found, f"service {svc_key}")
        self._overridden_sticky()

    def for_port(self, svc: m.Service, sp: m.ServicePort) -> BackendPolicies | None:
        slots = dict(self.by_port.get((svc.key, sp.port), {}))
        session = self.session.get(svc.key)
        if session is not None:
            slots["session"] = session.value
        return BackendPolicies(**slots) if slots else None

    def _add(self, policy: Any, make: Callable[[str, Any], Any], out: dict[tuple[str, int], list[Candidate]]) -> None:
        target = policy.spec.target_ref
        if (target.group, target.kind) != ("", "Service"):
            return  # a ServiceImport: reported when loading
        where = Where.of(policy)
        svc_key = f"{target.namespace or policy.namespace}/{target.name}"
        svc = self.index.services.get(svc_key)
        if svc is None:
            self.issues.warn(where, "spec.targetRef", f"service {svc_key} not found; policy has no effect")
        name = f"{policy.kind} {policy.key}"
        for i, entry in enumerate(policy.spec.ports):
            if svc is not None and not any(sp.port == entry.port for sp in svc.spec.ports):
                self.issues.warn(
                    where,
                    f"spec.ports[{i}].port",
                    f"service {svc_key} has no port {entry.port}; this entry has no effect",
                )
                continue
            out[(svc_key, entry.port)].append(
                Candidate(policy, f"spec.ports[{i}]", make(name, p.port_config(policy, i)))
            )

    def _add_backend_lb(self, policy: m.BackendLBPolicy, out: dict[str, list[Candidate]]) -> None:
        value = persistence(f"BackendLBPolicy {policy.key}", policy.spec.session_persistence)
        for i, ref in enumerate(policy.spec.target_refs):
            field = f"spec.targetRefs[{i}]"
            svc_key = f"{policy.namespace}/{ref.name}"
            if svc_key not in self.index.services:
                self.issues.warn(Where.of(policy), field, f"service {svc_key} not found; this target has no effect")
                continue
            out[svc_key].append(Candidate(policy, field, value))

    def _overridden_sticky(self) -> None:
        for (svc_key, port), slots in sorted(self.by_port.items()):
            sticky, session = slots.get("sticky"), self.session.get(svc_key)
            if sticky is None or session is None:
                continue
            policy = next(
                x for x in self.index.manifests.session_sticky_policies if f"{x.kind} {x.key}" == sticky.policy
            )
            i = next(n for n, e in enumerate(policy.spec.ports) if e.port == port)
            self.issues.warn(
                Where.of(policy),
                f"spec.ports[{i}]",
                f"overridden by BackendLBPolicy {session.policy.key} for service {svc_key} port {port}"
                " (Gateway API's session persistence wins)",
            )
