"""Compiling manifests into the snapshot: attachment, hostnames, precedence, backends, endpoints."""

from __future__ import annotations

import base64
import shutil
import textwrap
from pathlib import Path

import pytest

from fsmfast import snapshot as s
from fsmfast.compile import Build, build
from fsmfast.errors import ConfigError

MANIFESTS = Path(__file__).resolve().parent.parent / "manifests"


@pytest.fixture
def cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


def compile_docs(*docs: str, name: str = "all.yaml") -> Build:
    """Build one file made of ``docs`` in the current directory."""
    texts = [textwrap.dedent(d) for d in docs]
    Path(name).write_text("".join("---\n" + (t if t.endswith("\n") else t + "\n") for t in texts))
    return build(name)


def gateway(name: str = "gw", ns: str = "ns", listeners: str = "- {name: http, port: 8000, protocol: HTTP}") -> str:
    body = textwrap.indent(textwrap.dedent(listeners), "  ")
    return (
        f"apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: {name}, namespace: {ns}}}\n"
        f"spec:\n gatewayClassName: any\n listeners:\n{body}\n"
    )


def route(name: str, spec: str, ns: str = "ns", created: str | None = None) -> str:
    meta = f"name: {name}, namespace: {ns}" + (f", creationTimestamp: '{created}'" if created else "")
    body = textwrap.indent(textwrap.dedent(spec), "  ")
    return f"apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{{meta}}}\nspec:\n{body}"


def service(name: str = "svc", ns: str = "ns", ports: str = "[{port: 80}]") -> str:
    return f"apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: {ns}}}\nspec: {{ports: {ports}}}\n"


def endpoint_slice(service: str = "svc", ns: str = "ns", name: str | None = None, body: str = "") -> str:
    meta = f"{{name: {name or service + '-1'}, namespace: {ns}, labels: {{kubernetes.io/service-name: {service}}}}}"
    default = "endpoints: [{addresses: [10.0.0.1]}]\nports: [{name: '', port: 8080}]\n"
    return f"apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {meta}\naddressType: IPv4\n" + (
        textwrap.dedent(body) or default
    )


NO_BACKENDS = "no backendRefs, so matching requests get 500"


def others(warnings: list[str]) -> list[str]:
    """Warnings other than "no backendRefs", which the routing tests trigger on purpose."""
    return [w for w in warnings if not w.endswith(NO_BACKENDS)]


def rule_names(build_: Build, port: int = 8000) -> dict[str, list[str]]:
    listener = next(li for li in build_.snapshot.listeners if li.port == port)
    return {vh.hostname: [r.name for r in vh.rules] for vh in listener.vhosts}


# --- the founding scenario ------------------------------------------------------------------


def copy_founding(dest: Path, upstream_port: int, ca_b64: str | None = None) -> None:
    """The fixture files with their placeholders filled in, as the e2e tests do."""
    dest.mkdir()
    dirs = ["founding"] + (["founding-tls"] if ca_b64 else [])
    for sub in dirs:
        for src in sorted((MANIFESTS / sub).glob("*.yaml")):
            text = src.read_text().replace("${UPSTREAM_PORT}", str(upstream_port))
            (dest / src.name).write_text(text.replace("${CA_CRT_B64}", ca_b64 or ""))


def test_founding_fixtures_compile_without_tls(cwd: Path) -> None:
    copy_founding(cwd / "conf", 9443)
    result = build("conf")
    assert result.warnings == []
    assert result.summary == "ok: 1 listener (port 8000), 1 route, 1 service, 0 policies (3 files, 5 documents)"
    rule = s.Rule(
        name="httproute/httpbin/http-route-foo/rule/0/match/0",
        path=s.PathMatch(type="PathPrefix", value="/"),
        backends=(s.BackendRef(weight=1, backend="httpbin/httpbin:8443"),),
    )
    assert result.snapshot.listeners == (
        s.Listener(
            port=8000,
            protocol="HTTP",
            names=("httpbin/simple-fsm-gateway/http",),
            vhosts=(
                s.VirtualHost(
                    hostname="foo.example.com", rules=(rule,), listeners=("httpbin/simple-fsm-gateway/http",)
                ),
            ),
        ),
    )
    assert result.snapshot.backends == {
        "httpbin/httpbin:8443": s.Backend(
            name="httpbin/httpbin:8443", endpoints=(s.Endpoint(host="127.0.0.1", port=9443),), tls=None
        )
    }
    assert result.snapshot.schema == s.SCHEMA and result.snapshot.generation == 1
    assert len(result.snapshot.source_digest) == 12


