"""Reading manifests: files and directories, YAML documents, kinds, metadata, types and defaults."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from fsmfast.compile import build
from fsmfast.config import model as m
from fsmfast.config.issues import Issues
from fsmfast.config.loader import load
from fsmfast.errors import ConfigError

GATEWAY = """\
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: ns}
spec:
  gatewayClassName: any
  listeners:
  - {name: http, port: 8000, protocol: HTTP}
"""


def write(dir: Path, name: str, text: str) -> Path:
    dir.mkdir(parents=True, exist_ok=True)
    path = dir / name
    path.write_text(textwrap.dedent(text))
    return path


def errors_of(path: str) -> list[str]:
    with pytest.raises(ConfigError) as exc:
        build(path)
    return [str(issue) for issue in exc.value.issues]


def loaded(path: str) -> tuple[m.Manifests, Issues]:
    issues = Issues()
    return load(path, issues), issues


@pytest.fixture
def cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run in tmp_path so messages carry the short relative names a user would type."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


# --- files and directories ------------------------------------------------------------------


def test_directory_order_and_skipping(cwd: Path) -> None:
    conf = cwd / "conf"
    write(conf, "b.yml", "apiVersion: v1\nkind: Namespace\nmetadata: {name: b}\n")
    write(conf, "a.yaml", "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n")
    write(conf, "c.yaml~", "not: [yaml")
    write(conf, ".hidden.yaml", "not: [yaml")
    write(conf, "notes.txt", "not: [yaml")
    write(conf / "sub", "d.yaml", "not: [yaml")  # not recursive
    (conf / "dir.yaml").mkdir()
    manifests, issues = loaded("conf")
    assert manifests.files == ["conf/a.yaml", "conf/b.yml"]
    assert [ns.name for ns in manifests.namespaces] == ["a", "b"]
    assert issues.errors == [] and issues.warnings == []


def test_single_file_keeps_the_users_spelling(cwd: Path) -> None:
    write(cwd, "one.yaml", GATEWAY)
    manifests, _ = loaded("./one.yaml")
    assert manifests.files == ["./one.yaml"]
    assert manifests.gateways[0].origin == m.Origin("./one.yaml", 1)


def test_missing_path_and_empty_directory(cwd: Path) -> None:
    assert errors_of("nope.yaml") == ["nope.yaml#0: no such file or directory"]
    (cwd / "empty").mkdir()
    assert errors_of("empty") == ["empty#0: no *.yaml or *.yml files in this directory"]


def test_yaml_syntax_error_names_document_and_line(cwd: Path) -> None:
    write(cwd, "bad.yaml", "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n---\nkind: x\n  bad: 1\n")
    (error,) = errors_of("bad.yaml")
    # libyaml says "...in this context", the pure-Python parser "...here".
    assert error.startswith("bad.yaml#2: YAML syntax error at line 6, column 6: mapping values are not allowed ")


def test_yaml_duplicate_key_is_an_error(cwd: Path) -> None:
    write(cwd, "dup.yaml", "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\nkind: Namespace\n")
    assert errors_of("dup.yaml") == ["dup.yaml#1 Namespace: YAML duplicate key kind at line 4 (first at line 2)"]


def test_empty_documents_are_skipped_but_counted(cwd: Path) -> None:
    write(cwd, "x.yaml", "---\n# only a comment\n---\n" + GATEWAY + "---\n---\nkind: Service\n")
    assert errors_of("x.yaml") == ["x.yaml#4 Service: apiVersion: required"]


# --- documents and metadata -----------------------------------------------------------------


def test_document_level_errors_are_all_reported(cwd: Path) -> None:
    write(
        cwd,
        "docs.yaml",
        """\
        - just a list
        ---
        kind: Service
        metadata: {name: s}
        ---
        apiVersion: v1
        kind: Service
        metadata: {namespace: x}
        ---
        apiVersion: v1
        kind: Service
        ---
        apiVersion: v1
        kind: Service
        metadata: {name: s, creationTimestamp: yesterday}
        ---
        apiVersion: gateway.networking.k8s.io/v2
        kind: HTTPRoute
        metadata: {name: r}
        ---
        apiVersion: gateway.networking.k8s.io/v1alpha2
        kind: BackendTLSPolicy
        metadata: {name: p}
        """,
    )
    assert errors_of("docs.yaml") == [
        "docs.yaml#1: expected a mapping (a Kubernetes object), got a list",
        "docs.yaml#2 Service: apiVersion: required",
        "docs.yaml#3 Service: metadata.name: required",
        "docs.yaml#4 Service: metadata.name: required",
        'docs.yaml#5 Service: metadata.creationTimestamp: expected an RFC 3339 time, got "yesterday"',
        "docs.yaml#6 HTTPRoute: apiVersion: gateway.networking.k8s.io/v2 is not a supported version of HTTPRoute"
        " (use gateway.networking.k8s.io/v1, gateway.networking.k8s.io/v1beta1, gateway.networking.k8s.io/v1alpha2)",
        "docs.yaml#7 BackendTLSPolicy: apiVersion: gateway.networking.k8s.io/v1alpha2 is not a supported version"
        " of BackendTLSPolicy (use gateway.networking.k8s.io/v1, gateway.networking.k8s.io/v1alpha3)",
    ]


def test_duplicate_object_names_both_places(cwd: Path) -> None:
    write(cwd, "a.yaml", GATEWAY)
    write(cwd, "b.yaml", "---\n" + GATEWAY)
    (cwd / "conf").mkdir()
    (cwd / "a.yaml").rename(cwd / "conf" / "a.yaml")
    (cwd / "b.yaml").rename(cwd / "conf" / "b.yaml")
    assert errors_of("conf") == ["conf/b.yaml#1 Gateway ns/gw: duplicate Gateway ns/gw, first defined at conf/a.yaml#1"]


def test_server_written_fields_are_accepted_silently(cwd: Path) -> None:
    write(
        cwd,
        "svc.yaml",
        """\
        apiVersion: v1
        kind: Service
        metadata:
          name: httpbin
          uid: 0b6f1f0e-0000-4000-8000-000000000000
          resourceVersion: "1234"
          creationTimestamp: "2024-02-05T07:21:07Z"
          annotations: {kubectl.kubernetes.io/last-applied-configuration: "{}"}
          managedFields: [{manager: kubectl, operation: Update}]
        spec:
          type: ClusterIP
          clusterIP: 10.43.0.10
          selector: {app: httpbin}
          ports: [{name: http, port: 80, targetPort: 8080, nodePort: 30080}]
        status: {loadBalancer: {}}
        """,
    )
    manifests, issues = loaded("svc.yaml")
    assert issues.errors == [] and issues.warnings == []
    svc = manifests.services[0]
    assert svc.key == "default/httpbin"  # no namespace means default
    assert svc.metadata.creation_timestamp == "2024-02-05T07:21:07Z"


def test_unquoted_timestamp_is_normalised(cwd: Path) -> None:
    write(
        cwd,
        "ns.yaml",
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: a, creationTimestamp: 2024-02-05T08:21:07+01:00}\n",
    )
    manifests, _ = loaded("ns.yaml")
    assert manifests.namespaces[0].metadata.creation_timestamp == "2024-02-05T07:21:07Z"


def test_unknown_kind_warned_once_per_kind(cwd: Path) -> None:
    write(cwd, "gw.yaml", GATEWAY)
    deployment = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d%d}\n"
    write(cwd, "apps.yaml", "---\n".join(deployment % i for i in range(3)))
    write(cwd, "istio.yaml", "apiVersion: networking.istio.io/v1beta1\nkind: Gateway\nmetadata: {name: g}\n")
    result = build(".")
    assert result.warnings == [
        "./apps.yaml#1: kind Deployment (apps/v1) is not used by fsmfast; 3 documents ignored",
        "./istio.yaml#1: kind Gateway (networking.istio.io/v1beta1) is not used by fsmfast; 1 document ignored",
    ]


def test_kind_list_is_unpacked(cwd: Path) -> None:
    write(
        cwd,
        "list.yaml",
        """\
        apiVersion: v1
        kind: List
        items:
        - apiVersion: v1
          kind: Namespace
          metadata: {name: a}
        - apiVersion: v1
          kind: Service
          metadata: {name: s}
          spec: {ports: [{port: "eighty"}]}
        """,
    )
    assert errors_of("list.yaml") == [
        'list.yaml#1 Service default/s: items[1].spec.ports[0].port: expected an integer, got "eighty"'
    ]


def test_gateway_api_versions_accepted(cwd: Path) -> None:
    for version in ("v1", "v1beta1", "v1alpha2"):
        write(cwd, f"{version}.yaml", GATEWAY.replace("/v1\n", f"/{version}\n").replace("gw,", f"gw-{version},"))
    manifests, issues = loaded(".")
    assert issues.errors == []
    assert sorted(gw.name for gw in manifests.gateways) == ["gw-v1", "gw-v1alpha2", "gw-v1beta1"]


# --- types and fields -----------------------------------------------------------------------


def test_wrong_types_name_path_and_expected_type(cwd: Path) -> None:
    write(
        cwd,
        "gw.yaml",
        """\
        apiVersion: gateway.networking.k8s.io/v1
        kind: Gateway
        metadata: {name: gw}
        spec:
          gatewayClassName: 5
          listeners:
          - {name: http, port: eighty, protocol: HTTP}
          - {name: other, port: 70000, protocol: HTTP, allowedRoutes: {namespaces: {from: Some}}}
          - name: third
            port: true
            protocol: HTTP
            allowedRoutes: [All]
        """,
    )
    assert errors_of("gw.yaml") == [
        "gw.yaml#1 Gateway default/gw: spec.gatewayClassName: expected a string, got 5",
        'gw.yaml#1 Gateway default/gw: spec.listeners[0].port: expected an integer, got "eighty"',
        "gw.yaml#1 Gateway default/gw: spec.listeners[1].port: must be between 1 and 65535, got 70000",
        "gw.yaml#1 Gateway default/gw: spec.listeners[1].allowedRoutes.namespaces.from:"
        ' must be one of All, Same, Selector; got "Some"',
        "gw.yaml#1 Gateway default/gw: spec.listeners[2].port: expected an integer, got true",
        "gw.yaml#1 Gateway default/gw: spec.listeners[2].allowedRoutes: expected a mapping, got a list",
    ]


def test_required_fields(cwd: Path) -> None:
    write(
        cwd,
        "gw.yaml",
        """\
        apiVersion: gateway.networking.k8s.io/v1
        kind: Gateway
        metadata: {name: gw}
        spec:
          listeners:
          - {protocol: HTTP}
        ---
        apiVersion: gateway.networking.k8s.io/v1
        kind: Gateway
        metadata: {name: gw2}
        """,
    )
    assert errors_of("gw.yaml") == [
        "gw.yaml#1 Gateway default/gw: spec.listeners[0].name: required",
        "gw.yaml#1 Gateway default/gw: spec.listeners[0].port: required",
        "gw.yaml#1 Gateway default/gw: spec.gatewayClassName: required",
        "gw.yaml#2 Gateway default/gw2: spec: required",
    ]


def test_unknown_spec_field_is_a_warning_with_a_hint(cwd: Path) -> None:
    write(
        cwd,
        "gw.yaml",
        """\
        apiVersion: gateway.networking.k8s.io/v1
        kind: Gateway
        metadata: {name: gw}
        spec:
          gatewayClassName: any
          listeners:
          - {name: http, port: 8000, protocol: HTTP, hostnmae: a.example.com, allowedRoutes: {kinds: []}}
          infrastructure: {labels: {a: b}}
          colour: blue
        """,
    )
    manifests, issues = loaded("gw.yaml")
    assert issues.errors == []
    assert [str(w) for w in issues.warnings] == [
        "gw.yaml#1 Gateway default/gw: spec.listeners[0].hostnmae: unknown field, ignored (did you mean hostname?)",
        "gw.yaml#1 Gateway default/gw: spec.colour: unknown field, ignored",
    ]
    assert manifests.gateways[0].spec.listeners[0].hostname is None


def test_gateway_checks(cwd: Path) -> None:
    write(
        cwd,
        "gw.yaml",
        """\
        apiVersion: gateway.networking.k8s.io/v1
        kind: Gateway
        metadata: {name: gw}
        spec:
          gatewayClassName: any
          listeners:
          - {name: http, port: 8000, protocol: HTTP, hostname: Foo.Example.COM}
          - {name: http, port: 8001, protocol: HTTP}
          - {name: dup, port: 8000, protocol: HTTP, hostname: foo.example.com}
          - {name: ip, port: 8002, protocol: HTTP, hostname: 10.0.0.1}
          - {name: sel, port: 8003, protocol: HTTP, allowedRoutes: {namespaces: {from: Selector}}}
        ---
        apiVersion: gateway.networking.k8s.io/v1
        kind: Gateway
        metadata: {name: none}
        spec: {gatewayClassName: any}
        """,
    )
    assert errors_of("gw.yaml") == [
        'gw.yaml#1 Gateway default/gw: spec.listeners[1].name: duplicate listener name "http" (also spec.listeners[0])',
        "gw.yaml#1 Gateway default/gw: spec.listeners[2]: same port, protocol and hostname as spec.listeners[0]",
        'gw.yaml#1 Gateway default/gw: spec.listeners[3].hostname: "10.0.0.1" is an IP address; a hostname is required',
        "gw.yaml#1 Gateway default/gw: spec.listeners[4].allowedRoutes.namespaces.selector:"
        " required when from is Selector",
        "gw.yaml#2 Gateway default/none: spec.listeners: at least one listener is required",
    ]


def test_non_http_listeners_are_warnings(cwd: Path) -> None:
    write(
        cwd,
        "gw.yaml",
        """\
        apiVersion: gateway.networking.k8s.io/v1
        kind: Gateway
        metadata: {name: gw}
        spec:
          gatewayClassName: any
          listeners:
          - {name: https, port: 8443, protocol: HTTPS, tls: {certificateRefs: [{name: cert}]}}
          - {name: lower, port: 8000, protocol: http}
        """,
    )
    _, issues = loaded("gw.yaml")
    assert issues.errors == []
    assert [str(w) for w in issues.warnings] == [
        "gw.yaml#1 Gateway default/gw: spec.listeners[1]: listener protocol http is not supported; listener ignored"
        " (protocol names are case-sensitive)",
    ]


# --- HTTPRoute ------------------------------------------------------------------------------

ROUTE_HEAD = """\
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r, namespace: ns}
spec:
  parentRefs: [{name: gw}]
