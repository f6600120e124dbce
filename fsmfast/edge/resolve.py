"""Which edge policies (issue 20) apply where: Gateway ports, route hostnames and route rules,
resolved once per compile into ``Listener.edge`` and ``VirtualHost.edge`` (fsmfast.snapshot).

FSM's rules (../shared reference, fsm-policies §3), per kind:

- A policy falls into one category (fsmfast.config.edge.category): Gateway ports, route
  hostnames, or route matches. Its entries' configs are merged over ``spec.config`` and defaulted.
- Per Gateway port, route hostname or route rule match, policies are taken oldest first
  (creationTimestamp, then namespace/name): the first wins, and a later one whose computed
  setting differs is reported as Conflicted on its entry and ignored there.
- A route-level entry applies to the rule matches that deep-equal its ``match`` after CRD
  defaulting (both sides are decoded into the same defaulted struct).
- A hostname-level entry applies to the requests of a virtual host its hostname covers (the
  same name, or a wildcard over it); the most specific such entry of the route wins.
- Per rule: rate limits and access control apply hostname level first, then route level; a
  route-level fault injection replaces the hostname-level one.

A missing target, a port the Gateway has no listener on, a hostname the route lacks and a match no
rule has are warnings naming the field (as for the resilience policies): that entry has no effect.
Nothing here runs per request.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import msgspec

from fsmfast.compile.conflicts import Candidate, oldest
from fsmfast.compile.index import Index, age_key
from fsmfast.config import edge as e
from fsmfast.config import model as m
from fsmfast.config.hostnames import covers, intersect, specificity
from fsmfast.config.issues import Issues, Where
from fsmfast.edge.access import parse_entry
from fsmfast.snapshot import (
    Abort,
    AccessControl,
    Bandwidth,
    ClientKey,
    Delay,
    EdgeRule,
    FaultInjection,
    HeaderValue,
    Listener,
    PortEdge,
    RateLimit,
    VirtualHost,
)

UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}

# Manifests bucket, the snapshot slot of a hostname/route entry, of a port entry.
_BUCKETS = (
    ("rate_limit_policies", "rate", "bandwidth"),
    ("access_control_policies", "access", "access"),
    ("fault_injection_policies", "fault", ""),
)


def rate_limit(name: str, cfg: m.L7RateLimit) -> RateLimit:
    assert cfg.requests is not None and cfg.stat_time_window is not None  # checked when loading
    key = None
    if cfg.key is not None:
        header = cfg.key.name.lower() if cfg.key.type == "Header" and cfg.key.name else None
        key = ClientKey(type=cfg.key.type, header=header)
    return RateLimit(
        policy=name,
        requests=cfg.requests,
        window=cfg.stat_time_window,
        burst=cfg.burst if cfg.burst is not None else cfg.requests,
        backlog=cfg.backlog if cfg.backlog is not None else e.DEFAULT_BACKLOG,
        status=cfg.response_status_code if cfg.response_status_code is not None else e.DEFAULT_RATE_LIMIT_STATUS,
        headers=tuple(HeaderValue(h.name, h.value) for h in cfg.response_headers_to_add or ()),
        mode=cfg.mode or "Local",
        key=key,
    )


def _networks(items: list[str] | None) -> tuple[str, ...]:
    out: list[str] = []
    for text in items or ():
        net = parse_entry(text).normalized  # checked when loading
        if net not in out:
            out.append(net)
    return tuple(out)


def access_control(name: str, cfg: m.AccessControlConfig) -> AccessControl:
    whitelist = _networks(cfg.whitelist)
    xff = bool(cfg.enable_xff)
    return AccessControl(
        policy=name,
        whitelist=whitelist,
        blacklist=() if whitelist else _networks(cfg.blacklist),  # FSM: a whitelist wins
        status=cfg.status_code if cfg.status_code is not None else e.DEFAULT_ACCESS_STATUS,
        message=cfg.message or "",
        enable_xff=xff,
        trusted_hops=(cfg.trusted_hops or 0) if xff else 0,
        trusted_proxies=_networks(cfg.trusted_proxies) if xff else (),
    )


def fault_injection(name: str, cfg: m.FaultInjectionConfig, unit: str) -> FaultInjection:
    delay = None
    if cfg.delay is not None:
        # fsmfast honours every unit of the CRD; FSM's script read h and d as ms.
        scale = UNIT_SECONDS[cfg.delay.unit or unit]
        span = cfg.delay.range
        low, high = (span.min, span.max) if span is not None else (cfg.delay.fixed, cfg.delay.fixed)
        assert low is not None and high is not None  # checked when loading
        delay = Delay(percent=cfg.delay.percent, min=low * scale, max=high * scale)
    abort = None
    if cfg.abort is not None:
        assert cfg.abort.status_code is not None  # checked when loading
        abort = Abort(percent=cfg.abort.percent, status=cfg.abort.status_code, message=cfg.abort.message or "")
    return FaultInjection(policy=name, delay=delay, abort=abort)


def _value(policy: e.EdgePolicy, lst: str, index: int) -> Any:
    name = f"{policy.kind} {policy.key}"
    cfg = e.entry_config(policy, lst, index)
    if isinstance(policy, m.RateLimitPolicy):
        return Bandwidth(policy=name, bps=cfg) if lst == "ports" else rate_limit(name, cfg)
    if isinstance(policy, m.AccessControlPolicy):
        return access_control(name, cfg)
    return fault_injection(name, cfg, policy.spec.unit)


def rule_name(route: m.HTTPRoute, i: int, j: int) -> str:
    return f"httproute/{route.namespace}/{route.name}/rule/{i}/match/{j}"


class EdgePolicies:
    """Every edge policy resolved to ports, route hostnames and rule matches once, with every
    conflict and missing target reported (``fsmfast check`` lists them)."""

    def __init__(self, index: Index, issues: Issues) -> None:
        self.index = index
        self.issues = issues
        self.routes = {r.key: r for r in index.manifests.routes}
        self.ports: dict[int, dict[str, Any]] = defaultdict(dict)
        # route key -> [(hostname, slot, setting)], the winners only
        self.hosts: dict[str, list[tuple[str, str, Any]]] = defaultdict(list)
        self.rules: dict[str, dict[str, Any]] = defaultdict(dict)
        for bucket, slot, port_slot in _BUCKETS:
            found: dict[tuple[Any, ...], list[Candidate]] = defaultdict(list)
            for policy in sorted(getattr(index.manifests, bucket), key=age_key):
                self._add(policy, found)
            for key in sorted(found, key=str):
                winner = oldest(self.issues, found[key], _what(key))
                if key[0] == "port":
                    self.ports[key[1]][port_slot] = winner.value
                elif key[0] == "host":
                    self.hosts[key[1]].append((key[2], slot, winner.value))
                else:
                    self.rules[key[1]][slot] = winner.value

    @property
    def empty(self) -> bool:
        return not (self.ports or self.hosts or self.rules)

    # -- into the snapshot ---------------------------------------------------------------------

    def listener(self, listener: Listener) -> Listener:
        """``listener`` with its port's edge settings and its virtual hosts' per-rule ones."""
        if self.empty:
            return listener
        changes: dict[str, Any] = {}
        slots = self.ports.get(listener.port)
        if slots:
            changes["edge"] = PortEdge(**slots)
        vhosts = tuple(self._vhost(vh) for vh in listener.vhosts)
        if vhosts != listener.vhosts:
            changes["vhosts"] = vhosts
        return msgspec.structs.replace(listener, **changes) if changes else listener

    def _vhost(self, vh: VirtualHost) -> VirtualHost:
        edge: dict[str, EdgeRule] = {}
        for rule in vh.rules:
            parts = rule.name.split("/")
            route_key = f"{parts[1]}/{parts[2]}" if parts[0] == "httproute" else ""
            host: dict[str, Any] = {}
            names: dict[str, str] = {}
            # The most specific hostname entry covering this virtual host, per slot.
            for hostname, slot, value in sorted(self.hosts.get(route_key, ()), key=lambda x: specificity(x[0])):
                if slot not in host and covers(hostname, vh.hostname):
                    host[slot] = value
                    names[slot] = hostname
            own = self.rules.get(rule.name, {})
            if not host and not own:
                continue
            rates = []
            if host.get("rate") is not None:  # one quota for every rule of the hostname entry
                rates.append(msgspec.structs.replace(host["rate"], scope=f"hostname {route_key} {names['rate']}"))
            if own.get("rate") is not None:
                rates.append(msgspec.structs.replace(own["rate"], scope=f"match {rule.name}"))
            edge[rule.name] = EdgeRule(
                rate_limits=tuple(rates),
                access=tuple(x for x in (host.get("access"), own.get("access")) if x is not None),
                fault=own.get("fault") or host.get("fault"),
            )
        return msgspec.structs.replace(vh, edge=edge) if edge else vh

    # -- targets -------------------------------------------------------------------------------

    def _add(self, policy: e.EdgePolicy, out: dict[tuple[Any, ...], list[Candidate]]) -> None:
        lst = e.category(policy)
        spec: Any = policy.spec
        target = spec.target_ref
        if lst is None or lst == "grpc" or target.kind == "GRPCRoute":
            return  # no effect, reported when loading (fsmfast serves no GRPCRoute)
        where = Where.of(policy)
        key = f"{target.namespace or policy.namespace}/{target.name}"
        if lst == "ports":
            gw = self.index.gateways.get(key)
            if gw is None:
                self.issues.warn(where, "spec.targetRef", f"gateway {key} not found; policy has no effect")
                return
            ports = {listener.port for listener in gw.spec.listeners}
            for i, entry in enumerate(spec.ports):
                if entry.port not in ports:
                    self.issues.warn(
                        where,
                        f"spec.ports[{i}].port",
                        f"gateway {key} has no listener on port {entry.port}; this entry has no effect",
                    )
                    continue
                out[("port", entry.port)].append(Candidate(policy, f"spec.ports[{i}]", _value(policy, lst, i)))
            return
        route = self.routes.get(key)
        if route is None:
            self.issues.warn(where, "spec.targetRef", f"HTTPRoute {key} not found; policy has no effect")
            return
        if lst == "hostnames":
            self._add_hostnames(policy, route, out)
            return
        for k, entry in enumerate(spec.http):
            hits = [
                (i, j)
                for i, rule in enumerate(route.spec.rules)
                for j, match in enumerate(rule.matches)
                if match == entry.match
            ]
            if not hits:
                self.issues.warn(
                    where,
                    f"spec.http[{k}].match",
                    f"equals no match of HTTPRoute {key} (compared field by field after defaults);"
                    " this entry has no effect",
                )
            for i, j in hits:
                value = _value(policy, lst, k)
                out[("rule", rule_name(route, i, j), key, i, j)].append(Candidate(policy, f"spec.http[{k}]", value))

    def _add_hostnames(
        self, policy: e.EdgePolicy, route: m.HTTPRoute, out: dict[tuple[Any, ...], list[Candidate]]
    ) -> None:
        spec: Any = policy.spec
        for k, entry in enumerate(spec.hostnames):
            hostname = entry.hostname.lower()
            names = route.spec.hostnames
            if names and not any(intersect(name, hostname) is not None for name in names):
                self.issues.warn(
                    Where.of(policy),
                    f"spec.hostnames[{k}].hostname",
                    f"HTTPRoute {route.key} has no hostname matching {hostname} (it has {', '.join(names)});"
                    " this entry has no effect",
                )
                continue
            value = _value(policy, "hostnames", k)
            out[("host", route.key, hostname)].append(Candidate(policy, f"spec.hostnames[{k}]", value))


def _what(key: tuple[Any, ...]) -> str:
    if key[0] == "port":
        return f"gateway port {key[1]}"
    if key[0] == "host":
        return f"HTTPRoute {key[1]} hostname {key[2]}"
    return f"HTTPRoute {key[2]} spec.rules[{key[3]}].matches[{key[4]}]"