def test_founding_fixtures_with_tls(cwd: Path) -> None:
    ca_pem = (Path(__file__).resolve().parent.parent / "golden/founding/ca.pem").read_text()
    copy_founding(cwd / "conf", 9443, base64.b64encode(ca_pem.encode()).decode())
    result = build("conf", generation=7)
    assert result.warnings == []
    assert result.summary == "ok: 1 listener (port 8000), 1 route, 1 service, 1 policy (5 files, 7 documents)"
    assert result.snapshot.generation == 7
    assert result.snapshot.backends["httpbin/httpbin:8443"].tls == s.UpstreamTLS(
        policy="UpstreamTLSPolicy httpbin/upstream-tls-policy-sample",
        ca_pem=ca_pem,
        ca_sources=(s.PemSource(name="httpbin/https-cert", end=len(ca_pem)),),
    )


def test_unfilled_placeholders_are_reported(cwd: Path) -> None:
    conf = cwd / "conf"
    conf.mkdir()
    for sub in ("founding", "founding-tls"):
        for src in (MANIFESTS / sub).glob("*.yaml"):
            shutil.copy(src, conf / src.name)
    with pytest.raises(ConfigError) as exc:
        build("conf")
    assert [str(i) for i in exc.value.issues] == [
        "conf/secret.yaml#1 Secret httpbin/https-cert: data.ca.crt: not valid base64",
        "conf/service.yaml#2 EndpointSlice httpbin/httpbin-local: ports[0].port: expected an integer,"
        ' got "${UPSTREAM_PORT}"',
    ]


# --- attachment -----------------------------------------------------------------------------


def test_attachment_reasons(cwd: Path) -> None:
    result = compile_docs(
        gateway(
            listeners="""\
            - {name: http, port: 8000, protocol: HTTP, hostname: a.example.com}
            - {name: https, port: 8000, protocol: HTTPS, tls: {certificateRefs: [{name: missing}]}}
            - name: kinds
              port: 8001
              protocol: HTTP
              allowedRoutes: {kinds: [{kind: GRPCRoute}]}
            """
        ),
        route("no-section", "parentRefs: [{name: gw, sectionName: nope, port: 8000}]"),
        route("no-gateway", "parentRefs: [{name: missing}]"),
        route("https", "parentRefs: [{name: gw, sectionName: https}]"),
        route("kinds", "parentRefs: [{name: gw, port: 8001}]"),
        route("hosts", "parentRefs: [{name: gw, sectionName: http}]\nhostnames: [b.example.com]"),
        route("other-ns", "parentRefs: [{name: gw, namespace: ns, sectionName: http}]", ns="other"),
        route("service-parent", "parentRefs: [{kind: Service, group: '', name: svc}]"),
        route("no-parents", "hostnames: [a.example.com]"),
        route("ok", "parentRefs: [{name: gw}]"),  # http attaches; https and kinds refuse: no warning
    )
    assert others(result.warnings) == [
        "all.yaml#1 Gateway ns/gw: spec.listeners[1]: port 8000 is already served as HTTP by listener ns/gw/http"
        " (one protocol per port); listener ignored",
        "all.yaml#2 HTTPRoute ns/no-section: spec.parentRefs[0]: not attached: no listener of gateway ns/gw matches"
        " sectionName nope, port 8000",
        "all.yaml#3 HTTPRoute ns/no-gateway: spec.parentRefs[0]: not attached: gateway ns/missing not found",
        "all.yaml#4 HTTPRoute ns/https: spec.parentRefs[0]: not attached: listener ns/gw/https is not served"
        " (port 8000 is already served as HTTP by listener ns/gw/http (one protocol per port))",
        "all.yaml#5 HTTPRoute ns/kinds: spec.parentRefs[0]: not attached: listener ns/gw/kinds does not allow"
        " HTTPRoute (allowedRoutes.kinds)",
        "all.yaml#6 HTTPRoute ns/hosts: spec.parentRefs[0]: not attached: no route hostname matches listener"
        " ns/gw/http hostname a.example.com",
        "all.yaml#7 HTTPRoute other/other-ns: spec.parentRefs[0]: not attached: listener ns/gw/http only allows"
        " routes from namespace ns (allowedRoutes.namespaces.from: Same)",
        "all.yaml#8 HTTPRoute ns/service-parent: spec.parentRefs[0]: not attached: parent kind Service is not"
        " supported (only Gateway)",
        "all.yaml#9 HTTPRoute ns/no-parents: spec.parentRefs: none listed, so this route is not attached to any"
        " Gateway",
    ]
    assert rule_names(result) == {"a.example.com": ["httproute/ns/ok/rule/0/match/0"]}
    assert rule_names(result, 8001) == {}
    assert [li.port for li in result.snapshot.listeners] == [8000, 8001]
    assert result.summary.startswith("ok: 2 listeners (ports 8000, 8001), 1 route, 0 services, 0 policies")


