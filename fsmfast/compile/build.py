"""Manifests -> ``Snapshot``: the one function the master (and ``fsmfast check``) calls.

``build`` reads and validates everything first and reports every error at once; the
snapshot is only produced from a fully valid set (a reload is all or nothing). Problems that
Gateway API says must not block the rest (a missing backend Service, a route that attaches
nowhere) are warnings, and the data plane answers those requests with the status the spec
requires.

The output is deterministic: every list and dict is built in an explicit order, so the same
manifests always encode to the same bytes.
"""

from __future__ import annotations

from collections import defaultdict

import msgspec

from fsmfast.compile import resilience
from fsmfast.compile import rules as rulemod
from fsmfast.compile.attach import Attachment, ListenerRef, attach, http_listeners
from fsmfast.compile.endpoints import resolve
from fsmfast.compile.frontends import Frontends
from fsmfast.compile.index import Index
from fsmfast.compile.l4routes import L4Routes
from fsmfast.compile.route_knobs import apply_route_knobs
from fsmfast.compile.routetable import Precedence, build_vhosts, match_precedence
from fsmfast.compile.upstream_tls import TLSPolicies
from fsmfast.config import model as m
from fsmfast.config.httproute import UNSUPPORTED
from fsmfast.config.issues import Issues, Where
from fsmfast.config.loader import load
from fsmfast.edge.resolve import EdgePolicies
from fsmfast.errors import ConfigError
from fsmfast.snapshot import (
    SCHEMA,
    Backend,
    BackendRef,
    Filters,
    Listener,
    Rule,
    Snapshot,
    Timeouts,
)

__all__ = ["Build", "build"]

# On a Gateway: "true" makes the gateway's error bodies on its listeners' ports name the namespace,
# Service and endpoint address that failed (by default only the error and access logs do).
DETAILED_ERRORS = "fsmfast.io/detailed-errors"


class Build(msgspec.Struct):
    snapshot: Snapshot
    # Same "file#doc Kind ns/name: field: message" shape as ConfigIssue.
    warnings: list[str]
    # One line for `fsmfast check`.
    summary: str


def _plural(n: int, word: str, plural: str | None = None) -> str:
    return f"{n} {word if n == 1 else (plural or word + 's')}"


