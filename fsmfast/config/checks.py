"""Per-object rules that types alone cannot express, and the defaults that need context.

Each ``check_<kind>`` gets a decoded object, reports problems, and returns the object with
defaults applied and hostnames lower-cased, or None when it has errors. Checks that need
other objects (does the Service exist?) happen at compile time instead.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from msgspec.structs import replace

from fsmfast.config import edge, httproute, listenerchecks, policies
from fsmfast.config.hostnames import hostname_problem
from fsmfast.config.issues import Issues, Where
from fsmfast.config.model import (
    BackendTLSPolicy,
    Base64Error,
    Gateway,
    HTTPRoute,
    Object,
    Secret,
    Service,
    UpstreamTLSConfig,
    UpstreamTLSPolicy,
    decode_base64,
)
from fsmfast.config.targets import check_target_ref, check_target_refs, gk, port_once

SERVICE_NAME_LABEL = "kubernetes.io/service-name"


class Checker:
    def __init__(self, obj: Object, issues: Issues) -> None:
        self.where = Where.of(obj)
        self.issues = issues
        self.ok = True

    def error(self, field: str, message: str) -> None:
        self.ok = False
        self.issues.error(self.where, field, message)

    def warn(self, field: str, message: str) -> None:
        self.issues.warn(self.where, field, message)

    def hostname(self, field: str, name: str, *, wildcard: bool = True) -> str:
        lowered = name.lower()
        problem = hostname_problem(lowered, wildcard=wildcard)
        if problem:
            self.error(field, problem)
        return lowered

    def route_hostnames(self, names: list[str]) -> list[str]:
        """A route's ``spec.hostnames``, each checked, lower-cased and listed once (HTTPRoute, TLSRoute)."""
        out: list[str] = []
        for i, name in enumerate(names):
            lowered = self.hostname(f"spec.hostnames[{i}]", name)
            if lowered not in out:
                out.append(lowered)
        return out


def check_gateway(gw: Gateway, issues: Issues) -> Gateway | None:
    c = Checker(gw, issues)
    listeners = []
    names: dict[str, int] = {}
    seen: dict[tuple[int, str, str | None], int] = {}
    if not gw.spec.listeners:
        c.error("spec.listeners", "at least one listener is required")
    for i, listener in enumerate(gw.spec.listeners):
        path = f"spec.listeners[{i}]"
        if listener.name in names:
            c.error(
                f"{path}.name",
                f'duplicate listener name "{listener.name}" (also spec.listeners[{names[listener.name]}])',
            )
        names.setdefault(listener.name, i)
        if listener.hostname is not None:
            listener = replace(listener, hostname=c.hostname(f"{path}.hostname", listener.hostname))
        key = (listener.port, listener.protocol, listener.hostname)
        if key in seen:
            c.error(path, f"same port, protocol and hostname as spec.listeners[{seen[key]}]")
        seen.setdefault(key, i)
        ns = listener.allowed_routes.namespaces
        if ns.from_ == "Selector" and ns.selector is None:
            c.error(f"{path}.allowedRoutes.namespaces.selector", "required when from is Selector")
        listener = listenerchecks.check_listener(c, path, listener)
        listeners.append(listener)
    gw = listenerchecks.check_client_cert_header(c, gw)
    return replace(gw, spec=replace(gw.spec, listeners=listeners)) if c.ok else None


def check_httproute(route: HTTPRoute, issues: Issues) -> HTTPRoute | None:
    # The HTTPRoute rules (matches, filters, timeouts) live in their own module.
    return httproute.check_httproute(Checker(route, issues), route)


def check_service(svc: Service, issues: Issues) -> Service | None:
    c = Checker(svc, issues)
    ports = svc.spec.ports
    names: dict[str, int] = {}
    numbers: dict[tuple[int, str], int] = {}
    for i, port in enumerate(ports):
        path = f"spec.ports[{i}]"
        if len(ports) > 1 and not port.name:
            c.error(f"{path}.name", "required when the Service has several ports")
        elif port.name in names:
            c.error(f"{path}.name", f'duplicate port name "{port.name}" (also spec.ports[{names[port.name]}])')
        names.setdefault(port.name, i)
        key = (port.port, port.protocol)
        if key in numbers:
            c.error(f"{path}.port", f"duplicate port {port.port}/{port.protocol} (also spec.ports[{numbers[key]}])")
        numbers.setdefault(key, i)
        target = port.target_port
        if isinstance(target, int) and not 1 <= target <= 65535:
            c.error(f"{path}.targetPort", f"must be between 1 and 65535, got {target}")
        elif isinstance(target, str) and (target.isdigit() or not target):
            # A quoted number would be looked up as a port *name* and never match.
            c.error(f"{path}.targetPort", f'expected a port number or a port name, got "{target}"')
    return svc if c.ok else None


def check_endpoint_slice(obj: Any, issues: Issues) -> Any:
    c = Checker(obj, issues)
    if SERVICE_NAME_LABEL not in obj.metadata.labels:
        c.warn("metadata.labels", f"no {SERVICE_NAME_LABEL} label, so this EndpointSlice belongs to no Service")
    for i, endpoint in enumerate(obj.endpoints):
        if len(endpoint.addresses) > 1:
            c.warn(
                f"endpoints[{i}].addresses",
                "only the first address is used (Kubernetes treats the addresses of one endpoint as the same pod)",
            )
    return obj


def check_secret(secret: Secret, issues: Issues) -> Secret | None:
    c = Checker(secret, issues)
    for key in sorted(secret.data):
        try:
            decode_base64(secret.data[key])
        except (Base64Error, ValueError):
            c.error(f"data.{key}", "not valid base64")
    return secret if c.ok else None