def test_allowed_routes_all_and_selector(cwd: Path) -> None:
    listeners = """\
    - {name: all, port: 8000, protocol: HTTP, allowedRoutes: {namespaces: {from: All}}}
    - name: sel
      port: 8001
      protocol: HTTP
      allowedRoutes:
        namespaces:
          from: Selector
          selector:
            matchLabels: {team: a}
            matchExpressions: [{key: env, operator: NotIn, values: [prod]}]
    - name: byname
      port: 8002
      protocol: HTTP
      allowedRoutes: {namespaces: {from: Selector, selector: {matchLabels: {kubernetes.io/metadata.name: free}}}}
    """
    result = compile_docs(
        gateway(listeners=listeners),
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: team-a, labels: {team: a}}\n",
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: team-a-prod, labels: {team: a, env: prod}}\n",
        route("r", "parentRefs: [{name: gw, namespace: ns}]", ns="team-a"),
        route("r", "parentRefs: [{name: gw, namespace: ns}]", ns="team-a-prod"),
        route("r", "parentRefs: [{name: gw, namespace: ns}]", ns="free"),  # undeclared namespace
    )
    assert rule_names(result, 8000) == {
        # "ns/name" order: "-" sorts before "/"
        "*": [
            "httproute/free/r/rule/0/match/0",
            "httproute/team-a-prod/r/rule/0/match/0",
            "httproute/team-a/r/rule/0/match/0",
        ]
    }
    assert rule_names(result, 8001) == {"*": ["httproute/team-a/r/rule/0/match/0"]}
    assert rule_names(result, 8002) == {"*": ["httproute/free/r/rule/0/match/0"]}
    # each route attaches to at least one listener of its parentRef: no attachment warning
    assert others(result.warnings) == []


def test_section_name_and_port_select_listeners(cwd: Path) -> None:
    result = compile_docs(
        gateway(
            listeners="""\
            - {name: a, port: 8000, protocol: HTTP}
            - {name: b, port: 8001, protocol: HTTP}
            """
        ),
        route("by-section", "parentRefs: [{name: gw, sectionName: b}]"),
        route("by-port", "parentRefs: [{name: gw, port: 8000}]"),
        route("both", "parentRefs: [{name: gw, sectionName: a, port: 8001}]"),
    )
    assert rule_names(result, 8000) == {"*": ["httproute/ns/by-port/rule/0/match/0"]}
    assert rule_names(result, 8001) == {"*": ["httproute/ns/by-section/rule/0/match/0"]}
    assert others(result.warnings) == [
        "all.yaml#4 HTTPRoute ns/both: spec.parentRefs[0]: not attached: no listener of gateway ns/gw matches"
        " sectionName a, port 8001"
    ]