class _Compiler:
    def __init__(self, manifests: m.Manifests, issues: Issues) -> None:
        self.manifests = manifests
        self.issues = issues
        self.index = Index(manifests)
        self.tls = TLSPolicies(self.index, issues)
        self.resilience = resilience.Resilience(self.index, issues)
        self.edge = EdgePolicies(self.index, issues)  # issue 20: resolved here, applied by fsmfast.edge
        self.used: dict[str, tuple[m.Service, m.ServicePort]] = {}
        self._entries: dict[str, list[tuple[Precedence, Rule]]] = {}
        self.attached_routes: set[str] = set()

    def run(self, generation: int) -> Snapshot:
        # Listener protocols, certificates and client trust first: listeners that cannot be
        # served are marked in the index, so no route attaches to them.
        frontends = Frontends(self.index, self.issues)
        attachments, self.attached_routes = attach(self.index, self.issues)
        by_port: dict[int, list[Attachment]] = defaultdict(list)
        for att in attachments:
            by_port[att.listener.listener.port].append(att)
            if att.route.key not in self._entries:
                self._entries[att.route.key] = self._route_entries(att.route)
        listeners = []
        detailed = self._detailed_gateways()
        for port, refs in sorted(http_listeners(self.index).items()):
            vhosts = build_vhosts(refs, by_port[port], self._entries)
            names = tuple(sorted(ref.name for ref in refs))
            listener = Listener(port=port, protocol="HTTP", names=names, vhosts=vhosts)
            if detailed and any(ref.gateway.key in detailed for ref in refs):
                self._warn_shared_detailed(port, refs, detailed)
                listener = msgspec.structs.replace(listener, detailed_errors=True)
            listeners.append(frontends.listener(listener))
        l4 = L4Routes(
            self.index, self.issues, frontends, lambda svc, sp: self.used.setdefault(f"{svc.key}:{sp.port}", (svc, sp))
        )
        self.attached_routes |= l4.attached
        listeners = sorted(
            [self.edge.listener(li) for li in (*listeners, *l4.listeners())], key=lambda listener: listener.port
        )
        backends = {key: self._backend(key, *self.used[key]) for key in sorted(self.used)}
        return Snapshot(
            schema=SCHEMA,
            generation=generation,
            listeners=tuple(listeners),
            backends=backends,
            source_digest=self.manifests.digest,
        )

    def _detailed_gateways(self) -> set[str]:
        """Keys of the Gateways whose fsmfast.io/detailed-errors is "true"; any other value but
        "false" is an error (an operator who asked for details and silently got none would not
        know why)."""
        out = set()
        for gw in self.manifests.gateways:
            text = gw.metadata.annotations.get(DETAILED_ERRORS)
            if text is None:
                continue
            value = text.strip().lower()
            if value == "true":
                out.add(gw.key)
            elif value != "false":
                self.issues.error(
                    Where.of(gw),
                    f"metadata.annotations[{DETAILED_ERRORS}]",
                    f'expected "true" or "false", got {text!r}',
                )
        return out

    def _warn_shared_detailed(self, port: int, refs: list[ListenerRef], detailed: set[str]) -> None:
        # Error bodies are decided per port: a Gateway sharing the port gets the details too.
        others = {ref.gateway.key: ref.gateway for ref in refs if ref.gateway.key not in detailed}
        for key in sorted(others):
            self.issues.warn(
                Where.of(others[key]),
                "spec.listeners",
                f'port {port} is shared with a Gateway annotated {DETAILED_ERRORS}: "true", so its error'
                " bodies there name namespaces, Services and endpoint addresses too",
            )

    # -- routes ----------------------------------------------------------------------------

    def _route_entries(self, route: m.HTTPRoute) -> list[tuple[Precedence, Rule]]:
        """Every (rule, match) of ``route`` as a snapshot Rule with its precedence key."""
        out = []
        for i, rule in enumerate(route.spec.rules):
            backends, filters, timeouts = self._rule_action(route, i, rule)
            retry = resilience.route_retry(route, i, rule)
            persistence = resilience.route_persistence(route, i, rule)
            for j, match in enumerate(rule.matches):
                path = rulemod.path_match(match.path)
                entry = Rule(
                    name=f"httproute/{route.namespace}/{route.name}/rule/{i}/match/{j}",
                    path=path,
                    backends=backends,
                    method=match.method,
                    headers=rulemod.header_matches(match),
                    query=rulemod.query_matches(match),
                    filters=filters,
                    timeouts=timeouts,
                    retry=retry,
                    session_persistence=persistence,
                )
                out.append((match_precedence(route, i, j, match, path.value), entry))
        return out

    def _rule_action(
        self, route: m.HTTPRoute, i: int, rule: m.HTTPRouteRule
    ) -> tuple[tuple[BackendRef, ...], Filters | None, Timeouts | None]:
        field = f"spec.rules[{i}]"
        timeouts = rulemod.timeouts(rule)
        unsupported = next((f.type for f in rule.filters if f.type in UNSUPPORTED), None)
        if unsupported:
            # Gateway API: a filter that cannot be honoured must not be skipped; 500 instead.
            return (BackendRef(weight=1, error=f"filter {unsupported} is not supported"),), None, timeouts
        filters = rulemod.filters(rule.filters, field, lambda ref, where: self._mirror_ref(route, where, ref))
        backends = tuple(self._ref(route, f"{field}.backendRefs[{k}]", ref) for k, ref in enumerate(rule.backend_refs))
        return backends, filters, timeouts

    def _ref(self, route: m.HTTPRoute, field: str, ref: m.HTTPBackendRef) -> BackendRef:
        error = self._ref_error(route, ref.group, ref.kind, ref.namespace, ref.name, ref.port)
        if error:
            self.issues.warn(Where.of(route), field, f"{error}; requests sent to it get 500")
            return BackendRef(weight=ref.weight, error=error)
        unsupported = next((f.type for f in ref.filters if f.type in (*UNSUPPORTED, "RequestRedirect")), None)
        if unsupported:
            # Already reported by the route check, with the filter's own field.
            return BackendRef(weight=ref.weight, error=f"filter {unsupported} is not supported on a backendRef")
        key = f"{ref.namespace or route.namespace}/{ref.name}:{ref.port}"
        filters = rulemod.filters(ref.filters, field, lambda mref, where: self._mirror_ref(route, where, mref))
        return BackendRef(weight=ref.weight, backend=key, filters=filters)

    def _mirror_ref(self, route: m.HTTPRoute, field: str, ref: m.BackendObjectRef) -> tuple[str | None, str | None]:
        error = self._ref_error(route, ref.group, ref.kind, ref.namespace, ref.name, ref.port)
        if error:
            self.issues.warn(Where.of(route), field, f"{error}; this mirror is dropped")
            return None, error
        return f"{ref.namespace or route.namespace}/{ref.name}:{ref.port}", None

    def _ref_error(
        self, route: m.HTTPRoute, group: str, kind: str, namespace: str | None, name: str, port: int | None
    ) -> str | None:
        """Why a Service reference of ``route`` is invalid, or None (and the port is then used)."""
        if (group, kind) != ("", "Service"):
            return f"unsupported backend kind {group + '/' if group else ''}{kind}"
        namespace = namespace or route.namespace
        svc_key = f"{namespace}/{name}"
        if namespace != route.namespace and not self.index.route_may_reference_service(
            route.namespace, namespace, name
        ):
            return f"cross-namespace reference to {svc_key} needs a ReferenceGrant"
        svc = self.index.services.get(svc_key)
        if svc is None:
            return f"service {svc_key} not found"
        sp = next((p for p in svc.spec.ports if p.port == port and p.protocol == "TCP"), None)
        if sp is None:
            return f"service {svc_key} has no port {port}"
        self.used[f"{svc_key}:{port}"] = (svc, sp)
        return None

    def _backend(self, key: str, svc: m.Service, sp: m.ServicePort) -> Backend:
        resolved = resolve(self.index, svc, sp)
        if not resolved.endpoints:
            i = svc.spec.ports.index(sp)
            why = resolved.problem or f"service {svc.key} port {sp.port} has no ready endpoints"
            self.issues.warn(Where.of(svc), f"spec.ports[{i}]", f"{why}; requests to {key} get 503")
        return Backend(
            name=key,
            endpoints=resolved.endpoints,
            tls=self.tls.for_port(svc, sp),
            resilience=self.resilience.for_port(svc, sp),
        )