"""


def test_route_defaults_are_applied(cwd: Path) -> None:
    write(
        cwd,
        "r.yaml",
        ROUTE_HEAD
        + "  rules:\n  - backendRefs: [{name: svc, port: 80}]\n  - matches: [{path: {type: Exact}}, {path: {}}]\n"
        + "---\n"
        + ROUTE_HEAD.replace("name: r,", "name: bare,"),
    )
    manifests, issues = loaded("r.yaml")
    assert issues.errors == []
    route, bare = manifests.routes
    parent = route.spec.parent_refs[0]
    assert (parent.group, parent.kind, parent.namespace, parent.section_name, parent.port) == (
        "gateway.networking.k8s.io",
        "Gateway",
        None,  # = the route's namespace, resolved when attaching
        None,
        None,
    )
    rule0, rule1 = route.spec.rules
    assert rule0.matches == [m.HTTPRouteMatch(path=m.HTTPPathMatch(type="PathPrefix", value="/"))]
    ref = rule0.backend_refs[0]
    assert (ref.group, ref.kind, ref.weight, ref.namespace) == ("", "Service", 1, None)
    assert [(x.path.type, x.path.value) for x in rule1.matches] == [("Exact", "/"), ("PathPrefix", "/")]
    # no rules at all: one rule with the default match
    assert bare.spec.rules == [m.HTTPRouteRule(matches=[m.HTTPRouteMatch()])]


def test_listener_defaults_are_applied(cwd: Path) -> None:
    write(cwd, "gw.yaml", GATEWAY)
    manifests, _ = loaded("gw.yaml")
    listener = manifests.gateways[0].spec.listeners[0]
    assert listener.allowed_routes.namespaces.from_ == "Same"
    assert listener.allowed_routes.kinds == []
    assert listener.hostname is None


def test_route_errors(cwd: Path) -> None:
    write(
        cwd,
        "routes.yaml",
        GATEWAY
        + "---\n"
        + """\
        apiVersion: gateway.networking.k8s.io/v1beta1
        kind: HTTPRoute
        metadata: {name: http-route-foo, namespace: httpbin}
        spec:
          parentRefs: [{name: gw}]
          hostnames: [Foo.Example.com, "a_b.com", "*.ok.com", 10.0.0.1]
          rules:
          - matches:
            - path: {type: PathPrefix, value: foo}
            - path: {type: Exact, value: "/a//b"}
            - path: {value: "/a/.."}
            - path: {value: "/a%2fb"}
            - path: {type: RegularExpression, value: "^/a//b$"}
            backendRefs:
            - name: httpbin
            - {name: other, kind: ServiceImport, group: flomesh.io}
        """,
    )
    assert errors_of("routes.yaml") == [
        'routes.yaml#2 HTTPRoute httpbin/http-route-foo: spec.hostnames[1]: "a_b.com" is not a valid hostname'
        ' (DNS labels of a-z, 0-9 and "-", optionally starting with "*.")',
        'routes.yaml#2 HTTPRoute httpbin/http-route-foo: spec.hostnames[3]: "10.0.0.1" is an IP address;'
        " a hostname is required",
        'routes.yaml#2 HTTPRoute httpbin/http-route-foo: spec.rules[0].matches[0].path.value: must start with "/"',
        'routes.yaml#2 HTTPRoute httpbin/http-route-foo: spec.rules[0].matches[1].path.value: must not contain "//"',
        'routes.yaml#2 HTTPRoute httpbin/http-route-foo: spec.rules[0].matches[2].path.value: must not end with "/.."',
        'routes.yaml#2 HTTPRoute httpbin/http-route-foo: spec.rules[0].matches[3].path.value: must not contain "%2f"',
        "routes.yaml#2 HTTPRoute httpbin/http-route-foo: spec.rules[0].backendRefs[0].port: required",
    ]


def test_route_warnings_for_what_is_not_served(cwd: Path) -> None:
    write(
        cwd,
        "r.yaml",
        ROUTE_HEAD
        + """\
  rules:
  - matches:
    - headers: [{name: version, value: "2"}]
    - queryParams: [{name: a, value: b}]
      method: GET
    - path: {type: RegularExpression, value: "/v[0-9]+"}
    - path: {type: Exact, value: /ok}
    filters: [{type: RequestHeaderModifier, requestHeaderModifier: {set: [{name: a, value: b}]}}]
    backendRefs:
    - name: svc
      port: 80
      filters: [{type: ExtensionRef, extensionRef: {group: x, kind: y, name: z}}]
    timeouts: {request: 1s}
    retry: {attempts: 2}
