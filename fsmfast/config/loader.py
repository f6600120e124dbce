"""Manifests on disk -> validated ``Manifests``, with every problem reported.

The same YAML a user could ``kubectl apply``: status, managedFields, annotations and other
server-written fields are accepted silently. ``kind: List`` (what ``kubectl get -o yaml``
prints) is unpacked into its items.
"""

from __future__ import annotations

import datetime
import hashlib
from typing import Any

import msgspec

from fsmfast.config import model as m
from fsmfast.config.checks import check
from fsmfast.config.decode import decode, describe
from fsmfast.config.files import find_files
from fsmfast.config.issues import CLUSTER_SCOPED, Issues, Where
from fsmfast.config.sources import Document, documents, read

_GATEWAY_VERSIONS = ("v1", "v1beta1", "v1alpha2")


class Kind(msgspec.Struct, frozen=True):
    cls: type[m.Object]
    group: str
    versions: tuple[str, ...]
    bucket: str  # the Manifests list it goes to


KINDS: dict[str, Kind] = {
    "GatewayClass": Kind(m.GatewayClass, m.GATEWAY_GROUP, _GATEWAY_VERSIONS, "gateway_classes"),
    "Gateway": Kind(m.Gateway, m.GATEWAY_GROUP, _GATEWAY_VERSIONS, "gateways"),
    "HTTPRoute": Kind(m.HTTPRoute, m.GATEWAY_GROUP, _GATEWAY_VERSIONS, "routes"),
    "ReferenceGrant": Kind(m.ReferenceGrant, m.GATEWAY_GROUP, _GATEWAY_VERSIONS, "reference_grants"),
    "BackendTLSPolicy": Kind(m.BackendTLSPolicy, m.GATEWAY_GROUP, ("v1", "v1alpha3"), "backend_tls_policies"),
    "Namespace": Kind(m.Namespace, "", ("v1",), "namespaces"),
    "Service": Kind(m.Service, "", ("v1",), "services"),
    "Endpoints": Kind(m.Endpoints, "", ("v1",), "endpoints"),
    "Secret": Kind(m.Secret, "", ("v1",), "secrets"),
    "ConfigMap": Kind(m.ConfigMap, "", ("v1",), "config_maps"),
    "EndpointSlice": Kind(m.EndpointSlice, "discovery.k8s.io", ("v1",), "endpoint_slices"),
    "UpstreamTLSPolicy": Kind(m.UpstreamTLSPolicy, "gateway.flomesh.io", ("v1alpha1",), "upstream_tls_policies"),
    "GatewayTLSPolicy": Kind(m.GatewayTLSPolicy, "gateway.flomesh.io", ("v1alpha1",), "gateway_tls_policies"),
    "RetryPolicy": Kind(m.RetryPolicy, "gateway.flomesh.io", ("v1alpha1",), "retry_policies"),
    "HealthCheckPolicy": Kind(m.HealthCheckPolicy, "gateway.flomesh.io", ("v1alpha1",), "health_check_policies"),
    "CircuitBreakingPolicy": Kind(
        m.CircuitBreakingPolicy, "gateway.flomesh.io", ("v1alpha1",), "circuit_breaking_policies"
    ),
    "SessionStickyPolicy": Kind(m.SessionStickyPolicy, "gateway.flomesh.io", ("v1alpha1",), "session_sticky_policies"),
    "LoadBalancerPolicy": Kind(m.LoadBalancerPolicy, "gateway.flomesh.io", ("v1alpha1",), "load_balancer_policies"),
    "BackendLBPolicy": Kind(m.BackendLBPolicy, m.GATEWAY_GROUP, ("v1alpha2",), "backend_lb_policies"),
    "RateLimitPolicy": Kind(m.RateLimitPolicy, "gateway.flomesh.io", ("v1alpha1",), "rate_limit_policies"),
    "AccessControlPolicy": Kind(m.AccessControlPolicy, "gateway.flomesh.io", ("v1alpha1",), "access_control_policies"),
    "FaultInjectionPolicy": Kind(
        m.FaultInjectionPolicy, "gateway.flomesh.io", ("v1alpha1",), "fault_injection_policies"
    ),
    "TLSRoute": Kind(m.TLSRoute, m.GATEWAY_GROUP, ("v1", "v1alpha3", "v1alpha2"), "tls_routes"),
    "TCPRoute": Kind(m.TCPRoute, m.GATEWAY_GROUP, ("v1alpha2",), "tcp_routes"),
}


def split_api_version(api_version: str) -> tuple[str, str]:
    group, _, version = api_version.rpartition("/")
    return group, version


def normalise_timestamp(value: object) -> str | None:
    """RFC 3339 text (or the datetime YAML makes of an unquoted one) -> UTC "...Z", comparable as text."""
    if value is None:
        return None
    if isinstance(value, datetime.datetime):
        moment = value
    elif isinstance(value, str):
        try:
            # Python < 3.11 does not read the "Z" suffix Kubernetes always writes.
            moment = datetime.datetime.fromisoformat(value[:-1] + "+00:00" if value.endswith("Z") else value)
        except ValueError:
            raise ValueError(value) from None
    else:
        raise ValueError(value)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.timezone.utc)
    return moment.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class _Unknown(msgspec.Struct):
    where: Where
    api_versions: list[str]
    count: int = 0


