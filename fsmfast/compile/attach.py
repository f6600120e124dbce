"""Which HTTPRoutes are live on which Gateway listeners, for which hostnames.

Follows Gateway API route attachment: the parentRef must select the listener (Gateway name
and namespace, then sectionName and port when set), the listener must allow the route's
namespace and kind, and at least one hostname must intersect. A parentRef that attaches
nowhere is reported with the reason, because its traffic would otherwise 404 silently.
"""

from __future__ import annotations

from collections import defaultdict

import msgspec

from fsmfast.compile.index import Index
from fsmfast.config import model as m
from fsmfast.config.hostnames import covers, effective, specificity
from fsmfast.config.issues import Issues, Where
from fsmfast.config.listenerchecks import HTTP_PROTOCOLS


class ListenerRef(msgspec.Struct, frozen=True):
    gateway: m.Gateway
    listener: m.GatewayListener

    @property
    def name(self) -> str:
        return f"{self.gateway.key}/{self.listener.name}"


class Attachment(msgspec.Struct, frozen=True):
    route: m.HTTPRoute
    listener: ListenerRef
    hostnames: list[str]  # intersected, lower-case; may be empty under listener isolation


def http_listeners(index: Index) -> dict[int, list[ListenerRef]]:
    by_port: dict[int, list[ListenerRef]] = defaultdict(list)
    for gw in index.manifests.gateways:
        for listener in gw.spec.listeners:
            ref = ListenerRef(gw, listener)
            if listener.protocol in HTTP_PROTOCOLS and ref.name not in index.ignored_listeners:
                by_port[listener.port].append(ref)
    return by_port


def selector_matches(selector: m.LabelSelector, labels: dict[str, str]) -> bool:
    if any(labels.get(k) != v for k, v in selector.match_labels.items()):
        return False
    for req in selector.match_expressions:
        present = req.key in labels
        if req.operator == "In" and not (present and labels[req.key] in req.values):
            return False
        if req.operator == "NotIn" and present and labels[req.key] in req.values:
            return False
        if req.operator == "Exists" and not present:
            return False
        if req.operator == "DoesNotExist" and present:
            return False
    return True


def _refusal(ref: ListenerRef, route: m.HTTPRoute, index: Index) -> str | None:
    listener = ref.listener
    if listener.protocol not in HTTP_PROTOCOLS:
        return f"listener {ref.name} is not served (protocol {listener.protocol})"
    if ref.name in index.ignored_listeners:
        return f"listener {ref.name} is not served ({index.ignored_listeners[ref.name]})"
    return allowed_routes_refusal(ref, "HTTPRoute", route.namespace, index)


def parent_listeners(gw: m.Gateway, pref: m.ParentRef) -> list[ListenerRef]:
    """The listeners of ``gw`` a route's parentRef selects: by sectionName and port when given."""
    return [
        ListenerRef(gw, listener)
        for listener in gw.spec.listeners
        if (pref.section_name is None or listener.name == pref.section_name)
        and (pref.port is None or listener.port == pref.port)
    ]


def allowed_routes_refusal(ref: ListenerRef, kind: str, namespace: str, index: Index) -> str | None:
    """Why the listener's allowedRoutes (namespaces, then kinds) refuse a ``kind`` route from
    ``namespace``, or None. HTTPRoutes here, TLSRoutes and TCPRoutes in fsmfast.compile.l4routes."""
    allowed = ref.listener.allowed_routes
    namespaces = allowed.namespaces
    if namespaces.from_ == "Same" and namespace != ref.gateway.namespace:
        return (
            f"listener {ref.name} only allows routes from namespace {ref.gateway.namespace} "
            "(allowedRoutes.namespaces.from: Same)"
        )
    if namespaces.from_ == "Selector":
        assert namespaces.selector is not None  # checked when loading
        if not selector_matches(namespaces.selector, index.labels_of_namespace(namespace)):
            return f"namespace {namespace} does not match the allowedRoutes selector of listener {ref.name}"
    if allowed.kinds and not any(k.kind == kind and k.group == m.GATEWAY_GROUP for k in allowed.kinds):
        return f"listener {ref.name} does not allow {kind} (allowedRoutes.kinds)"
    return None


def _rank(hostname: str | None) -> tuple[int, int]:
    return specificity(hostname)[:2]


def _claimed_elsewhere(hostname: str, ref: ListenerRef, peers: list[ListenerRef]) -> bool:
    """Listener isolation: requests for ``hostname`` go to a more specific listener on the port."""
    own = _rank(ref.listener.hostname)
    return any(
        peer != ref and covers(peer.listener.hostname or "*", hostname) and _rank(peer.listener.hostname) < own
        for peer in peers
    )


def _conditions(pref: m.ParentRef) -> str:
    parts = []
    if pref.section_name is not None:
        parts.append(f"sectionName {pref.section_name}")
    if pref.port is not None:
        parts.append(f"port {pref.port}")
    return ", ".join(parts)


def attach(index: Index, issues: Issues) -> tuple[list[Attachment], set[str]]:
    """All attachments, and the keys of the routes attached to at least one listener."""
    peers = http_listeners(index)
    out: list[Attachment] = []
    attached: set[str] = set()
    for route in index.manifests.routes:
        where = Where.of(route)
        for pi, pref in enumerate(route.spec.parent_refs):
            field = f"spec.parentRefs[{pi}]"
            if (pref.group, pref.kind) != (m.GATEWAY_GROUP, "Gateway"):
                kind = f"{pref.group}/{pref.kind}" if pref.group else pref.kind
                issues.warn(where, field, f"not attached: parent kind {kind} is not supported (only Gateway)")
                continue
            gw_key = f"{pref.namespace or route.namespace}/{pref.name}"
            gw = index.gateways.get(gw_key)
            if gw is None:
                issues.warn(where, field, f"not attached: gateway {gw_key} not found")
                continue
            candidates = parent_listeners(gw, pref)
            if not candidates:
                issues.warn(where, field, f"not attached: no listener of gateway {gw_key} matches {_conditions(pref)}")
                continue
            reasons = []
            for ref in candidates:
                refusal = _refusal(ref, route, index)
                if refusal:
                    reasons.append(refusal)
                    continue
                hostnames = effective(ref.listener.hostname, route.spec.hostnames)
                if not hostnames:
                    reasons.append(f"no route hostname matches listener {ref.name} hostname {ref.listener.hostname}")
                    continue
                own_port = peers[ref.listener.port]
                kept = [h for h in hostnames if not _claimed_elsewhere(h, ref, own_port)]
                if not kept:
                    issues.warn(
                        where,
                        field,
                        f"nothing served through listener {ref.name}: more specific listeners on port"
                        f" {ref.listener.port} own all of this route's hostnames (listener isolation)",
                    )
                out.append(Attachment(route, ref, kept))
                attached.add(route.key)
            if len(reasons) == len(candidates):
                issues.warn(where, field, "not attached: " + "; ".join(reasons))
    return out, attached