""",
    )
    manifests, issues = loaded("r.yaml")
    assert issues.errors == []
    prefix = "r.yaml#1 HTTPRoute ns/r: spec.rules[0]."
    # Header, query, method and regex matches, filters, timeouts and retry are served: no warning.
    assert [str(w) for w in issues.warnings] == [
        prefix
        + "backendRefs[0].filters[0]: filter ExtensionRef is not supported; requests sent to this backend get 500",
    ]
    assert manifests.routes[0].spec.hostnames == []


def test_hostnames_are_lower_cased(cwd: Path) -> None:
    write(cwd, "r.yaml", ROUTE_HEAD + "  hostnames: [Foo.Example.COM, foo.example.com, '*.Bar.com']\n")
    manifests, _ = loaded("r.yaml")
    assert manifests.routes[0].spec.hostnames == ["foo.example.com", "*.bar.com"]


# --- Service, Secret ------------------------------------------------------------------------


def test_service_checks(cwd: Path) -> None:
    write(
        cwd,
        "svc.yaml",
        """\
        apiVersion: v1
        kind: Service
        metadata: {name: s}
        spec:
          ports:
          - {port: 80, targetPort: "8080"}
          - {name: b, port: 81, targetPort: http}
          - {name: b, port: 81}
        """,
    )
    assert errors_of("svc.yaml") == [
        "svc.yaml#1 Service default/s: spec.ports[0].name: required when the Service has several ports",
        'svc.yaml#1 Service default/s: spec.ports[0].targetPort: expected a port number or a port name, got "8080"',
        'svc.yaml#1 Service default/s: spec.ports[2].name: duplicate port name "b" (also spec.ports[1])',
        "svc.yaml#1 Service default/s: spec.ports[2].port: duplicate port 81/TCP (also spec.ports[1])",
    ]


def test_service_target_port_defaults_to_port(cwd: Path) -> None:
    write(cwd, "svc.yaml", "apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec: {ports: [{port: 80}]}\n")
    manifests, _ = loaded("svc.yaml")
    port = manifests.services[0].spec.ports[0]
    assert (port.name, port.target_port, port.protocol) == ("", None, "TCP")


def test_secret_base64_and_string_data(cwd: Path) -> None:
    write(
        cwd,
        "s.yaml",
        """\
        apiVersion: v1
        kind: Secret
        metadata: {name: good, namespace: httpbin}
        type: Opaque
        data:
          a: aGVs
            bG8=
          b: aGVsbG8=
        stringData: {b: plain}
        ---
        apiVersion: v1
        kind: Secret
        metadata: {name: https-cert, namespace: httpbin}
        data: {ca.crt: "not base64!", tls.key: aGVsbG8}
        """,
    )
    assert errors_of("s.yaml") == [
        "s.yaml#2 Secret httpbin/https-cert: data.ca.crt: not valid base64",
        "s.yaml#2 Secret httpbin/https-cert: data.tls.key: not valid base64",
    ]
    (cwd / "s.yaml").write_text((cwd / "s.yaml").read_text().split("---")[0])
    manifests, _ = loaded("s.yaml")
    secret = manifests.secrets[0]
    assert secret.value("a") == b"hello"  # line breaks inside base64 are fine
    assert secret.value("b") == b"plain"  # stringData wins
    assert secret.value("c") is None
    assert secret.field_of("b") == "stringData.b"


# --- policies -------------------------------------------------------------------------------


def test_upstream_tls_policy_checks(cwd: Path) -> None:
    write(
        cwd,
        "p.yaml",
        """\
        apiVersion: gateway.flomesh.io/v1alpha1
        kind: UpstreamTLSPolicy
        metadata: {name: p, namespace: httpbin}
        spec:
          targetRef: {group: apps, kind: Deployment, name: httpbin}
          ports:
          - port: 8443
            config: {mTLS: true}
          - port: 8443
            config: {certificateRef: {name: c, kind: ConfigMap}}
        ---
        apiVersion: gateway.flomesh.io/v1alpha1
        kind: UpstreamTLSPolicy
        metadata: {name: only-default, namespace: httpbin}
        spec:
          targetRef: {kind: Service, name: httpbin}
          config: {certificateRef: {name: https-cert}}
        """,
    )
    assert errors_of("p.yaml") == [
        'p.yaml#1 UpstreamTLSPolicy httpbin/p: spec.targetRef: must reference a Service (group "", kind Service),'
        " got apps/Deployment",
        "p.yaml#1 UpstreamTLSPolicy httpbin/p: spec.ports[0].config.certificateRef: required (here or in spec.config)",
        "p.yaml#1 UpstreamTLSPolicy httpbin/p: spec.ports[1].port: duplicate port 8443 (also spec.ports[0])",
        'p.yaml#1 UpstreamTLSPolicy httpbin/p: spec.ports[1].config.certificateRef: must reference a Secret (group "",'
        " kind Secret), got ConfigMap",
    ]


def test_upstream_tls_policy_without_ports_is_a_warning(cwd: Path) -> None:
    write(
        cwd,
        "p.yaml",
        """\
        apiVersion: gateway.flomesh.io/v1alpha1
        kind: UpstreamTLSPolicy
        metadata: {name: only-default, namespace: httpbin}
        spec:
          targetRef: {kind: Service, name: httpbin}
          config: {certificateRef: {name: https-cert}}
        """,
    )
    manifests, issues = loaded("p.yaml")
    assert [str(w) for w in issues.warnings] == [
        "p.yaml#1 UpstreamTLSPolicy httpbin/only-default: spec.ports: none listed, so this policy has no effect"
        " (only spec.ports[] entries take effect)"
    ]
    assert len(manifests.upstream_tls_policies) == 1


def test_backend_tls_policy_checks(cwd: Path) -> None:
    write(
        cwd,
        "p.yaml",
        """\
        apiVersion: gateway.networking.k8s.io/v1
        kind: BackendTLSPolicy
        metadata: {name: both, namespace: httpbin}
        spec:
          targetRefs: [{group: "", kind: Service, name: httpbin}]
          validation:
            caCertificateRefs: [{group: "", kind: ConfigMap, name: ca}]
            wellKnownCACertificates: System
            hostname: httpbin.example.com
        ---
        apiVersion: gateway.networking.k8s.io/v1alpha3
        kind: BackendTLSPolicy
        metadata: {name: neither, namespace: httpbin}
        spec:
          targetRefs: [{group: "", kind: Deployment, name: httpbin}]
          validation:
            hostname: "*.example.com"
            subjectAltNames: [{type: Hostname}, {type: URI, hostname: a.example.com}]
        ---
        apiVersion: gateway.networking.k8s.io/v1
        kind: BackendTLSPolicy
        metadata: {name: bad-ref, namespace: httpbin}
        spec:
          targetRefs: []
          validation:
            caCertificateRefs: [{group: "", kind: Pod, name: ca}]
            wellKnownCACertificates: Mozilla
        """,
    )
    assert errors_of("p.yaml") == [
        "p.yaml#1 BackendTLSPolicy httpbin/both: spec.validation: caCertificateRefs and wellKnownCACertificates"
        " are mutually exclusive; set one",
        'p.yaml#2 BackendTLSPolicy httpbin/neither: spec.targetRefs[0]: must reference a Service (group "",'
        " kind Service), got Deployment",
        "p.yaml#2 BackendTLSPolicy httpbin/neither: spec.validation: either caCertificateRefs or"
        " wellKnownCACertificates is required",
        'p.yaml#2 BackendTLSPolicy httpbin/neither: spec.validation.hostname: "*.example.com" must be a precise'
        " hostname, without a wildcard",
        "p.yaml#2 BackendTLSPolicy httpbin/neither: spec.validation.subjectAltNames[0].hostname: required when type"
        " is Hostname",
        "p.yaml#2 BackendTLSPolicy httpbin/neither: spec.validation.subjectAltNames[1].uri: required when type is URI",
        "p.yaml#3 BackendTLSPolicy httpbin/bad-ref: spec.validation.wellKnownCACertificates: must be one of System;"
        ' got "Mozilla"',
        "p.yaml#3 BackendTLSPolicy httpbin/bad-ref: spec.validation.hostname: required",
    ]
