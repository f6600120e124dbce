"""TLSRoutes and TCPRoutes: which L4 listeners they attach to, and their weighted backends.

Attachment follows the same Gateway API rules as HTTPRoute (parentRef sectionName/port,
allowedRoutes namespaces and kinds). Which kind a listener takes follows FSM: a TLS
Passthrough listener takes TLSRoutes, a TLS Terminate or TCP listener takes TCPRoutes.

Conflicts are settled by age (oldest route first, then namespace/name) and reported:
- TLS Passthrough: one route per SNI hostname on a port (hostnames are the intersection of
  the listener's and the route's, as for HTTPRoute);
- TLS Terminate: one TCPRoute per listener; TCP: one TCPRoute per port.
"""

from __future__ import annotations

from collections.abc import Callable

import msgspec

from fsmfast.compile.attach import ListenerRef, allowed_routes_refusal, parent_listeners
from fsmfast.compile.frontends import Frontends
from fsmfast.compile.grants import granted
from fsmfast.compile.index import Index, age_key
from fsmfast.config import model as m
from fsmfast.config.hostnames import effective, specificity
from fsmfast.config.issues import Issues, Where
from fsmfast.snapshot import BackendRef, L4Route, Listener, ListenerTLS

L4Object = m.TLSRoute | m.TCPRoute
# Marks a Service port as used, so the compiler builds its Backend (endpoints, upstream TLS).
# The return value is ignored (the compiler passes a dict.setdefault).
UseService = Callable[[m.Service, m.ServicePort], object]


def accepts(listener: m.GatewayListener) -> str | None:
    """The route kind an L4 listener takes."""
    if listener.protocol == "TCP":
        return "TCPRoute"
    if listener.protocol == "TLS" and listener.tls is not None:
        return "TLSRoute" if listener.tls.mode == "Passthrough" else "TCPRoute"
    return None