def test_listeners_on_one_port_are_merged_and_isolated(cwd: Path) -> None:
    result = compile_docs(
        gateway(
            "one",
            listeners="""\
            - {name: wild, port: 8000, protocol: HTTP, hostname: "*.example.com"}
            - {name: any, port: 8000, protocol: HTTP}
            """,
        ),
        gateway("two", listeners="- {name: foo, port: 8000, protocol: HTTP, hostname: foo.example.com}"),
        route("wild", "parentRefs: [{name: one, sectionName: wild}]\nhostnames: [foo.example.com, bar.example.com]"),
        route("foo", "parentRefs: [{name: two}]"),
        route("catch-all", "parentRefs: [{name: one, sectionName: any}]"),
        route("upper", "parentRefs: [{name: one, sectionName: any}]\nhostnames: [BAR.example.com]"),
    )
    (listener,) = result.snapshot.listeners
    assert listener.names == ("ns/one/any", "ns/one/wild", "ns/two/foo")
    # foo.example.com belongs to the more specific listener "foo" only (listener isolation), and
    # bar.example.com to "wild" rather than "any". Other hosts under *.example.com belong to
    # "wild", which has no route for them: an empty virtual host makes them 404 instead of
    # falling through to "any".
    assert rule_names(result) == {
        "bar.example.com": ["httproute/ns/wild/rule/0/match/0"],
        "foo.example.com": ["httproute/ns/foo/rule/0/match/0"],
        "*.example.com": [],
        "*": ["httproute/ns/catch-all/rule/0/match/0"],
    }
    owners = {vh.hostname: vh.listeners for vh in listener.vhosts}
    assert owners == {
        "bar.example.com": ("ns/one/wild",),
        "foo.example.com": ("ns/two/foo",),
        "*.example.com": ("ns/one/wild",),
        "*": ("ns/one/any",),
    }
    assert others(result.warnings) == [
        "all.yaml#6 HTTPRoute ns/upper: spec.parentRefs[0]: nothing served through listener ns/one/any: more"
        " specific listeners on port 8000 own all of this route's hostnames (listener isolation)"
    ]
    assert "all.yaml#3 HTTPRoute ns/wild: spec.rules[0]: " + NO_BACKENDS in result.warnings


# --- precedence -----------------------------------------------------------------------------


def test_rule_precedence(cwd: Path) -> None:
    backend = "backendRefs: [{name: svc, port: 80}]"
    result = compile_docs(
        gateway(),
        service(),
        route(
            "b-newer",
            f"""\
            parentRefs: [{{name: gw}}]
            rules:
            - matches: [{{path: {{value: /}}}}, {{path: {{value: /api/}}}}]
              {backend}
            - matches: [{{path: {{type: Exact, value: /api}}}}]
              {backend}
            """,
            created="2024-03-01T00:00:00Z",
        ),
        route(
            "a-older",
            f"""\
            parentRefs: [{{name: gw}}]
            rules:
            - matches: [{{path: {{value: /api}}}}, {{path: {{value: /api/v1}}}}]
              {backend}
            - matches: [{{path: {{type: Exact, value: /api}}}}]
              {backend}
            """,
            created="2024-01-01T00:00:00Z",
        ),
        route(
            "c-no-timestamp",
            f"parentRefs: [{{name: gw}}]\nrules: [{{matches: [{{path: {{value: /api}}}}], {backend}}}]",
        ),
        route(
            "a-no-timestamp",
            f"parentRefs: [{{name: gw}}]\nrules: [{{matches: [{{path: {{value: /api}}}}], {backend}}}]",
        ),
    )
    assert rule_names(result) == {
        "*": [
            "httproute/ns/a-older/rule/1/match/0",  # Exact first; older route wins the tie
            "httproute/ns/b-newer/rule/1/match/0",
            "httproute/ns/a-older/rule/0/match/1",  # longest prefix /api/v1
            "httproute/ns/a-older/rule/0/match/0",  # /api: by age, then ns/name for untimed routes
            "httproute/ns/b-newer/rule/0/match/1",  # "/api/" is stored as "/api"
            "httproute/ns/a-no-timestamp/rule/0/match/0",
            "httproute/ns/c-no-timestamp/rule/0/match/0",
            "httproute/ns/b-newer/rule/0/match/0",  # "/" last
        ]
    }
    vhost = result.snapshot.listeners[0].vhosts[0]
    assert [r.path for r in vhost.rules][4] == s.PathMatch(type="PathPrefix", value="/api")


