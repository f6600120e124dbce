"""FSM's service-level resilience policies and Gateway API's retry and session persistence:
validation, the field-by-field merge of a port's config over the spec-level ``config``, and
the CRD defaults applied after it (issue 19).

Defaults (FSM v1.2.9 CRDs, ``gateway.flomesh.io/v1alpha1``):
- RetryPolicy: ``numRetries`` 3, ``backoffBaseInterval`` 1.0 s; ``retryOn`` required.
- HealthCheckPolicy: ``interval`` and ``maxFails`` required; with a ``path`` (HTTP check) and no
  ``matches``, one match ``statusCodes: [200]``; without a ``path`` the check is TCP.
- CircuitBreakingPolicy: ``minRequestAmount``, ``statTimeWindow``, ``degradedTimeWindow``
  required; ``degradedStatusCode`` 503.
- SessionStickyPolicy: ``cookieName`` "_srv_id", ``expires`` 3600 s.
- LoadBalancerPolicy: ``type`` RoundRobinLoadBalancer (port entry, then spec ``type``).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, TypeVar

import msgspec
from msgspec.structs import replace

from fsmfast.config import model as m
from fsmfast.config.duration import parse_duration
from fsmfast.config.targets import check_target_ref, check_target_refs, port_once

if TYPE_CHECKING:
    from fsmfast.config.checks import Checker

DEFAULT_NUM_RETRIES = 3
DEFAULT_BACKOFF = 1.0
DEFAULT_DEGRADED_STATUS = 503
DEFAULT_COOKIE_NAME = "_srv_id"
DEFAULT_COOKIE_EXPIRES = 3600
DEFAULT_LB_TYPE = "RoundRobinLoadBalancer"

_TOKEN = re.compile(r"[A-Za-z0-9!#$%&'*+\-.^_`|~]+")
_RETRY_ON = re.compile(r"5xx|[1-5][0-9][0-9]")
_NO_CONTENT = frozenset({204, 205, 304})  # RFC 9110 §15.3.5, §15.3.6, §15.4.5

ServicePolicy = (
    m.RetryPolicy | m.HealthCheckPolicy | m.CircuitBreakingPolicy | m.SessionStickyPolicy | m.LoadBalancerPolicy
)

C = TypeVar("C", bound=msgspec.Struct)


def merge(default: C | None, own: C | None, cls: type[C]) -> C:
    """``own`` over ``default`` field by field: a field ``own`` does not set (None) comes from
    ``default`` (FSM's mergeConfig). Lists are taken whole, not concatenated."""
    base = default if default is not None else cls()
    if own is None:
        return base
    changes = {f: getattr(own, f) for f in own.__struct_fields__ if getattr(own, f) is not None}
    return replace(base, **changes)


def port_config(policy: ServicePolicy, index: int) -> Any:
    """The merged config (CRD defaults not yet applied) of ``spec.ports[index]``; for a
    LoadBalancerPolicy, the effective type."""
    spec: Any = policy.spec  # the five specs share targetRef/ports/config, not a base class
    if isinstance(policy, m.LoadBalancerPolicy):
        return policy.spec.ports[index].type or policy.spec.type or DEFAULT_LB_TYPE
    return merge(spec.config, spec.ports[index].config, _CONFIG[policy.kind])


_CONFIG: dict[str, type[msgspec.Struct]] = {
    "RetryPolicy": m.RetryConfig,
    "HealthCheckPolicy": m.HealthCheckConfig,
    "CircuitBreakingPolicy": m.CircuitBreakingConfig,
    "SessionStickyPolicy": m.SessionStickyConfig,
}

# Fields required once the port config is merged over the default one.
_REQUIRED: dict[str, tuple[tuple[str, str], ...]] = {
    "RetryPolicy": (("retry_on", "retryOn"),),
    "HealthCheckPolicy": (("interval", "interval"), ("max_fails", "maxFails")),
    "CircuitBreakingPolicy": (
        ("min_request_amount", "minRequestAmount"),
        ("stat_time_window", "statTimeWindow"),
        ("degraded_time_window", "degradedTimeWindow"),
    ),
}


def check_service_policy(c: Checker, policy: ServicePolicy) -> ServicePolicy | None:
    """Target, ports and each port's merged config of one of FSM's five service-level policies."""
    spec: Any = policy.spec
    check_target_ref(c, spec.target_ref)
    if not spec.ports:
        c.warn("spec.ports", "none listed, so this policy has no effect (only spec.ports[] entries take effect)")
    elif len(spec.ports) > 16:
        c.error("spec.ports", f"at most 16 entries, got {len(spec.ports)}")
    if not isinstance(policy, m.LoadBalancerPolicy) and spec.config is not None:
        _check_config(c, "spec.config", spec.config)
    seen: dict[int, int] = {}
    for i, entry in enumerate(spec.ports):
        path = f"spec.ports[{i}]"
        port_once(c, seen, i, entry.port)
        if isinstance(policy, m.LoadBalancerPolicy):
            continue
        own = getattr(entry, "config", None)
        if own is not None:
            _check_config(c, f"{path}.config", own)
        merged = port_config(policy, i)
        for attr, name in _REQUIRED.get(policy.kind, ()):
            if getattr(merged, attr) is None:
                c.error(f"{path}.config.{name}", "required (here or in spec.config)")
    return policy if c.ok else None


def _check_config(c: Checker, path: str, cfg: Any) -> None:
    if isinstance(cfg, m.RetryConfig) and cfg.retry_on is not None:
        if not cfg.retry_on:
            c.error(f"{path}.retryOn", "at least one entry is required")
        for k, code in enumerate(cfg.retry_on):
            if not _RETRY_ON.fullmatch(code):
                c.error(f"{path}.retryOn[{k}]", f'expected "5xx" or a status code (100-599), got {code!r}')
    elif isinstance(cfg, m.HealthCheckConfig):
        if cfg.path is not None and not cfg.path.startswith("/"):
            c.error(f"{path}.path", f"must start with /, got {cfg.path!r}")
        if cfg.matches and cfg.path is None:
            c.warn(f"{path}.matches", "ignored without a path (the check is TCP)")
        for k, match in enumerate(cfg.matches or []):
            for n, header in enumerate(match.headers):
                if not _TOKEN.fullmatch(header.name):
                    c.error(f"{path}.matches[{k}].headers[{n}].name", f"{header.name!r} is not a valid header name")
    elif isinstance(cfg, m.CircuitBreakingConfig) and cfg.degraded_status_code is not None:
        # FSM's CRD allows 1-10000, but the gateway writes this status with its content: outside
        # 200-599 it is not a valid final HTTP status, and 204, 205 and 304 cannot carry content.
        status = cfg.degraded_status_code
        if not 200 <= status <= 599 or status in _NO_CONTENT:
            c.error(f"{path}.degradedStatusCode", f"expected a status 200-599 other than 204, 205, 304; got {status}")
    elif isinstance(cfg, m.SessionStickyConfig) and not _TOKEN.fullmatch(cfg.cookie_name or "_"):
        c.error(f"{path}.cookieName", f"{cfg.cookie_name!r} is not a valid cookie name")


# --- Gateway API ------------------------------------------------------------------------------


def check_session_persistence(c: Checker, path: str, sp: m.SessionPersistence) -> None:
    for field, text in (("absoluteTimeout", sp.absolute_timeout), ("idleTimeout", sp.idle_timeout)):
        if text is not None and parse_duration(text) is None:
            c.error(f"{path}.{field}", f'{text!r} is not a Gateway API duration (like "10s", "1m30s", "500ms")')
    permanent = sp.cookie_config is not None and sp.cookie_config.lifetime_type == "Permanent"
    if permanent and sp.absolute_timeout is None:
        c.error(f"{path}.absoluteTimeout", "required when cookieConfig.lifetimeType is Permanent")
    if sp.type == "Header" and sp.cookie_config is not None:
        c.error(f"{path}.cookieConfig", "only allowed when type is Cookie")
    if sp.session_name is not None and not _TOKEN.fullmatch(sp.session_name):
        what = "header" if sp.type == "Header" else "cookie"
        c.error(f"{path}.sessionName", f"{sp.session_name!r} is not a valid {what} name")


def check_retry(c: Checker, path: str, retry: m.HTTPRouteRetry) -> None:
    if retry.backoff is not None and parse_duration(retry.backoff) is None:
        c.error(f"{path}.backoff", f'{retry.backoff!r} is not a Gateway API duration (like "10s", "1m30s", "500ms")')


def check_backend_lb_policy(c: Checker, policy: m.BackendLBPolicy) -> m.BackendLBPolicy | None:
    spec = policy.spec
    check_target_refs(c, spec.target_refs)
    check_session_persistence(c, "spec.sessionPersistence", spec.session_persistence)
    return policy if c.ok else None
