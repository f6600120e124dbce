"""Which TLS settings apply to each Service port, from UpstreamTLSPolicy and BackendTLSPolicy.

Precedence, per Service port:
- BackendTLSPolicy: one naming the port (``sectionName`` = port name) beats one on the whole
  Service; among equals the oldest wins, then namespace/name (Gateway API conflict rules).
- UpstreamTLSPolicy: only ``spec.ports[]`` entries apply (as in FSM); oldest policy wins.
- When both kinds apply, the Gateway API policy wins and the FSM one is reported as overridden.

A policy whose Secret/ConfigMap is missing still applies, with ``error`` set: the data plane
then fails those connections rather than falling back to plaintext.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import msgspec

from fsmfast.compile.bundles import Bundle
from fsmfast.compile.index import Index, age_key
from fsmfast.config import model as m
from fsmfast.config.checks import effective_tls_config
from fsmfast.config.issues import Issues, Where
from fsmfast.snapshot import PemSource, SubjectAltName, UpstreamTLS
from fsmfast.tls.pem import ca_problem, pair_problem

CA_KEY = "ca.crt"
CERT_KEY = "tls.crt"
KEY_KEY = "tls.key"

FAILS = "connections using this policy fail with 502 until it is fixed (no plaintext fallback)"


class _Candidate(msgspec.Struct, frozen=True):
    policy: m.Object
    field: str  # where in the policy the target/port entry is
    tls: UpstreamTLS


class TLSPolicies:
    def __init__(self, index: Index, issues: Issues) -> None:
        self.index = index
        self.issues = issues
        self._checked: dict[tuple[str, str, str], str | None] = {}
        self._upstream: dict[tuple[str, int], list[_Candidate]] = defaultdict(list)
        self._by_port_name: dict[tuple[str, str], list[_Candidate]] = defaultdict(list)
        self._whole: dict[str, list[_Candidate]] = defaultdict(list)
        for policy in sorted(index.manifests.upstream_tls_policies, key=age_key):
            self._add_upstream(policy)
        for btp in sorted(index.manifests.backend_tls_policies, key=age_key):
            self._add_backend(btp)
        self.by_port: dict[tuple[str, int], UpstreamTLS] = {}
        for svc in index.manifests.services:
            for sp in svc.spec.ports:
                tls = self._choose(svc, sp)
                if tls is not None:
                    self.by_port[(svc.key, sp.port)] = tls

    def for_port(self, svc: m.Service, sp: m.ServicePort) -> UpstreamTLS | None:
        return self.by_port.get((svc.key, sp.port))

    # --- material -------------------------------------------------------------------------

    def _value(self, obj: m.Secret | m.ConfigMap, key: str, check: bool = True) -> tuple[str | None, str | None]:
        """(text, error) of one key; an unparsable CA is a configuration error on the object."""
        data = obj.value(key)
        label = "secret" if isinstance(obj, m.Secret) else "configmap"
        if data is None:
            return None, f"{label} {obj.key} has no key {key}"
        if check:
            cache_key = (obj.kind, obj.key, key)
            if cache_key not in self._checked:
                problem = ca_problem(data)
                self._checked[cache_key] = problem
                if problem:
                    self.issues.error(Where.of(obj), obj.field_of(key), problem)
        return data.decode("ascii", "replace"), None

    def _client_pair(self, secret: m.Secret) -> tuple[str | None, str | None, str | None]:
        cert, error = self._value(secret, CERT_KEY, check=False)
        if error:
            return None, None, error
        key, error = self._value(secret, KEY_KEY, check=False)
        if error:
            return None, None, error
        assert cert is not None and key is not None
        cache_key = (secret.kind, secret.key, "pair")
        if cache_key not in self._checked:
            problem = pair_problem(cert.encode(), key.encode())
            self._checked[cache_key] = problem
            if problem:
                self.issues.error(Where.of(secret), secret.field_of(CERT_KEY), problem)
        return cert, key, None

    def _upstream_tls(self, policy: m.UpstreamTLSPolicy, i: int) -> tuple[UpstreamTLS, str]:
        cfg = effective_tls_config(policy, i)
        ref = cfg.certificate_ref
        assert ref is not None  # checked when loading
        own = policy.spec.ports[i].config
        field = f"spec.ports[{i}].config" if own and own.certificate_ref else "spec.config"
        name = f"UpstreamTLSPolicy {policy.key}"
        key = f"{ref.namespace or policy.namespace}/{ref.name}"
        secret = self.index.secrets.get(key)
        if secret is None:
            return UpstreamTLS(policy=name, error=f"secret {key} not found"), f"{field}.certificateRef"
        ca, error = self._value(secret, CA_KEY)
        if error:
            return UpstreamTLS(policy=name, error=error), f"{field}.certificateRef"
        cert = client_key = None
        if cfg.m_tls:
            cert, client_key, error = self._client_pair(secret)
            if error:
                return UpstreamTLS(policy=name, error=error), f"{field}.certificateRef"
        # FSM has no hostname field: no SNI, chain-only verification (see UpstreamTLS).
        assert ca is not None
        return (
            UpstreamTLS(
                policy=name,
                ca_pem=ca,
                client_cert_pem=cert,
                client_key_pem=client_key,
                ca_sources=(PemSource(name=key, end=len(ca)),),
                client_cert_secret=key if cert is not None else None,
            ),
            "",
        )

    def _backend_tls(self, policy: m.BackendTLSPolicy) -> UpstreamTLS:
        v = policy.spec.validation
        name = f"BackendTLSPolicy {policy.key}"
        sans = tuple(
            SubjectAltName(type=s.type, value=(s.hostname if s.type == "Hostname" else s.uri) or "")
            for s in v.subject_alt_names
        )
        common: dict[str, Any] = {"policy": name, "server_name": v.hostname, "subject_alt_names": sans}
        if v.well_known_ca_certificates == "System":
            return UpstreamTLS(system_ca=True, **common)
        bundle = Bundle()
        for i, ref in enumerate(v.ca_certificate_refs):
            key = f"{policy.namespace}/{ref.name}"
            store = self.index.secrets if ref.kind == "Secret" else self.index.config_maps
            obj = store.get(key)
            error = None
            if obj is None:
                error = f"{ref.kind.lower()} {key} not found"
            else:
                text, error = self._value(obj, CA_KEY)
                if text is not None:
                    bundle.add(text, obj)
            if error:
                self.issues.warn(Where.of(policy), f"spec.validation.caCertificateRefs[{i}]", f"{error}; {FAILS}")
                return UpstreamTLS(error=error, **common)
        return UpstreamTLS(ca_pem=bundle.pem, ca_sources=bundle.sources, **common)

    # --- targets --------------------------------------------------------------------------

    def _add_upstream(self, policy: m.UpstreamTLSPolicy) -> None:
        target = policy.spec.target_ref
        if (target.group, target.kind) != ("", "Service"):
            return
        where = Where.of(policy)
        svc_key = f"{target.namespace or policy.namespace}/{target.name}"
        svc = self.index.services.get(svc_key)
        if svc is None:
            self.issues.warn(where, "spec.targetRef", f"service {svc_key} not found; policy has no effect")
        for i, entry in enumerate(policy.spec.ports):
            tls, bad_field = self._upstream_tls(policy, i)
            if tls.error:
                self.issues.warn(where, bad_field, f"{tls.error}; {FAILS}")
            if svc is not None and not any(sp.port == entry.port for sp in svc.spec.ports):
                self.issues.warn(where, f"spec.ports[{i}].port", f"service {svc_key} has no port {entry.port}")
            self._upstream[(svc_key, entry.port)].append(_Candidate(policy, f"spec.ports[{i}]", tls))

    def _add_backend(self, policy: m.BackendTLSPolicy) -> None:
        tls = self._backend_tls(policy)
        where = Where.of(policy)
        for i, ref in enumerate(policy.spec.target_refs):
            field = f"spec.targetRefs[{i}]"
            svc_key = f"{policy.namespace}/{ref.name}"
            svc = self.index.services.get(svc_key)
            if svc is None:
                self.issues.warn(where, field, f"service {svc_key} not found; this target has no effect")
            elif ref.section_name is not None and not any(sp.name == ref.section_name for sp in svc.spec.ports):
                self.issues.warn(
                    where, f"{field}.sectionName", f'service {svc_key} has no port named "{ref.section_name}"'
                )
            candidate = _Candidate(policy, field, tls)
            if ref.section_name is not None:
                self._by_port_name[(svc_key, ref.section_name)].append(candidate)
            else:
                self._whole[svc_key].append(candidate)

    def _winner(self, candidates: list[_Candidate], what: str) -> _Candidate | None:
        if not candidates:
            return None
        first = candidates[0]
        for loser in candidates[1:]:
            self.issues.warn(
                Where.of(loser.policy),
                loser.field,
                f"conflicts with {first.policy.kind} {first.policy.key} (older) on {what}; ignored there",
            )
        return first

    def _choose(self, svc: m.Service, sp: m.ServicePort) -> UpstreamTLS | None:
        btp = None
        if sp.name:
            btp = self._winner(self._by_port_name.get((svc.key, sp.name), []), f'service {svc.key} port "{sp.name}"')
        if btp is None:
            btp = self._winner(self._whole.get(svc.key, []), f"service {svc.key}")
        utp = self._winner(self._upstream.get((svc.key, sp.port), []), f"service {svc.key} port {sp.port}")
        if btp is not None and utp is not None:
            self.issues.warn(
                Where.of(utp.policy),
                utp.field,
                f"overridden by BackendTLSPolicy {btp.policy.key} for service {svc.key} port {sp.port}",
            )
        chosen = btp or utp
        return chosen.tls if chosen else None
