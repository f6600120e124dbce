"""``fsmfast routes`` and ``fsmfast explain``: what they print comes from the worker's own router."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from fsmfast.cli import main
from fsmfast.compile import build
from fsmfast.explain import explain, render_routes
from tests.unit.test_compile import endpoint_slice, gateway, route, service

CONFIG = [
    gateway(listeners="- {name: http, port: 8000, protocol: HTTP}\n- {name: other, port: 8001, protocol: HTTP}"),
    service(),
    endpoint_slice(),
    service("gone-endpoints"),
    route(
        "api",
        """\
        parentRefs: [{name: gw, sectionName: http}]
        hostnames: [api.example.com]
        rules:
        - matches: [{path: {type: Exact, value: /health}}]
          backendRefs: [{name: svc, port: 80}]
        - matches: [{path: {value: /v1}, method: POST, headers: [{name: x-team, value: a}]}]
          filters:
          - type: URLRewrite
            urlRewrite: {hostname: internal.example, path: {type: ReplacePrefixMatch, replacePrefixMatch: /}}
          - {type: RequestMirror, requestMirror: {backendRef: {name: svc, port: 80}, percent: 10}}
          timeouts: {request: 2s}
          backendRefs:
          - {name: svc, port: 80, weight: 3}
          - {name: missing, port: 80}
          - {name: gone-endpoints, port: 80, weight: 0}
        - matches: [{path: {value: /old}}]
          filters:
          - type: RequestRedirect
            requestRedirect: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /new}}
        """,
    ),
    route("catch-all", "parentRefs: [{name: gw, sectionName: http}]\nrules: [{backendRefs: [{name: svc, port: 80}]}]"),
]


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "gw.yaml"
    path.write_text("".join("---\n" + textwrap.dedent(d).rstrip("\n") + "\n" for d in CONFIG))
    return path


def test_routes_lists_every_host_in_precedence_order(config: Path) -> None:
    text = render_routes(build(str(config)).snapshot)
    lines = text.splitlines()
    assert lines[0] == "port 8000 (HTTP): listeners ns/gw/http"
    assert lines[1] == "  host api.example.com  [ns/gw/http]"
    names = [line.split()[1] for line in lines if line.startswith("    ") and "httproute/" in line]
    assert names == [
        "httproute/ns/api/rule/0/match/0",
        "httproute/ns/api/rule/2/match/0",
        "httproute/ns/api/rule/1/match/0",
        "httproute/ns/catch-all/rule/0/match/0",  # api.example.com falls through to it
        "httproute/ns/catch-all/rule/0/match/0",  # host *
    ]
    row = next(line for line in lines if "rule/1/match/0" in line)
    assert "Prefix /v1" in row and "POST, header x-team = 'a'" in row
    assert "ns/svc:80 w3, ✗ service ns/missing not found (500) w1, ns/gone-endpoints:80 w0" in row
    assert "rewrite host → internal.example, prefix → /; mirror → ns/svc:80 (10%); timeouts request 2s" in row
    assert "- (redirect)" in next(line for line in lines if "rule/2/match/0" in line)
    # Columns are aligned: every row of a table starts its path column at the same offset.
    header = next(line for line in lines if line.strip().startswith("#"))
    offset = header.index("path")
    assert all(line[offset - 2 : offset] == "  " for line in lines if "httproute/ns/api/" in line)
    assert "port 8001 (HTTP): listeners ns/gw/other\n  (no HTTP routes)" in text


def test_explain_a_match_with_filters_and_backends(config: Path) -> None:
    text = explain(
        build(str(config)).snapshot,
        8000,
        "API.example.com:8000",
        "/v1/items",
        "POST",
        headers=[("X-Team", "a")],
        query=[("q", "a b")],
    )
    lines = text.splitlines()
    assert lines[0] == "request    POST /v1/items?q=a%20b  Host: API.example.com:8000  port 8000"
    assert lines[2].startswith("listener   ✓ port 8000 host api.example.com → virtual host api.example.com (exact)")
    assert "other hostnames on this port: *" in lines[3]
    candidates = [line for line in lines if line.startswith("  ✓") or line.startswith("  ✗") or line.startswith("  ·")]
    assert (
        candidates[0].startswith("  ✗  1  httproute/ns/api/rule/0/match/0")
        and "path /v1/items is not exactly /health" in candidates[0]
    )
    assert candidates[1].endswith("path /v1/items is not /old or below it")
    assert candidates[2].startswith("  ✓  3  httproute/ns/api/rule/1/match/0") and candidates[2].endswith(
        "matches: chosen"
    )
    assert candidates[3].endswith("matches too, but a rule above takes precedence")
    assert "matched    httproute/ns/api/rule/1/match/0" in lines
    assert "filters    rewrite host → internal.example, prefix → /" in lines
    backend = next(line for line in lines if "ns/svc:80" in line and "75%" in line)
    assert "endpoints 10.0.0.1:8080; plain HTTP; sent as POST /items?q=a%20b Host internal.example" in backend
    assert "mirrored to ns/svc:80" in backend
    assert any("ns/missing:80" not in line and "service ns/missing not found → 500" in line for line in lines)
    assert any("weight 0: never chosen" in line for line in lines)
    assert lines[-1] == "result     ✓ proxied to one of the backends above, by weight"


def test_explain_why_nothing_matches(config: Path) -> None:
    snap = build(str(config)).snapshot
    text = explain(snap, 8000, "api.example.com", "/v1", "GET", headers=[("x-team", "b")])
    assert "method GET is not POST" in text
    assert "matches: chosen" in text  # the catch-all below takes it
    text = explain(snap, 8000, "api.example.com", "/v1", "POST", headers=[("x-team", "b")])
    assert "header x-team = 'a': 'b'" in text


def test_explain_redirect_and_misses(config: Path) -> None:
    snap = build(str(config)).snapshot
    text = explain(snap, 8000, "api.example.com", "/old/page?x=1")
    assert text.splitlines()[-1] == "result     ✓ 302 redirect, Location: http://api.example.com:8000/new/page?x=1"
    assert "no listener on port 9999 (ports: 8000, 8001)" in explain(snap, 9999, "a", "/")
    assert "no hostname on port 8001 matches a → 404 (hostnames: none)" in explain(snap, 8001, "a", "/")


def test_explain_matches_the_normalized_path_as_the_worker_does(config: Path) -> None:
    snap = build(str(config)).snapshot
    for given in ("/a/../health", "/a/%2e%2E/health", "//health", "/%68ealth", "http://api.example.com:80/x/../health"):
        text = explain(snap, 8000, "api.example.com", given)
        assert f"path       /health  (normalized from {given})" in text, text
        assert "matched    httproute/ns/api/rule/0/match/0" in text, text
    text = explain(snap, 8000, "api.example.com", "/health")
    assert "path       /health\n" in text  # nothing to normalize: no "from"
    # Absolute-form names the host the worker routes by.
    text = explain(snap, 8000, "other.example", "http://OTHER.example.:80/health")
    assert "host other.example → virtual host * (any hostname)" in text
    assert "matched    httproute/ns/catch-all/rule/0/match/0" in text


@pytest.mark.parametrize(
    ("path", "method", "status", "why"),
    [
        ("/../health", "GET", 400, "request path goes above the root"),
        ("/v1/%2e%2e/%2E%2E/x", "GET", 400, "request path goes above the root"),
        ("http://elsewhere.example/health", "GET", 400, "Host header does not match the request-target"),
        ("ftp://api.example.com/", "GET", 400, "unsupported request-target form"),
        ("*", "GET", 400, "request-target * is only valid with OPTIONS"),
        ("api.example.com:443", "CONNECT", 405, "CONNECT is not supported"),
    ],
)
def test_explain_prints_the_refusal_the_worker_gives(
    config: Path, path: str, method: str, status: int, why: str
) -> None:
    lines = explain(build(str(config)).snapshot, 8000, "api.example.com", path, method).splitlines()
    assert lines[1] == f"target     ✗ refused before routing: {why}"
    code = "method_not_allowed" if status == 405 else "bad_request"
    assert lines[-1] == f"result     ✗ {status} ({code}), answered by the gateway"


def test_cli_routes_and_explain(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["routes", "-c", str(config)]) == 0
    assert "host api.example.com" in capsys.readouterr().out
    argv = ["explain", "-c", str(config), "--port", "8000", "--host", "api.example.com", "--path", "/health"]
    assert main([*argv, "--header", "a=b=c", "--query", "k=v"]) == 0
    out = capsys.readouterr().out
    assert "request    GET /health?k=v" in out and "           a: b=c" in out
    assert "matched    httproute/ns/api/rule/0/match/0" in out
    assert main([*argv, "--header", "novalue"]) == 2
    assert "expected NAME=VALUE" in capsys.readouterr().err


def test_cli_reports_an_invalid_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(route("r", "rules: [{matches: [{path: {type: RegularExpression, value: '('}}]}]"))
    assert main(["routes", "-c", str(bad)]) == 1
    err = capsys.readouterr().err
    assert "configuration is invalid (1 error)" in err
    assert "spec.rules[0].matches[0].path.value: invalid regular expression" in err