def _summary(snapshot: Snapshot, manifests: m.Manifests, routes: int) -> str:
    ports = [str(listener.port) for listener in snapshot.listeners]
    listeners = _plural(len(ports), "listener")
    if ports:
        listeners += f" ({'port' if len(ports) == 1 else 'ports'} {', '.join(ports)})"
    policies = len(manifests.upstream_tls_policies) + len(manifests.backend_tls_policies)
    policies += len(manifests.gateway_tls_policies)
    policies += sum(
        len(getattr(manifests, bucket))
        for bucket in (
            "retry_policies",
            "health_check_policies",
            "circuit_breaking_policies",
            "session_sticky_policies",
            "load_balancer_policies",
            "backend_lb_policies",
            "rate_limit_policies",
            "access_control_policies",
            "fault_injection_policies",
        )
    )
    return (
        f"ok: {listeners}, {_plural(routes, 'route')}, {_plural(len(manifests.services), 'service')}, "
        f"{_plural(policies, 'policy', 'policies')} "
        f"({_plural(len(manifests.files), 'file')}, {_plural(manifests.documents, 'document')})"
    )


def build(path: str, generation: int = 1) -> Build:
    """Read, validate and compile the manifests at ``path`` (a file or a directory).

    Raises ``ConfigError`` listing every error found; warnings never stop the build.
    """
    issues = Issues()
    manifests = load(path, issues)
    compiler = _Compiler(manifests, issues)
    snapshot = compiler.run(generation)
    # fsmfast.io annotations (body size limit, WebSocket): a separate pass over the compiled rules.
    snapshot = apply_route_knobs(snapshot, manifests.routes, issues)
    errors, warnings = issues.sorted(manifests.files)
    if errors:
        raise ConfigError(errors)
    summary = _summary(snapshot, manifests, len(compiler.attached_routes))
    return Build(snapshot=snapshot, warnings=[str(w) for w in warnings], summary=summary)
