"""FSM's edge policies (issue 20): RateLimitPolicy, AccessControlPolicy and FaultInjectionPolicy.
Validation, the category a policy falls into, the field-by-field merge of an entry's ``config``
over the spec-level ``config``, and the CRD defaults applied after it.

Defaults (FSM v1.2.9 CRDs, ``gateway.flomesh.io/v1alpha1``):
- RateLimit (L7): ``mode`` Local, ``backlog`` 10, ``burst`` = ``requests``,
  ``responseStatusCode`` 429; ``requests`` and ``statTimeWindow`` required. A port's ``bps``
  defaults to the spec-level ``bps``.
- AccessControl: ``enableXFF`` false, ``statusCode`` 403, ``message`` "".
- FaultInjection: ``delay.unit`` falls back to the spec-level ``unit`` (default ms).

fsmfast extensions (optional, in the same config): RateLimit ``key`` (``{type: ClientIP}`` or
``{type: Header, name: X-Api-Key}``: one quota per client address or header value) and
AccessControl ``trustedHops`` / ``trustedProxies`` (which X-Forwarded-For entry is the client).

Whether a target, port, hostname or match exists is decided with the other objects, when
compiling (fsmfast.edge.resolve).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from fsmfast.config import httproute
from fsmfast.config import model as m
from fsmfast.config.policies import merge
from fsmfast.config.targets import gk, port_once
from fsmfast.edge.access import parse_entry

if TYPE_CHECKING:
    from fsmfast.config.checks import Checker

DEFAULT_MODE = "Local"
DEFAULT_BACKLOG = 10
DEFAULT_RATE_LIMIT_STATUS = 429
DEFAULT_ACCESS_STATUS = 403

MAX_ENTRIES = 16  # ports, hostnames, http, grpc, responseHeadersToAdd
MAX_ADDRESSES = 32  # whitelist, blacklist

# The warning for a fleet-wide rate limit, which the master leaves out of its log when it runs with
# --ratelimit-redis (the configuration cannot know the run's flags; fsmfast.master.arbiter).
NEEDS_REDIS = "mode: Global: applied only by a gateway run with --ratelimit-redis (its quotas live in Redis)"

EdgePolicy = m.RateLimitPolicy | m.AccessControlPolicy | m.FaultInjectionPolicy

_TOKEN = re.compile(r"[A-Za-z0-9!#$%&'*+\-.^_`|~]+")
_NO_CONTENT = frozenset({204, 205, 304})  # RFC 9110 §15.3.5, §15.3.6, §15.4.5

_CONFIG: dict[str, type[Any]] = {
    "RateLimitPolicy": m.L7RateLimit,
    "AccessControlPolicy": m.AccessControlConfig,
    "FaultInjectionPolicy": m.FaultInjectionConfig,
}

# Which target kinds each policy may name (all in group gateway.networking.k8s.io).
_TARGETS: dict[str, tuple[str, ...]] = {
    "RateLimitPolicy": ("Gateway", "HTTPRoute", "GRPCRoute"),
    "AccessControlPolicy": ("Gateway", "HTTPRoute", "GRPCRoute"),
    "FaultInjectionPolicy": ("HTTPRoute", "GRPCRoute"),
}

# The lists of a spec, and the target kind each one takes effect for.
_LISTS = (
    ("ports", "a Gateway"),
    ("hostnames", "an HTTPRoute or GRPCRoute"),
    ("http", "an HTTPRoute"),
    ("grpc", "a GRPCRoute"),
)


def category(policy: EdgePolicy) -> str | None:
    """FSM's one category per policy, tested in this order: "ports" (Gateway with ports),
    "hostnames" (HTTPRoute/GRPCRoute with hostnames), "http" (HTTPRoute with http), "grpc"
    (GRPCRoute with grpc); None when none applies."""
    spec: Any = policy.spec
    target = spec.target_ref
    if target.group != m.GATEWAY_GROUP:
        return None
    if target.kind == "Gateway" and getattr(spec, "ports", None):
        return "ports"
    if target.kind in ("HTTPRoute", "GRPCRoute") and spec.hostnames:
        return "hostnames"
    if target.kind == "HTTPRoute" and spec.http:
        return "http"
    if target.kind == "GRPCRoute" and spec.grpc:
        return "grpc"
    return None


def entry_config(policy: EdgePolicy, lst: str, index: int) -> Any:
    """``spec.<lst>[index].config`` merged over ``spec.config`` (CRD defaults not yet applied).
    RateLimitPolicy ``ports`` entries have ``bps`` instead: the entry's, else ``spec.bps``."""
    spec: Any = policy.spec
    entry = getattr(spec, lst)[index]
    if isinstance(policy, m.RateLimitPolicy) and lst == "ports":
        return entry.bps if entry.bps is not None else spec.bps
    return merge(spec.config, entry.config, _CONFIG[policy.kind])