class L4Routes:
    def __init__(self, index: Index, issues: Issues, frontends: Frontends, use: UseService) -> None:
        self.index = index
        self.issues = issues
        self.frontends = frontends
        self.use = use
        self.attached: set[str] = set()
        # port -> hostname -> route (passthrough); listener name -> route (terminate); port -> route (TCP)
        self.by_sni: dict[int, dict[str, L4Route]] = {}
        self.by_listener: dict[str, L4Route] = {}
        self.by_port: dict[int, L4Route] = {}
        routes: list[L4Object] = [*index.manifests.tls_routes, *index.manifests.tcp_routes]
        for route in sorted(routes, key=age_key):
            self._attach(route)

    # -- attachment ------------------------------------------------------------------------

    def _served(self) -> list[ListenerRef]:
        return [ref for port in self.frontends.ports.values() for ref in port.refs if accepts(ref.listener)]

    def _refusal(self, ref: ListenerRef, route: L4Object) -> str | None:
        listener = ref.listener
        if ref.name in self.index.ignored_listeners:
            return f"listener {ref.name} is not served ({self.index.ignored_listeners[ref.name]})"
        wanted = accepts(listener)
        if wanted is None:
            return f"listener {ref.name} is not served (protocol {listener.protocol})"
        if wanted != route.kind:
            mode = f" {listener.tls.mode}" if listener.tls is not None else ""
            return f"listener {ref.name} ({listener.protocol}{mode}) takes {wanted}s, not {route.kind}s"
        return allowed_routes_refusal(ref, route.kind, route.namespace, self.index)

    def _attach(self, route: L4Object) -> None:
        where = Where.of(route)
        built: L4Route | None = None
        for pi, pref in enumerate(route.spec.parent_refs):
            field = f"spec.parentRefs[{pi}]"
            if (pref.group, pref.kind) != (m.GATEWAY_GROUP, "Gateway"):
                self.issues.warn(where, field, f"not attached: parent kind {pref.kind} is not supported (only Gateway)")
                continue
            gw_key = f"{pref.namespace or route.namespace}/{pref.name}"
            gw = self.index.gateways.get(gw_key)
            if gw is None:
                self.issues.warn(where, field, f"not attached: gateway {gw_key} not found")
                continue
            candidates = parent_listeners(gw, pref)
            reasons = []
            attached_here = False
            for ref in candidates:
                refusal = self._refusal(ref, route)
                if refusal:
                    reasons.append(refusal)
                    continue
                if built is None:
                    built = self._route(route)
                if self._place(route, ref, built, field):
                    attached_here = True
            if attached_here:
                self.attached.add(route.key)
            elif not candidates:
                self.issues.warn(where, field, f"not attached: no listener of gateway {gw_key} matches")
            elif reasons and len(reasons) == len(candidates):
                self.issues.warn(where, field, "not attached: " + "; ".join(reasons))

    def _place(self, route: L4Object, ref: ListenerRef, built: L4Route, field: str) -> bool:
        listener = ref.listener
        where = Where.of(route)
        if isinstance(route, m.TLSRoute):
            hostnames = effective(listener.hostname, route.spec.hostnames)
            if not hostnames:
                self.issues.warn(
                    where,
                    field,
                    f"not attached: no route hostname matches listener {ref.name} hostname {listener.hostname}",
                )
                return False
            table = self.by_sni.setdefault(listener.port, {})
            placed = False
            for hostname in hostnames:
                owner = table.get(hostname)
                if owner is None:
                    table[hostname] = L4Route(name=built.name, backends=built.backends, hostname=hostname)
                    placed = True
                elif owner.name != built.name:
                    self._conflict(where, field, owner.name, f"SNI {hostname} on port {listener.port}")
            return placed
        if listener.protocol == "TLS":
            owner = self.by_listener.get(ref.name)
            if owner is None:
                self.by_listener[ref.name] = built
                return True
            if owner.name != built.name:
                self._conflict(where, field, owner.name, f"listener {ref.name}")
            return owner.name == built.name
        owner = self.by_port.get(listener.port)
        if owner is None:
            self.by_port[listener.port] = built
            return True
        if owner.name != built.name:
            self._conflict(where, field, owner.name, f"TCP port {listener.port}")
        return owner.name == built.name

    def _conflict(self, where: Where, field: str, winner: str, what: str) -> None:
        self.issues.warn(where, field, f"not attached to {what}: {winner} (older) already routes it")

    # -- backends --------------------------------------------------------------------------

    def _route(self, route: L4Object) -> L4Route:
        kind = route.kind.lower()
        name = f"{kind}/{route.namespace}/{route.name}"
        rules = route.spec.rules
        refs = rules[0].backend_refs if rules else []
        backends = tuple(
            self._ref(route, f"spec.rules[0].backendRefs[{k}]", ref) for k, ref in enumerate(refs) if ref.weight > 0
        )
        return L4Route(name=name, backends=backends)

    def _ref(self, route: L4Object, field: str, ref: m.L4BackendRef) -> BackendRef:
        error = self._ref_error(route, ref)
        if error:
            self.issues.warn(Where.of(route), field, f"{error}; connections sent to it are closed")
            return BackendRef(weight=ref.weight, error=error)
        namespace = ref.namespace or route.namespace
        return BackendRef(weight=ref.weight, backend=f"{namespace}/{ref.name}:{ref.port}")

    def _ref_error(self, route: L4Object, ref: m.L4BackendRef) -> str | None:
        if (ref.group, ref.kind) != ("", "Service"):
            return f"unsupported backend kind {ref.group + '/' if ref.group else ''}{ref.kind}"
        namespace = ref.namespace or route.namespace
        svc_key = f"{namespace}/{ref.name}"
        if not granted(self.index, route.kind, route.namespace, "Service", namespace, ref.name):
            return f"cross-namespace reference to {svc_key} needs a ReferenceGrant"
        svc = self.index.services.get(svc_key)
        if svc is None:
            return f"service {svc_key} not found"
        sp = next((p for p in svc.spec.ports if p.port == ref.port and p.protocol == "TCP"), None)
        if sp is None:
            return f"service {svc_key} has no TCP port {ref.port}"
        self.use(svc, sp)
        return None

    # -- output ----------------------------------------------------------------------------

    def listeners(self) -> list[Listener]:
        """The snapshot listeners of the TLS and TCP ports."""
        out = []
        for number, port in sorted(self.frontends.ports.items()):
            if port.protocol not in ("TLS", "TCP") or not port.refs:
                continue
            names = tuple(sorted(ref.name for ref in port.refs))
            if port.protocol == "TCP":
                route = self.by_port.get(number)
                routes: tuple[L4Route, ...] = (route,) if route else ()
                out.append(Listener(port=number, protocol="TCP", names=names, vhosts=(), routes=routes))
            elif port.mode == "Passthrough":
                table = self.by_sni.get(number, {})
                routes = tuple(table[h] for h in sorted(table, key=specificity))
                out.append(
                    Listener(port=number, protocol="TLS", names=names, vhosts=(), tls_mode="Passthrough", routes=routes)
                )
            else:
                tls = tuple(
                    t if t.name not in self.by_listener else _with_route(t, self.by_listener[t.name]) for t in port.tls
                )
                out.append(
                    Listener(
                        port=number,
                        protocol="TLS",
                        names=names,
                        vhosts=(),
                        tls_mode="Terminate",
                        tls=tls,
                        client_ca_pem=port.client_ca_pem,
                        client_ca_sources=port.client_ca_sources,
                    )
                )
        return out


def _with_route(tls: ListenerTLS, route: L4Route) -> ListenerTLS:
    return msgspec.structs.replace(tls, route=route)
