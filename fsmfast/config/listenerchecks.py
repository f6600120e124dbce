"""Per-object rules for listener protocols and TLS, TLSRoute, TCPRoute and GatewayTLSPolicy.

What Gateway API's CRD validation would refuse at ``kubectl apply`` is an error (an HTTPS
listener without certificates, ``tls`` on a TCP listener); what it accepts but fsmfast does
not do is a warning (UDP, ``tls.options``). Whether the referenced Secrets exist and hold a
usable certificate is decided at compile time (``fsmfast.compile.frontends``).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from msgspec.structs import replace

from fsmfast.config import model as m

if TYPE_CHECKING:
    from fsmfast.config.checks import Checker

SERVED_PROTOCOLS = ("HTTP", "HTTPS", "TLS", "TCP")
HTTP_PROTOCOLS = ("HTTP", "HTTPS")
CLIENT_CERT_HEADER = "fsmfast.io/client-cert-header"
# RFC 9110 token: a header name.
_TOKEN = re.compile(r"[A-Za-z0-9!#$%&'*+\-.^_`|~]+")


def _gk(group: str, kind: str) -> str:
    return f"{group}/{kind}" if group else kind


def check_listener(c: Checker, path: str, listener: m.GatewayListener) -> m.GatewayListener:
    """Protocol and ``tls`` of one listener (its hostname is already checked)."""
    protocol = listener.protocol
    tls = listener.tls
    if protocol not in SERVED_PROTOCOLS:
        if protocol == "UDP":
            c.warn(path, "UDP listeners are out of scope for fsmfast; listener ignored")
        else:
            hint = " (protocol names are case-sensitive)" if protocol.upper() in SERVED_PROTOCOLS else ""
            c.warn(path, f"listener protocol {protocol} is not supported; listener ignored{hint}")
        return listener
    if protocol in ("HTTP", "TCP"):
        if tls is not None:
            c.error(f"{path}.tls", f"must not be set for protocol {protocol}")
        return listener
    if tls is None:
        c.error(f"{path}.tls", f"required for protocol {protocol}")
        return listener
    tpath = f"{path}.tls"
    if protocol == "HTTPS" and tls.mode != "Terminate":
        c.error(f"{tpath}.mode", "must be Terminate for protocol HTTPS (use protocol TLS for Passthrough)")
    if tls.mode == "Terminate" and not tls.certificate_refs:
        c.error(f"{tpath}.certificateRefs", "at least one certificate is required when mode is Terminate")
    if tls.mode == "Passthrough":
        if tls.certificate_refs:
            c.warn(f"{tpath}.certificateRefs", "ignored: a Passthrough listener does not terminate TLS")
        if tls.frontend_validation is not None:
            c.warn(f"{tpath}.frontendValidation", "ignored: a Passthrough listener does not terminate TLS")
    for i, ref in enumerate(tls.certificate_refs):
        if (ref.group, ref.kind) != ("", "Secret"):
            c.error(
                f"{tpath}.certificateRefs[{i}]",
                f'must reference a Secret (group "", kind Secret), got {_gk(ref.group, ref.kind)}',
            )
    if tls.frontend_validation is not None:
        for i, ca_ref in enumerate(tls.frontend_validation.ca_certificate_refs):
            if ca_ref.group != "" or ca_ref.kind not in ("ConfigMap", "Secret"):
                c.error(
                    f"{tpath}.frontendValidation.caCertificateRefs[{i}]",
                    f"must reference a ConfigMap or a Secret, got {_gk(ca_ref.group, ca_ref.kind)}",
                )
    if tls.options:
        c.warn(f"{tpath}.options", "TLS options are not applied (TLS 1.2 and 1.3 with OpenSSL's default ciphers)")
    return listener


def check_client_cert_header(c: Checker, gw: m.Gateway) -> m.Gateway:
    value = gw.metadata.annotations.get(CLIENT_CERT_HEADER)
    if value is not None and not _TOKEN.fullmatch(value):
        c.error(f"metadata.annotations[{CLIENT_CERT_HEADER}]", f"{value!r} is not a valid header name")
    return gw


def _check_l4_rules(c: Checker, rules: list[m.L4RouteRule], kind: str) -> None:
    if not rules:
        c.error("spec.rules", "at least one rule is required")
    elif len(rules) > 1:
        c.warn("spec.rules", f"a {kind} has no matches to tell rules apart: only spec.rules[0] is used")
    for i, rule in enumerate(rules):
        if not rule.backend_refs:
            c.warn(f"spec.rules[{i}].backendRefs", "none listed, so connections routed here are closed")
        for k, ref in enumerate(rule.backend_refs):
            if ref.group == "" and ref.kind == "Service" and ref.port is None:
                c.error(f"spec.rules[{i}].backendRefs[{k}].port", "required")


def check_tlsroute(c: Checker, route: m.TLSRoute) -> m.TLSRoute | None:
    spec = route.spec
    hostnames = c.route_hostnames(spec.hostnames)
    if not spec.parent_refs:
        c.warn("spec.parentRefs", "none listed, so this route is not attached to any Gateway")
    _check_l4_rules(c, spec.rules, "TLSRoute")
    return replace(route, spec=replace(spec, hostnames=hostnames)) if c.ok else None


def check_tcproute(c: Checker, route: m.TCPRoute) -> m.TCPRoute | None:
    if not route.spec.parent_refs:
        c.warn("spec.parentRefs", "none listed, so this route is not attached to any Gateway")
    _check_l4_rules(c, route.spec.rules, "TCPRoute")
    return route if c.ok else None


def check_gateway_tls_policy(c: Checker, policy: m.GatewayTLSPolicy) -> m.GatewayTLSPolicy | None:
    target = policy.spec.target_ref
    if (target.group, target.kind) != (m.GATEWAY_GROUP, "Gateway"):
        c.error(
            "spec.targetRef",
            f"must reference a Gateway (group {m.GATEWAY_GROUP}, kind Gateway), got {_gk(target.group, target.kind)}",
        )
    if not policy.spec.ports:
        c.warn("spec.ports", "none listed, so this policy has no effect (only spec.ports[] entries take effect)")
    seen: dict[int, int] = {}
    for i, entry in enumerate(policy.spec.ports):
        if entry.port in seen:
            c.error(f"spec.ports[{i}].port", f"duplicate port {entry.port} (also spec.ports[{seen[entry.port]}])")
        seen.setdefault(entry.port, i)
    return policy if c.ok else None


def policy_mtls(policy: m.GatewayTLSPolicy, index: int) -> bool:
    """``spec.ports[index].config.mTLS`` falling back to ``spec.config.mTLS``, then false (FSM)."""
    own = policy.spec.ports[index].config
    if own is not None and own.m_tls is not None:
        return own.m_tls
    default = policy.spec.config
    return bool(default is not None and default.m_tls)