def check_edge_policy(c: Checker, policy: EdgePolicy) -> EdgePolicy | None:
    spec: Any = policy.spec
    kind = policy.kind
    target = spec.target_ref
    allowed = _TARGETS[kind]
    if target.group != m.GATEWAY_GROUP or target.kind not in allowed:
        names = ", ".join(allowed[:-1]) + " or " + allowed[-1]
        got = gk(target.group, target.kind)
        article = "an" if names.startswith("HTTP") else "a"
        c.error("spec.targetRef", f"must reference {article} {names} (group {m.GATEWAY_GROUP}), got {got}")
    elif target.kind == "GRPCRoute":
        c.warn("spec.targetRef", "GRPCRoute is not served by fsmfast; this policy has no effect")
    if spec.config is not None:
        _check_config(c, "spec.config", spec.config, spec)
    for lst, _ in _LISTS:
        entries = getattr(spec, lst, [])
        if len(entries) > MAX_ENTRIES:
            c.error(f"spec.{lst}", f"at most {MAX_ENTRIES} entries, got {len(entries)}")
    _check_ports(c, policy)
    _check_hostnames(c, policy)
    for k, entry in enumerate(spec.http):
        httproute._match(c, f"spec.http[{k}].match", entry.match)
    for k, entry in enumerate(spec.grpc):
        _check_grpc_match(c, f"spec.grpc[{k}].match", entry.match)
    for lst in ("hostnames", "http", "grpc"):
        for k, entry in enumerate(getattr(spec, lst)):
            path = f"spec.{lst}[{k}].config"
            if entry.config is not None:
                _check_config(c, path, entry.config, spec)
            _check_merged(c, path, entry_config(policy, lst, k), spec)
    _check_category(c, policy)
    if c.ok:
        not_applied_yet(c, policy)
        return policy
    return None


def not_applied_yet(c: Checker, policy: EdgePolicy) -> None:
    """What a policy needs to be enforced, said when it is accepted, so nobody believes a route is
    protected that is not: a fleet-wide (``mode: Global``) rate limit needs the gateway to run with
    ``--ratelimit-redis``, which is not known here."""
    chosen = category(policy)
    if not isinstance(policy, m.RateLimitPolicy) or chosen is None or chosen == "ports":
        return
    entries = range(len(getattr(policy.spec, chosen) or ()))
    if any(entry_config(policy, chosen, k).mode == "Global" for k in entries):
        c.warn("", NEEDS_REDIS)


