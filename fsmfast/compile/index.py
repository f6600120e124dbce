"""Lookups over ``Manifests`` by namespace and name, built once per compile."""

from __future__ import annotations

from collections import defaultdict

from fsmfast.config import model as m
from fsmfast.config.checks import SERVICE_NAME_LABEL

# Kubernetes sets this label on every namespace, so selectors may use it even for
# namespaces the manifests never declare.
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"


class Index:
    def __init__(self, manifests: m.Manifests) -> None:
        self.manifests = manifests
        self.gateways = {gw.key: gw for gw in manifests.gateways}
        self.services = {svc.key: svc for svc in manifests.services}
        self.secrets = {s.key: s for s in manifests.secrets}
        self.config_maps = {c.key: c for c in manifests.config_maps}
        self.endpoints = {e.key: e for e in manifests.endpoints}
        self.slices: dict[str, list[m.EndpointSlice]] = defaultdict(list)
        for eps in manifests.endpoint_slices:
            service = eps.metadata.labels.get(SERVICE_NAME_LABEL)
            if service:
                self.slices[f"{eps.namespace}/{service}"].append(eps)
        self.namespace_labels = {ns.name: dict(ns.metadata.labels) for ns in manifests.namespaces}
        self.grants: dict[str, list[m.ReferenceGrant]] = defaultdict(list)
        for grant in manifests.reference_grants:
            self.grants[grant.namespace].append(grant)
        # Listeners not served (conflicting protocol on their port, no usable certificate):
        # "namespace/gateway/listener" -> why. Filled by config.frontends before routes attach.
        self.ignored_listeners: dict[str, str] = {}

    def labels_of_namespace(self, namespace: str) -> dict[str, str]:
        labels = dict(self.namespace_labels.get(namespace, {}))
        labels[NAMESPACE_NAME_LABEL] = namespace
        return labels

    def route_may_reference_service(self, route_ns: str, service_ns: str, service: str) -> bool:
        """A ReferenceGrant in the Service's namespace lets HTTPRoutes of ``route_ns`` use it."""
        for grant in self.grants.get(service_ns, []):
            allowed_from = any(
                f.group == m.GATEWAY_GROUP and f.kind == "HTTPRoute" and f.namespace == route_ns
                for f in grant.spec.from_
            )
            allowed_to = any(
                t.group == "" and t.kind == "Service" and (t.name is None or t.name == service) for t in grant.spec.to
            )
            if allowed_from and allowed_to:
                return True
        return False


def age_key(obj: m.Object) -> tuple[int, str, str]:
    """Oldest first; objects without a creationTimestamp count as just created, then ns/name."""
    created = obj.metadata.creation_timestamp
    return (0, created, obj.key) if created else (1, "", obj.key)
