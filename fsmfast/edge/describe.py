"""Words for the edge policies of a snapshot (issue 20), shared by ``fsmfast explain`` and the admin
listener's /config (through fsmfast.policytext), so the two never describe a policy differently."""

from __future__ import annotations

from fsmfast.config.duration import format_duration
from fsmfast.snapshot import AccessControl, Bandwidth, EdgeRule, FaultInjection, PortEdge, RateLimit


def rate_limit_text(r: RateLimit) -> str:
    per = "" if r.key is None else " per client address" if r.key.type == "ClientIP" else f" per {r.key.header} value"
    parts = [
        f"{r.requests} requests per {format_duration(float(r.window))}{per}",
        f"burst {r.burst}",
        f"{r.backlog} may wait",
        f"then {r.status}",
    ]
    if r.headers:
        parts.append("adds " + ", ".join(h.name for h in r.headers))
    if r.mode == "Global":
        parts.append("global (shared by every gateway)")
    return "; ".join(parts)


def access_text(a: AccessControl) -> str:
    if a.whitelist:
        parts = ["allow only " + ", ".join(a.whitelist)]
    elif a.blacklist:
        parts = ["deny " + ", ".join(a.blacklist)]
    else:
        parts = ["allow everyone"]
    parts.append(f"refused with {a.status}" + (f" {a.message!r}" if a.message else ""))
    if a.enable_xff and (a.trusted_hops or a.trusted_proxies):
        trusted = []
        if a.trusted_hops:
            trusted.append(f"{a.trusted_hops} trusted {'hop' if a.trusted_hops == 1 else 'hops'}")
        if a.trusted_proxies:
            trusted.append("proxies " + ", ".join(a.trusted_proxies))
        parts.append("client from X-Forwarded-For past " + " and ".join(trusted))
    else:
        parts.append("client is the TCP peer")
    return "; ".join(parts)


def fault_text(f: FaultInjection) -> str:
    parts = []
    if f.delay is not None:
        d = f.delay
        wait = format_duration(d.min) if d.min == d.max else f"{format_duration(d.min)}-{format_duration(d.max)}"
        parts.append(f"delay {wait} for {d.percent}%")
    if f.abort is not None:
        parts.append(
            f"abort with {f.abort.status} for {f.abort.percent}%" + (f" {f.abort.message!r}" if f.abort.message else "")
        )
    return "; ".join(parts)


def bandwidth_text(b: Bandwidth) -> str:
    return f"{b.bps} bytes/s per connection, each direction"


def port_edge_texts(p: PortEdge) -> list[tuple[str, str, str]]:
    """(kind, source policy, words) for a port's settings."""
    out = []
    if p.access is not None:
        out.append(("access control", p.access.policy, access_text(p.access)))
    if p.bandwidth is not None:
        out.append(("bandwidth", p.bandwidth.policy, bandwidth_text(p.bandwidth)))
    return out


def rule_edge_texts(e: EdgeRule) -> list[tuple[str, str, str]]:
    """(kind, source policy, words) for a rule's settings, in the order they apply."""
    out = [("access control", a.policy, access_text(a)) for a in e.access]
    out += [("rate limit", r.policy, rate_limit_text(r)) for r in e.rate_limits]
    if e.fault is not None:
        out.append(("fault injection", e.fault.policy, fault_text(e.fault)))
    return out