def test_vhost_order_and_fall_through(cwd: Path) -> None:
    result = compile_docs(
        gateway(),
        route(
            "r",
            """\
            parentRefs: [{name: gw}]
            hostnames: ["*.com", b.example.com, "*.example.com", a.example.com]
            rules:
            - matches: [{headers: [{name: x, value: y}]}, {path: {type: Exact, value: /e}}]
            """,
        ),
        route("any", "parentRefs: [{name: gw}]"),
    )
    assert list(rule_names(result)) == ["a.example.com", "b.example.com", "*.example.com", "*.com", "*"]
    # Every hostname lists its own rules, then those of the less specific hostnames that also
    # match (here the route without hostnames): Gateway API ranks by route hostname first.
    r = ["httproute/ns/r/rule/0/match/1", "httproute/ns/r/rule/0/match/0"]
    assert rule_names(result)["a.example.com"] == [*r, "httproute/ns/any/rule/0/match/0"]
    assert rule_names(result)["*"] == ["httproute/ns/any/rule/0/match/0"]
    assert others(result.warnings) == []
    # a rule without backendRefs is kept: the data plane answers 500
    assert result.snapshot.listeners[0].vhosts[0].rules[0].backends == ()


# --- backends -------------------------------------------------------------------------------


def test_backend_refs_valid_and_invalid(cwd: Path) -> None:
    result = compile_docs(
        gateway(),
        service(),
        endpoint_slice(),
        service("shared", ns="other"),
        service("private", ns="other"),
        """\
        apiVersion: gateway.networking.k8s.io/v1beta1
        kind: ReferenceGrant
        metadata: {name: let-ns-in, namespace: other}
        spec:
          from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: ns}]
          to: [{group: "", kind: Service, name: shared}]
        """,
        route(
            "r",
            """\
            parentRefs: [{name: gw}]
            rules:
            - backendRefs:
              - {name: svc, port: 80, weight: 3}
              - {name: svc, port: 80, weight: 0}
              - {name: nope, port: 80}
              - {name: svc, port: 9999}
              - {name: thing, kind: ServiceImport, group: flomesh.io, port: 80}
              - {name: private, namespace: other, port: 80}
              - {name: shared, namespace: other, port: 80}
            """,
        ),
    )
    (rule,) = result.snapshot.listeners[0].vhosts[0].rules
    assert rule.backends == (
        s.BackendRef(weight=3, backend="ns/svc:80"),
        s.BackendRef(weight=0, backend="ns/svc:80"),
        s.BackendRef(weight=1, error="service ns/nope not found"),
        s.BackendRef(weight=1, error="service ns/svc has no port 9999"),
        s.BackendRef(weight=1, error="unsupported backend kind flomesh.io/ServiceImport"),
        s.BackendRef(weight=1, error="cross-namespace reference to other/private needs a ReferenceGrant"),
        s.BackendRef(weight=1, backend="other/shared:80"),
    )
    assert list(result.snapshot.backends) == ["ns/svc:80", "other/shared:80"]
    where = "all.yaml#7 HTTPRoute ns/r: spec.rules[0]"
    assert result.warnings == [
        "all.yaml#4 Service other/shared: spec.ports[0]: no EndpointSlice or Endpoints for service other/shared;"
        " requests to other/shared:80 get 503",
        f"{where}.backendRefs[2]: service ns/nope not found; requests sent to it get 500",
        f"{where}.backendRefs[3]: service ns/svc has no port 9999; requests sent to it get 500",
        f"{where}.backendRefs[4]: unsupported backend kind flomesh.io/ServiceImport; requests sent to it get 500",
        f"{where}.backendRefs[5]: cross-namespace reference to other/private needs a ReferenceGrant;"
        " requests sent to it get 500",
    ]