def _check_secret_ref(c: Checker, path: str, cfg: UpstreamTLSConfig | None) -> None:
    ref = cfg.certificate_ref if cfg else None
    if ref is not None and (ref.group, ref.kind) != ("", "Secret"):
        c.error(
            f"{path}.certificateRef", f'must reference a Secret (group "", kind Secret), got {gk(ref.group, ref.kind)}'
        )


def check_upstream_tls_policy(policy: UpstreamTLSPolicy, issues: Issues) -> UpstreamTLSPolicy | None:
    c = Checker(policy, issues)
    spec = policy.spec
    check_target_ref(c, spec.target_ref)
    _check_secret_ref(c, "spec.config", spec.config)
    if not spec.ports:
        c.warn("spec.ports", "none listed, so this policy has no effect (only spec.ports[] entries take effect)")
    seen: dict[int, int] = {}
    for i, entry in enumerate(spec.ports):
        path = f"spec.ports[{i}]"
        port_once(c, seen, i, entry.port)
        _check_secret_ref(c, f"{path}.config", entry.config)
        if effective_tls_config(policy, i).certificate_ref is None:
            c.error(f"{path}.config.certificateRef", "required (here or in spec.config)")
    return policy if c.ok else None


def effective_tls_config(policy: UpstreamTLSPolicy, index: int) -> UpstreamTLSConfig:
    """``spec.ports[index].config`` merged field by field over ``spec.config`` (FSM mergeConfig)."""
    default = policy.spec.config or UpstreamTLSConfig()
    own = policy.spec.ports[index].config or UpstreamTLSConfig()
    ref = own.certificate_ref or default.certificate_ref
    mtls = own.m_tls if own.m_tls is not None else default.m_tls
    return UpstreamTLSConfig(certificate_ref=ref, m_tls=bool(mtls))


def check_backend_tls_policy(policy: BackendTLSPolicy, issues: Issues) -> BackendTLSPolicy | None:
    c = Checker(policy, issues)
    spec = policy.spec
    check_target_refs(c, spec.target_refs)
    v = spec.validation
    if v.ca_certificate_refs and v.well_known_ca_certificates:
        c.error("spec.validation", "caCertificateRefs and wellKnownCACertificates are mutually exclusive; set one")
    elif not v.ca_certificate_refs and not v.well_known_ca_certificates:
        c.error("spec.validation", "either caCertificateRefs or wellKnownCACertificates is required")
    for i, ca_ref in enumerate(v.ca_certificate_refs):
        if ca_ref.group != "" or ca_ref.kind not in ("ConfigMap", "Secret"):
            c.error(
                f"spec.validation.caCertificateRefs[{i}]",
                f"must reference a ConfigMap or a Secret, got {gk(ca_ref.group, ca_ref.kind)}",
            )
    hostname = c.hostname("spec.validation.hostname", v.hostname, wildcard=False)
    sans = []
    for i, san in enumerate(v.subject_alt_names):
        path = f"spec.validation.subjectAltNames[{i}]"
        if san.type == "Hostname":
            if not san.hostname:
                c.error(f"{path}.hostname", "required when type is Hostname")
            else:
                san = replace(san, hostname=c.hostname(f"{path}.hostname", san.hostname))
        elif not san.uri:
            c.error(f"{path}.uri", "required when type is URI")
        sans.append(san)
    if not c.ok:
        return None
    validation = replace(v, hostname=hostname, subject_alt_names=sans)
    return replace(policy, spec=replace(spec, validation=validation))


def _unchanged(obj: Object, issues: Issues) -> Object:
    return obj


CHECKS: dict[str, Callable[[Any, Issues], Object | None]] = {
    "Gateway": check_gateway,
    "HTTPRoute": check_httproute,
    "Service": check_service,
    "EndpointSlice": check_endpoint_slice,
    "Secret": check_secret,
    "UpstreamTLSPolicy": check_upstream_tls_policy,
    "BackendTLSPolicy": check_backend_tls_policy,
    # Listener TLS and L4 routes: fsmfast.config.listenerchecks.
    "TLSRoute": lambda obj, issues: listenerchecks.check_tlsroute(Checker(obj, issues), obj),
    "TCPRoute": lambda obj, issues: listenerchecks.check_tcproute(Checker(obj, issues), obj),
    "GatewayTLSPolicy": lambda obj, issues: listenerchecks.check_gateway_tls_policy(Checker(obj, issues), obj),
    # FSM's service-level resilience policies and BackendLBPolicy: fsmfast.config.policies.
    **{
        kind: lambda obj, issues: policies.check_service_policy(Checker(obj, issues), obj)
        for kind in ("RetryPolicy", "HealthCheckPolicy", "CircuitBreakingPolicy", "SessionStickyPolicy")
    },
    "LoadBalancerPolicy": lambda obj, issues: policies.check_service_policy(Checker(obj, issues), obj),
    "BackendLBPolicy": lambda obj, issues: policies.check_backend_lb_policy(Checker(obj, issues), obj),
    # FSM's edge policies (issue 20): fsmfast.config.edge.
    **{
        kind: lambda obj, issues: edge.check_edge_policy(Checker(obj, issues), obj)
        for kind in ("RateLimitPolicy", "AccessControlPolicy", "FaultInjectionPolicy")
    },
}


def check(obj: Object, issues: Issues) -> Object | None:
    return CHECKS.get(obj.kind, _unchanged)(obj, issues)