class Loader:
    def __init__(self, issues: Issues) -> None:
        self.issues = issues
        self.manifests = m.Manifests()
        self.defined: dict[tuple[str, str, str], m.Origin] = {}
        self.unknown: dict[str, _Unknown] = {}

    def load(self, path: str) -> m.Manifests:
        digest = hashlib.sha256()
        for file in find_files(path, self.issues):
            data = read(file, self.issues)
            if data is None:
                continue
            self.manifests.files.append(file)
            digest.update(data)
            for doc in documents(file, data, self.issues):
                if doc.data is not None:
                    self.manifests.documents += 1
                    self.document(doc)
        for kind, unknown in self.unknown.items():
            plural = "document" if unknown.count == 1 else "documents"
            versions = ", ".join(unknown.api_versions)
            message = f"kind {kind} ({versions}) is not used by fsmfast; {unknown.count} {plural} ignored"
            self.issues.warn(unknown.where, "", message)
        self.manifests.digest = digest.hexdigest()[:12]
        return self.manifests

    def document(self, doc: Document) -> None:
        origin = m.Origin(doc.file, doc.doc)
        where = Where.at(origin)
        raw = doc.data
        if not isinstance(raw, dict):
            self.issues.error(where, "", f"expected a mapping (a Kubernetes object), got {describe(raw)}")
            return
        kind = raw.get("kind")
        kind_where = Where.at(origin, kind if isinstance(kind, str) else "")
        for dup in doc.duplicates:
            self.issues.error(kind_where, "", f"YAML {dup}")
        if isinstance(kind, str) and kind.endswith("List") and isinstance(raw.get("items"), list):
            for i, item in enumerate(raw["items"]):
                self.object(item, m.Origin(doc.file, doc.doc, f"items[{i}]"))
            return
        self.object(raw, origin)

    def object(self, raw: Any, origin: m.Origin) -> None:
        where = Where.at(origin)
        if not isinstance(raw, dict):
            self.issues.error(where, "", f"expected a mapping (a Kubernetes object), got {describe(raw)}")
            return
        kind, api_version = raw.get("kind"), raw.get("apiVersion")
        if isinstance(kind, str):
            where = Where.at(origin, kind)
        ok = True
        for field, value in (("apiVersion", api_version), ("kind", kind)):
            if value is None:
                self.issues.error(where, field, "required")
                ok = False
            elif not isinstance(value, str) or not value:
                self.issues.error(where, field, f"expected a non-empty string, got {describe(value)}")
                ok = False
        if not ok:
            return
        assert isinstance(kind, str) and isinstance(api_version, str)
        where = Where.at(origin, kind)
        spec = KINDS.get(kind)
        group, version = split_api_version(api_version)
        if spec is None or group != spec.group:
            # Same kind name in another API group (an Istio Gateway, say) is someone else's object.
            self._unknown(kind, api_version, where)
            return
        if version not in spec.versions:
            supported = ", ".join(f"{group}/{v}" if group else v for v in spec.versions)
            self.issues.error(
                where, "apiVersion", f"{api_version} is not a supported version of {kind} (use {supported})"
            )
            return
        meta = self._metadata(raw.get("metadata"), kind, where)
        if meta is None:
            return
        name = meta.name if kind in CLUSTER_SCOPED else f"{meta.namespace}/{meta.name}"
        where = Where.at(origin, kind, name)
        key = (kind, "" if kind in CLUSTER_SCOPED else meta.namespace, meta.name)
        first = self.defined.get(key)
        if first is not None:
            self.issues.error(where, "", f"duplicate {kind} {name}, first defined at {_at(first)}")
            return
        self.defined[key] = origin
        body = {k: v for k, v in raw.items() if k != "metadata"}
        obj = decode(body, spec.cls, where, self.issues, extra={"metadata": meta, "origin": origin})
        if obj is None:
            return
        checked = check(obj, self.issues)
        if checked is not None:
            getattr(self.manifests, spec.bucket).append(checked)

    def _metadata(self, raw: Any, kind: str, where: Where) -> m.Meta | None:
        if raw is None:
            self.issues.error(where, "metadata.name", "required")
            return None
        meta = decode(raw, m.Meta, where, self.issues, path="metadata")
        if meta is None:
            return None
        ok = True
        if not meta.name:
            self.issues.error(where, "metadata.name", "must not be empty")
            ok = False
        try:
            created = normalise_timestamp(meta.creation_timestamp)
        except ValueError:
            got = describe(meta.creation_timestamp)
            self.issues.error(where, "metadata.creationTimestamp", f"expected an RFC 3339 time, got {got}")
            return None
        if not meta.namespace:
            meta = msgspec.structs.replace(meta, namespace="default")
        return msgspec.structs.replace(meta, creation_timestamp=created) if ok else None

    def _unknown(self, kind: str, api_version: str, where: Where) -> None:
        entry = self.unknown.setdefault(kind, _Unknown(Where(where.file, where.doc), []))
        entry.count += 1
        if api_version not in entry.api_versions:
            entry.api_versions.append(api_version)


def _at(origin: m.Origin) -> str:
    where = f"{origin.file}#{origin.doc}"
    return f"{where} {origin.prefix}" if origin.prefix else where


def load(path: str, issues: Issues) -> m.Manifests:
    """Read ``path`` (a file or a directory); problems go to ``issues``, valid objects are returned."""
    return Loader(issues).load(path)