def test_extension_ref_filter_fails_the_rule(cwd: Path) -> None:
    result = compile_docs(
        gateway(),
        service(),
        route(
            "r",
            """\
            parentRefs: [{name: gw}]
            rules:
            - filters: [{type: ExtensionRef, extensionRef: {group: x.io, kind: Auth, name: a}}]
              backendRefs: [{name: svc, port: 80}]
            """,
        ),
    )
    assert result.snapshot.listeners[0].vhosts[0].rules[0].backends == (
        s.BackendRef(weight=1, error="filter ExtensionRef is not supported"),
    )
    assert result.snapshot.backends == {}


# --- endpoints ------------------------------------------------------------------------------


def backend_endpoints(result: Build, key: str) -> list[tuple[str, int]]:
    return [(e.host, e.port) for e in result.snapshot.backends[key].endpoints]


ROUTE_TO = """\
parentRefs: [{name: gw}]
rules: [{backendRefs: [%s]}]
"""


def test_endpoint_slices_win_over_endpoints(cwd: Path) -> None:
    result = compile_docs(
        gateway(),
        service(ports="[{name: web, port: 80, targetPort: http}]"),
        endpoint_slice(
            body="""\
            endpoints:
            - {addresses: [10.0.0.2]}
            - {addresses: [10.0.0.1], conditions: {ready: true}}
            - {addresses: [10.0.0.3], conditions: {ready: false}}
            ports: [{name: web, port: 8080}, {name: other, port: 9090}]
            """
        ),
        endpoint_slice(name="svc-2", body="endpoints: [{addresses: [10.0.0.4]}]\nports: [{name: web, port: 8081}]\n"),
        """\
        apiVersion: v1
        kind: Endpoints
        metadata: {name: svc, namespace: ns}
        subsets: [{addresses: [{ip: 10.9.9.9}], ports: [{name: web, port: 1}]}]
        """,
        route("r", ROUTE_TO % "{name: svc, port: 80}"),
    )
    assert backend_endpoints(result, "ns/svc:80") == [("10.0.0.1", 8080), ("10.0.0.2", 8080), ("10.0.0.4", 8081)]
    assert result.warnings == []