def _check_category(c: Checker, policy: EdgePolicy) -> None:
    """Warn about what FSM's one-category rule leaves without effect."""
    spec: Any = policy.spec
    target = spec.target_ref
    chosen = category(policy)
    if chosen is None:
        if target.group == m.GATEWAY_GROUP and target.kind in _TARGETS[policy.kind]:
            wanted = {"Gateway": "ports", "HTTPRoute": "hostnames or http", "GRPCRoute": "hostnames or grpc"}
            c.warn("spec", f"no {wanted[target.kind]} entries for a {target.kind} target, so this policy has no effect")
        return
    for lst, for_kind in _LISTS:
        if lst != chosen and getattr(spec, lst, None):
            why = f"spec.{chosen} is used" if target.kind in for_kind else f"only for {for_kind} target"
            c.warn(f"spec.{lst}", f"ignored ({why}; a policy takes effect in one category only)")
    if isinstance(policy, m.RateLimitPolicy) and chosen != "ports" and spec.bps is not None:
        c.warn("spec.bps", "ignored (only for ports of a Gateway target)")
    if chosen == "ports" and spec.config is not None and isinstance(policy, m.RateLimitPolicy):
        c.warn("spec.config", "ignored (a Gateway port takes bps only)")


def _check_ports(c: Checker, policy: EdgePolicy) -> None:
    spec: Any = policy.spec
    seen: dict[int, int] = {}
    for i, entry in enumerate(getattr(spec, "ports", [])):
        path = f"spec.ports[{i}]"
        port_once(c, seen, i, entry.port)
        if isinstance(policy, m.RateLimitPolicy):
            if entry.bps is None and spec.bps is None:
                c.error(f"{path}.bps", "required (here or in spec.bps)")
            continue
        if entry.config is not None:
            _check_config(c, f"{path}.config", entry.config, spec)
        _check_merged(c, f"{path}.config", entry_config(policy, "ports", i), spec)


def _check_hostnames(c: Checker, policy: EdgePolicy) -> None:
    spec: Any = policy.spec
    seen: dict[str, int] = {}
    for k, entry in enumerate(spec.hostnames):
        name = c.hostname(f"spec.hostnames[{k}].hostname", entry.hostname)
        if name in seen:
            c.error(f"spec.hostnames[{k}].hostname", f"duplicate hostname {name} (also spec.hostnames[{seen[name]}])")
        seen.setdefault(name, k)


def _check_grpc_match(c: Checker, path: str, match: m.GRPCRouteMatch) -> None:
    method = match.method
    if method is not None:
        if method.service is None and method.method is None:
            c.error(f"{path}.method", "one of service or method is required")
        for field, value in (("service", method.service), ("method", method.method)):
            if value is not None and method.type == "RegularExpression":
                problem = httproute.regex_problem(value)
                if problem:
                    c.error(f"{path}.method.{field}", problem)
    for k, h in enumerate(match.headers):
        if not _TOKEN.fullmatch(h.name):
            c.error(f"{path}.headers[{k}].name", f"{h.name!r} is not a valid header name")
        if h.type == "RegularExpression":
            problem = httproute.regex_problem(h.value)
            if problem:
                c.error(f"{path}.headers[{k}].value", problem)


def _status(c: Checker, path: str, status: int | None) -> None:
    # The CRDs allow 1-10000, but the gateway writes this status with a body: outside 200-599 it
    # is not a valid final HTTP status, and 204, 205 and 304 cannot carry content.
    if status is not None and (not 200 <= status <= 599 or status in _NO_CONTENT):
        c.error(path, f"expected a status 200-599 other than 204, 205, 304; got {status}")


def _addresses(c: Checker, path: str, items: list[str] | None) -> None:
    # The data plane's own parser (fsmfast.edge.access), so check and requests read a list alike.
    if items is None:
        return
    if len(items) > MAX_ADDRESSES:
        c.error(path, f"at most {MAX_ADDRESSES} entries, got {len(items)}")
    for k, text in enumerate(items):
        try:
            entry = parse_entry(text)
        except ValueError as exc:
            c.error(f"{path}[{k}]", str(exc))
            continue
        if entry.loose:
            c.warn(f"{path}[{k}]", f"host bits set in {text!r}; read as {entry.normalized}")


