"""GET /config: what the gateway serves right now, as JSON, for the operator.

The generation, then per port its listeners, certificates (subject, SANs, not-after), client
certificate trust and virtual hosts with their routes in precedence order; the backends with
their endpoints and upstream TLS settings; the upstream TLS policies and the backends each one
applies to; and every certificate once more in one flat list (``fsmfast status`` reads its
expiries from there).

Routes are listed in the order the snapshot gives them, which is the order the worker's router
tries them (``fsmfast.proxy.router`` builds each virtual host's rules from that very tuple; the
first rule whose match holds wins), and each one carries the words ``fsmfast routes`` prints for
it (``fsmfast.explain``), so the two never describe a rule differently.

Secrets: this module copies fields one by one and never a whole ``Certificate`` or
``UpstreamTLS`` (they hold private keys). Certificates appear only as what
``fsmfast.tls.inventory`` decoded from them: no PEM, no base64, no key, no Secret data.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import msgspec

from fsmfast.edge.describe import port_edge_texts, rule_edge_texts
from fsmfast.explain import backends_text, conditions_text, filters_text, path_text
from fsmfast.policytext import backend_policy_texts
from fsmfast.snapshot import (
    Backend,
    BackendPolicies,
    BackendRef,
    EdgeRule,
    L4Route,
    Listener,
    Rule,
    Snapshot,
    UpstreamTLS,
)
from fsmfast.tls.certs import rfc3339
from fsmfast.tls.inventory import CertInfo, certificates, client_ca_users


def cert_json(cert: CertInfo) -> dict[str, Any]:
    return {
        "namespace": cert.namespace,
        "secret": cert.secret,
        "kind": cert.kind,
        "usage": cert.usage,
        "position": cert.position,
        "subject": cert.subject,
        "issuer": cert.issuer,
        "serial": cert.serial,
        "sans": list(cert.sans),
        "not_before": rfc3339(cert.not_before),
        "not_after": rfc3339(cert.not_after),
        "not_after_epoch": cert.not_after,
        "used_by": list(cert.used_by),
    }


class _Certs:
    """The inventory, looked up by usage and user (a listener's or backend's name)."""

    def __init__(self, certs: list[CertInfo]) -> None:
        self.all = certs
        self._by: dict[tuple[str, str], list[CertInfo]] = defaultdict(list)
        for cert in certs:
            for user in cert.used_by:
                self._by[(cert.usage, user)].append(cert)

    def of(self, usage: str, user: str, secret: str | None = None) -> list[dict[str, Any]]:
        """The certificates ``user`` has for ``usage`` (of the object ``secret``, namespace/name, if given)."""
        found = self._by.get((usage, user), [])
        if secret is not None:
            found = [c for c in found if f"{c.namespace}/{c.secret}" == secret]
        return [cert_json(c) for c in found]


def _refs(refs: tuple[BackendRef, ...]) -> list[dict[str, Any]]:
    return [msgspec.to_builtins(ref) for ref in refs]


def _rule(precedence: int, rule: Rule) -> dict[str, Any]:
    redirect = rule.filters is not None and rule.filters.redirect is not None
    return {
        "precedence": precedence,
        **msgspec.to_builtins(rule),
        # As `fsmfast routes` prints the rule.
        "text": {
            "path": path_text(rule),
            "conditions": conditions_text(rule),
            "backends": "- (redirect)" if redirect else backends_text(rule.backends),
            "filters": filters_text(rule.filters, rule.timeouts),
        },
    }


def _rule_edge(edge: EdgeRule | None) -> dict[str, Any]:
    # Only on a rule that has edge policies, so /config without them reads as before.
    if edge is None:
        return {}
    return {"edge": {"settings": msgspec.to_builtins(edge), "policies": _edge(rule_edge_texts(edge))}}


def _l4(route: L4Route) -> dict[str, Any]:
    return {"name": route.name, "hostname": route.hostname, "backends": _refs(route.backends)}


def _listener(listener: Listener, certs: _Certs) -> dict[str, Any]:
    tls = []
    for spec in listener.tls:
        tls.append(
            {
                "listener": spec.name,
                "hostname": spec.hostname,
                "certificates": [
                    {
                        "secret": cert.name,
                        "sni_names": list(cert.names),
                        "chain": certs.of("listener", spec.name, cert.name),
                    }
                    for cert in spec.certificates
                ],
                "route": _l4(spec.route) if spec.route is not None else None,
            }
        )
    client = None
    if listener.client_ca_pem is not None:
        client = {
            "required": True,
            # Empty: certificates are required but no CA was found, so every client is refused.
            "trusted_cas": certs.of("client-ca", client_ca_users(listener)[0]),
            "subject_header": listener.client_cert_header,
        }
    return {
        "port": listener.port,
        "protocol": listener.protocol,
        "tls_mode": listener.tls_mode,
        "names": list(listener.names),
        "hostnames": [vh.hostname for vh in listener.vhosts] or [r.hostname for r in listener.routes],
        "detailed_errors": listener.detailed_errors,
        "tls": tls,
        "client_certificates": client,
        "virtual_hosts": [
            {
                "hostname": vh.hostname,
                "listeners": list(vh.listeners),
                "routes": [
                    {**_rule(n, rule), **_rule_edge(vh.edge.get(rule.name))} for n, rule in enumerate(vh.rules, 1)
                ],
            }
            for vh in listener.vhosts
        ],
        "l4_routes": [_l4(route) for route in listener.routes],
        # Issue 20's edge policies on the port; [] when none.
        "edge": _edge(port_edge_texts(listener.edge)) if listener.edge is not None else [],
    }


def _edge(texts: list[tuple[str, str, str]]) -> list[dict[str, Any]]:
    """Edge policies (as resolved; the worker applies them, fsmfast.edge): kind, source and words; the
    settings themselves are in the rule's or listener's ``edge``."""
    return [{"kind": kind, "policy": source, "text": text} for kind, source, text in texts]


def _upstream_tls(key: str, tls: UpstreamTLS, certs: _Certs) -> dict[str, Any]:
    return {
        "policy": tls.policy,
        "server_name": tls.server_name,
        "subject_alt_names": [msgspec.to_builtins(san) for san in tls.subject_alt_names],
        "system_ca": tls.system_ca,
        "trusted_cas": certs.of("upstream-ca", key),
        "client_certificate": certs.of("upstream-client", key) if tls.client_cert_pem else None,
        "error": tls.error,
    }


def _backend(key: str, backend: Backend, certs: _Certs) -> dict[str, Any]:
    return {
        "name": backend.name,
        "endpoints": [f"{e.host}:{e.port}" for e in backend.endpoints],
        "tls": _upstream_tls(key, backend.tls, certs) if backend.tls is not None else None,
        # Issue 19's policies; [] when none.
        "policies": _resilience(backend.resilience) if backend.resilience is not None else [],
    }


def _resilience(policies: BackendPolicies) -> list[dict[str, Any]]:
    """One entry per policy kind set on a backend: its source, settings and words."""
    settings = {
        "load balancing": policies.lb,
        "health check": policies.health,
        "retry": policies.retry,
        "circuit breaking": policies.circuit,
        "sticky session": policies.sticky,
        "session persistence": policies.session,
    }
    out = []
    for kind, source, text in backend_policy_texts(policies):
        fields = msgspec.json.decode(msgspec.json.encode(settings[kind]))  # plain lists, as served
        fields.pop("policy", None)
        fields.pop("slots", None)  # the shared arena's bookkeeping, not a setting
        out.append({"kind": kind, "policy": source, "settings": fields, "text": text})
    return out


def _policies(snapshot: Snapshot) -> list[dict[str, Any]]:
    """Upstream TLS policies (``UpstreamTLS.policy`` is "<Kind> <namespace>/<name>") and their backends."""
    by_policy: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for key in sorted(snapshot.backends):
        tls = snapshot.backends[key].tls
        if tls is not None:
            # The error is per backend: an UpstreamTLSPolicy names a Secret per port.
            by_policy[tls.policy].append({"backend": key, "error": tls.error})
    out = []
    for policy, backends in sorted(by_policy.items()):
        kind, _, name = policy.partition(" ")
        out.append({"kind": kind, "name": name, "backends": backends})
    return out


def config_json(snapshot: Snapshot) -> dict[str, Any]:
    """The /config document for ``snapshot`` (plain dicts, lists, strings and numbers)."""
    certs = _Certs(certificates(snapshot))
    return {
        "generation": snapshot.generation,
        "schema": snapshot.schema,
        "source_digest": snapshot.source_digest,
        "listeners": [_listener(listener, certs) for listener in snapshot.listeners],
        "backends": [_backend(key, snapshot.backends[key], certs) for key in sorted(snapshot.backends)],
        "policies": _policies(snapshot),
        "certificates": [cert_json(c) for c in certs.all],
    }
