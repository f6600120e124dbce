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

from fsmfast.config import model as m
from fsmfast.config.attach import attach, http_listeners
from fsmfast.config.checks import unserved
from fsmfast.config.endpoints import resolve
from fsmfast.config.hostnames import specificity
from fsmfast.config.index import Index, age_key
from fsmfast.config.issues import Issues, Where
from fsmfast.config.loader import load
from fsmfast.config.tls import TLSPolicies
from fsmfast.errors import ConfigError
from fsmfast.snapshot import (
    SCHEMA,
    Backend,
    BackendRef,
    Listener,
    PathMatch,
    Rule,
    Snapshot,
    VirtualHost,
)

__all__ = ["Build", "build"]


class Build(msgspec.Struct):
    snapshot: Snapshot
    # Same "file#doc Kind ns/name: field: message" shape as ConfigIssue.
    warnings: list[str]
    # One line for `fsmfast check`.
    summary: str


def _plural(n: int, word: str, plural: str | None = None) -> str:
    return f"{n} {word if n == 1 else (plural or word + 's')}"


def normalise_path(match: m.HTTPPathMatch) -> PathMatch:
    value = match.value
    # PathPrefix matches whole segments and ignores a trailing "/", so "/foo/" is "/foo".
    if match.type == "PathPrefix" and len(value) > 1:
        value = value.rstrip("/") or "/"
    assert match.type in ("Exact", "PathPrefix")
    return PathMatch(type=match.type, value=value)


class _Compiler:
    def __init__(self, manifests: m.Manifests, issues: Issues) -> None:
        self.manifests = manifests
        self.issues = issues
        self.index = Index(manifests)
        self.tls = TLSPolicies(self.index, issues)
        self.used: dict[str, tuple[m.Service, m.ServicePort]] = {}
        self._rule_backends: dict[tuple[str, int], tuple[BackendRef, ...]] = {}
        self.attached_routes: set[str] = set()

    def run(self, generation: int) -> Snapshot:
        attachments, self.attached_routes = attach(self.index, self.issues)
        # port -> hostname -> rule name -> (precedence key, rule)
        table: dict[int, dict[str, dict[str, tuple[tuple[object, ...], Rule]]]] = defaultdict(lambda: defaultdict(dict))
        for att in attachments:
            route = att.route
            port = att.listener.listener.port
            for i, rule in enumerate(route.spec.rules):
                backends = self._backends(route, i, rule)
                for j, match in enumerate(rule.matches):
                    if unserved(match):
                        continue
                    path = normalise_path(match.path)
                    name = f"httproute/{route.namespace}/{route.name}/rule/{i}/match/{j}"
                    # Gateway API precedence: Exact first, longer prefix, older route, ns/name, order.
                    key = (0 if path.type == "Exact" else 1, -len(path.value), *age_key(route), i, j)
                    for hostname in att.hostnames:
                        table[port][hostname].setdefault(name, (key, Rule(name=name, path=path, backends=backends)))
        listeners = []
        for port, refs in sorted(http_listeners(self.index).items()):
            vhosts = tuple(
                VirtualHost(hostname=h, rules=tuple(rule for _, rule in sorted(rules.values(), key=lambda kr: kr[0])))
                for h, rules in sorted(table[port].items(), key=lambda item: specificity(item[0]))
            )
            names = tuple(sorted(ref.name for ref in refs))
            listeners.append(Listener(port=port, protocol="HTTP", names=names, vhosts=vhosts))
        backends = {key: self._backend(key, *self.used[key]) for key in sorted(self.used)}
        return Snapshot(
            schema=SCHEMA,
            generation=generation,
            listeners=tuple(listeners),
            backends=backends,
            source_digest=self.manifests.digest,
        )

    def _backends(self, route: m.HTTPRoute, i: int, rule: m.HTTPRouteRule) -> tuple[BackendRef, ...]:
        cache_key = (route.key, i)
        if cache_key not in self._rule_backends:
            if any(f.type == "ExtensionRef" for f in rule.filters):
                # Gateway API: an unresolvable ExtensionRef must not be skipped; 500 instead.
                refs: tuple[BackendRef, ...] = (BackendRef(weight=1, error="filter ExtensionRef is not supported"),)
            else:
                refs = tuple(
                    self._ref(route, f"spec.rules[{i}].backendRefs[{k}]", ref)
                    for k, ref in enumerate(rule.backend_refs)
                )
            self._rule_backends[cache_key] = refs
        return self._rule_backends[cache_key]

    def _ref(self, route: m.HTTPRoute, field: str, ref: m.HTTPBackendRef) -> BackendRef:
        error = self._ref_error(route, ref)
        if error:
            self.issues.warn(Where.of(route), field, f"{error}; requests sent to it get 500")
            return BackendRef(weight=ref.weight, error=error)
        svc_key = f"{ref.namespace or route.namespace}/{ref.name}"
        key = f"{svc_key}:{ref.port}"
        return BackendRef(weight=ref.weight, backend=key)

    def _ref_error(self, route: m.HTTPRoute, ref: m.HTTPBackendRef) -> str | None:
        if (ref.group, ref.kind) != ("", "Service"):
            return f"unsupported backend kind {ref.group + '/' if ref.group else ''}{ref.kind}"
        if any(f.type == "ExtensionRef" for f in ref.filters):
            return "filter ExtensionRef is not supported"
        namespace = ref.namespace or route.namespace
        svc_key = f"{namespace}/{ref.name}"
        if namespace != route.namespace and not self.index.route_may_reference_service(
            route.namespace, namespace, ref.name
        ):
            return f"cross-namespace reference to {svc_key} needs a ReferenceGrant"
        svc = self.index.services.get(svc_key)
        if svc is None:
            return f"service {svc_key} not found"
        sp = next((p for p in svc.spec.ports if p.port == ref.port and p.protocol == "TCP"), None)
        if sp is None:
            return f"service {svc_key} has no port {ref.port}"
        self.used[f"{svc_key}:{ref.port}"] = (svc, sp)
        return None

    def _backend(self, key: str, svc: m.Service, sp: m.ServicePort) -> Backend:
        resolved = resolve(self.index, svc, sp)
        if not resolved.endpoints:
            i = svc.spec.ports.index(sp)
            why = resolved.problem or f"service {svc.key} port {sp.port} has no ready endpoints"
            self.issues.warn(Where.of(svc), f"spec.ports[{i}]", f"{why}; requests to {key} get 503")
        return Backend(name=key, endpoints=resolved.endpoints, tls=self.tls.for_port(svc, sp))


def _summary(snapshot: Snapshot, manifests: m.Manifests, routes: int) -> str:
    ports = [str(listener.port) for listener in snapshot.listeners]
    listeners = _plural(len(ports), "listener")
    if ports:
        listeners += f" ({'port' if len(ports) == 1 else 'ports'} {', '.join(ports)})"
    policies = len(manifests.upstream_tls_policies) + len(manifests.backend_tls_policies)
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
    errors, warnings = issues.sorted(manifests.files)
    if errors:
        raise ConfigError(errors)
    summary = _summary(snapshot, manifests, len(compiler.attached_routes))
    return Build(snapshot=snapshot, warnings=[str(w) for w in warnings], summary=summary)