def _check_config(c: Checker, path: str, cfg: Any, spec: Any) -> None:
    """The fields of one written config, before merging."""
    if isinstance(cfg, m.L7RateLimit):
        _status(c, f"{path}.responseStatusCode", cfg.response_status_code)
        headers = cfg.response_headers_to_add or []
        if len(headers) > MAX_ENTRIES:
            c.error(f"{path}.responseHeadersToAdd", f"at most {MAX_ENTRIES} entries, got {len(headers)}")
        for k, h in enumerate(headers):
            if not _TOKEN.fullmatch(h.name):
                c.error(f"{path}.responseHeadersToAdd[{k}].name", f"{h.name!r} is not a valid header name")
            if "\r" in h.value or "\n" in h.value or "\0" in h.value:
                c.error(f"{path}.responseHeadersToAdd[{k}].value", "must not contain CR, LF or NUL")
        key = cfg.key
        if key is not None:
            if key.type == "Header" and key.name is None:
                c.error(f"{path}.key.name", "required when type is Header")
            elif key.type == "Header" and key.name is not None and not _TOKEN.fullmatch(key.name):
                c.error(f"{path}.key.name", f"{key.name!r} is not a valid header name")
            elif key.type == "ClientIP" and key.name is not None:
                c.error(f"{path}.key.name", "only allowed when type is Header")
    elif isinstance(cfg, m.AccessControlConfig):
        _addresses(c, f"{path}.whitelist", cfg.whitelist)
        _addresses(c, f"{path}.blacklist", cfg.blacklist)
        _addresses(c, f"{path}.trustedProxies", cfg.trusted_proxies)
        _status(c, f"{path}.statusCode", cfg.status_code)
    elif isinstance(cfg, m.FaultInjectionConfig):
        delay = cfg.delay
        if delay is not None:
            if delay.fixed is None and delay.range is None:
                c.error(f"{path}.delay", "fixed or range is required")
            elif delay.fixed is not None and delay.range is not None:
                c.error(f"{path}.delay", "fixed and range are mutually exclusive; set one")
            if delay.range is not None and delay.range.min > delay.range.max:
                c.error(f"{path}.delay.range", f"min ({delay.range.min}) must not exceed max ({delay.range.max})")
        abort = cfg.abort
        if abort is not None:
            if abort.status_code is None:
                c.error(f"{path}.abort.statusCode", "required")
            _status(c, f"{path}.abort.statusCode", abort.status_code)


def _check_merged(c: Checker, path: str, cfg: Any, spec: Any) -> None:
    """What must hold once an entry's config is merged over ``spec.config``."""
    if isinstance(cfg, m.L7RateLimit):
        for attr, name in (("requests", "requests"), ("stat_time_window", "statTimeWindow")):
            if getattr(cfg, attr) is None:
                c.error(f"{path}.{name}", "required (here or in spec.config)")
    elif isinstance(cfg, m.AccessControlConfig):
        if cfg.whitelist and cfg.blacklist:
            c.warn(f"{path}.blacklist", "ignored: a whitelist is set (FSM's rule)")
        if not cfg.whitelist and not cfg.blacklist:
            c.warn(path, "neither whitelist nor blacklist, so this entry allows everyone")
        extension = cfg.trusted_hops is not None or cfg.trusted_proxies is not None
        if cfg.enable_xff and not extension:
            c.warn(
                f"{path}.enableXFF",
                "without trustedHops or trustedProxies the client address is the TCP peer: fsmfast does not"
                " trust X-Forwarded-For a client could write itself (docs/edge-policies.md)",
            )
        elif extension and not cfg.enable_xff:
            c.warn(f"{path}.enableXFF", "false, so trustedHops and trustedProxies are ignored")
    elif isinstance(cfg, m.FaultInjectionConfig) and cfg.delay is None and cfg.abort is None:
        c.error(path, "delay or abort is required (here or in spec.config)")