def test_endpoints_object_and_named_ports(cwd: Path) -> None:
    result = compile_docs(
        gateway(),
        service(ports="[{name: web, port: 80, targetPort: 8080}, {name: admin, port: 81, targetPort: admin}]"),
        """\
        apiVersion: v1
        kind: Endpoints
        metadata: {name: svc, namespace: ns}
        subsets:
        - addresses: [{ip: 10.0.0.1}, {ip: 10.0.0.2}]
          notReadyAddresses: [{ip: 10.0.0.3}]
          ports: [{name: web, port: 8080}, {name: admin, port: 9000}]
        """,
        service("bare", ports="[{port: 80, targetPort: 8080}]"),
        endpoint_slice("bare", body="endpoints: [{addresses: [10.1.0.1]}]\n"),  # no ports: numeric targetPort
        service("named", ports="[{port: 80, targetPort: http}]"),
        endpoint_slice("named", body="endpoints: [{addresses: [10.2.0.1]}]\n"),
        service("mismatch", ports="[{name: web, port: 80}]"),
        endpoint_slice("mismatch", body="endpoints: [{addresses: [10.3.0.1]}]\nports: [{name: '', port: 80}]\n"),
        service("down"),
        endpoint_slice("down", body="endpoints: [{addresses: [10.4.0.1], conditions: {ready: false}}]\n"),
        route(
            "r",
            ROUTE_TO % "{name: svc, port: 80}, {name: svc, port: 81}, {name: bare, port: 80}, {name: named, port: 80},"
            " {name: mismatch, port: 80}, {name: down, port: 80}",
        ),
    )
    assert backend_endpoints(result, "ns/svc:80") == [("10.0.0.1", 8080), ("10.0.0.2", 8080)]
    assert backend_endpoints(result, "ns/svc:81") == [("10.0.0.1", 9000), ("10.0.0.2", 9000)]
    assert backend_endpoints(result, "ns/bare:80") == [("10.1.0.1", 8080)]
    assert backend_endpoints(result, "ns/named:80") == []
    assert backend_endpoints(result, "ns/mismatch:80") == []
    assert backend_endpoints(result, "ns/down:80") == []
    assert result.warnings == [
        'all.yaml#6 Service ns/named: spec.ports[0]: named targetPort "http" needs ports in the EndpointSlice;'
        " requests to ns/named:80 get 503",
        'all.yaml#8 Service ns/mismatch: spec.ports[0]: no EndpointSlice port named "web" for service ns/mismatch;'
        " requests to ns/mismatch:80 get 503",
        "all.yaml#10 Service ns/down: spec.ports[0]: service ns/down port 80 has no ready endpoints;"
        " requests to ns/down:80 get 503",
    ]


# --- determinism and summary ----------------------------------------------------------------


def test_same_input_gives_identical_bytes(cwd: Path) -> None:
    docs = [
        gateway(listeners="- {name: a, port: 8001, protocol: HTTP}\n- {name: b, port: 8000, protocol: HTTP}"),
        service("z"),
        service("a"),
        endpoint_slice("z", body="endpoints: [{addresses: [10.0.0.9]}, {addresses: [10.0.0.1]}]\n"),
        route("r2", ROUTE_TO % "{name: z, port: 80}, {name: a, port: 80}"),
        route("r1", "parentRefs: [{name: gw}]\nhostnames: [b.com, a.com, '*.c.com']"),
    ]
    first = s.encode(compile_docs(*docs).snapshot)
    assert s.encode(compile_docs(*docs).snapshot) == first
    # Other document order: other bytes, so another digest, but the same routing and backends.
    shuffled = compile_docs(*reversed(docs), name="other.yaml").snapshot
    assert shuffled.source_digest != s.decode(first).source_digest
    assert shuffled.listeners == s.decode(first).listeners
    assert shuffled.backends == s.decode(first).backends
    assert list(shuffled.backends) == ["ns/a:80", "ns/z:80"]


def test_summary_counts(cwd: Path) -> None:
    result = compile_docs(
        gateway(listeners="- {name: a, port: 80, protocol: HTTP}\n- {name: b, port: 8000, protocol: HTTP}"),
        route("r", "parentRefs: [{name: gw}]"),
        route("lost", "parentRefs: [{name: nope}]"),
        service(),
    )
    assert result.summary == "ok: 2 listeners (ports 80, 8000), 1 route, 1 service, 0 policies (1 file, 4 documents)"


def test_errors_from_several_files_are_all_reported(cwd: Path) -> None:
    conf = cwd / "conf"
    conf.mkdir()
    (conf / "a.yaml").write_text(service(ports="[{port: eighty}]"))
    (conf / "b.yaml").write_text(route("r", "parentRefs: [{name: gw}]\nrules: [{backendRefs: [{name: svc}]}]"))
    with pytest.raises(ConfigError) as exc:
        build("conf")
    assert [str(i) for i in exc.value.issues] == [
        'conf/a.yaml#1 Service ns/svc: spec.ports[0].port: expected an integer, got "eighty"',
        "conf/b.yaml#1 HTTPRoute ns/r: spec.rules[0].backendRefs[0].port: required",
    ]
    assert str(exc.value).splitlines() == [str(i) for i in exc.value.issues]
