"""``fsmfast explain`` and the worker take the same path: one request table through both.

Each row is a raw request head. It goes (1) through ``fsmfast.explain.walk``, the pipeline
stages as ``explain`` runs them in-process on the compiled snapshot, and (2) to a live gateway
over a socket, whose access log names the rule the worker took and whose response gives the
status. Both must give the row's rule and status: a matched rule's name (or none), and the
status the gateway answered itself (0 in the table: the request was forwarded, and the upstream
answered 200).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from fsmfast.compile import build
from fsmfast.explain import walk
from fsmfast.proxy.router import Router
from tests.support import manifests
from tests.support.procs import Gateway, free_port
from tests.support.upstreams import Upstream, parse_responses, raw_exchange

NS = manifests.NAMESPACE
A = f"httproute/{NS}/a/rule"
B = f"httproute/{NS}/b/rule/0/match/0"

# (method, target, Host header or None, extra headers, HTTP version) -> (rule or None, status; 0 = forwarded)
ROWS: list[tuple[str, str, str | None, list[tuple[str, str]], str, str | None, int]] = [
    ("GET", "/admin", "a.test", [], "1.1", f"{A}/0/match/0", 0),
    ("GET", "/a/../admin", "a.test", [], "1.1", f"{A}/0/match/0", 0),
    ("GET", "/a/./b/../../admin", "a.test", [], "1.1", f"{A}/0/match/0", 0),
    ("GET", "/a/%2e%2e/admin", "a.test", [], "1.1", f"{A}/0/match/0", 0),
    ("GET", "/a/%2E%2e/admin?x=1", "a.test", [], "1.1", f"{A}/0/match/0", 0),
    ("GET", "//admin", "a.test", [], "1.1", f"{A}/0/match/0", 0),
    ("GET", "/%61dmin", "a.test", [], "1.1", f"{A}/0/match/0", 0),
    ("GET", "/admin/", "a.test", [], "1.1", f"{A}/4/match/0", 0),
    ("GET", "/admin%2Fx", "a.test", [], "1.1", f"{A}/4/match/0", 0),
    ("GET", "/../admin", "a.test", [], "1.1", None, 400),
    ("GET", "/a/%2e%2e/%2e%2e/admin", "a.test", [], "1.1", None, 400),
    ("GET", "http://a.test/admin", "a.test", [], "1.1", f"{A}/0/match/0", 0),
    ("GET", "http://A.test:80/a/../admin", "a.test", [], "1.1", f"{A}/0/match/0", 0),
    ("GET", "http://b.test/admin", None, [], "1.0", B, 500),
    ("GET", "http://a.test/admin", "b.test", [], "1.1", None, 400),
    ("GET", "http://user@a.test/admin", "a.test", [], "1.1", None, 400),
    ("GET", "ftp://a.test/admin", "a.test", [], "1.1", None, 400),
    ("GET", "admin", "a.test", [], "1.1", None, 400),
    ("OPTIONS", "*", "a.test", [], "1.1", f"{A}/4/match/0", 0),
    ("GET", "*", "a.test", [], "1.1", None, 400),
    ("CONNECT", "a.test:443", "a.test", [], "1.1", None, 405),
    ("GET", "/old/page?q=1", "a.test", [], "1.1", f"{A}/1/match/0", 301),
    ("GET", "/x/../old/page", "a.test", [], "1.1", f"{A}/1/match/0", 301),
    ("POST", "/api/items", "a.test", [("Content-Length", "0")], "1.1", f"{A}/2/match/0", 0),
    ("GET", "/api/items", "a.test", [("X-Team", "a")], "1.1", f"{A}/3/match/0", 0),
    ("GET", "/api/items", "a.test", [("X-Team", "b")], "1.1", f"{A}/4/match/0", 0),
    ("GET", "/api/./items", "A.TEST.:80", [("x-team", "a")], "1.1", f"{A}/3/match/0", 0),
    ("GET", "/anything", "b.test", [], "1.1", B, 500),
    ("GET", "/anything", "c.test", [], "1.1", None, 404),
    ("GET", "/a/../../x", "c.test", [], "1.1", None, 400),
]


def _doc(d: dict[str, Any]) -> str:
    return yaml.safe_dump(d, sort_keys=False)


def _manifests(port: int, upstream_port: int) -> str:
    def rule(match: dict[str, Any], **extra: Any) -> dict[str, Any]:
        return {"matches": [match], "backendRefs": [{"name": "svc", "port": 80}], **extra}

    gateway = {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "Gateway",
        "metadata": {"name": "gw", "namespace": NS},
        "spec": {"gatewayClassName": "fsmfast", "listeners": [{"name": "http", "protocol": "HTTP", "port": port}]},
    }
    redirect = {
        "type": "RequestRedirect",
        "requestRedirect": {"statusCode": 301, "path": {"type": "ReplacePrefixMatch", "replacePrefixMatch": "/new"}},
    }
    a = {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": "a", "namespace": NS},
        "spec": {
            "parentRefs": [{"name": "gw"}],
            "hostnames": ["a.test"],
            "rules": [
                rule({"path": {"type": "Exact", "value": "/admin"}}),
                {"matches": [{"path": {"type": "PathPrefix", "value": "/old"}}], "filters": [redirect]},
                rule({"path": {"type": "PathPrefix", "value": "/api"}, "method": "POST"}),
                rule({"path": {"type": "PathPrefix", "value": "/api"}, "headers": [{"name": "x-team", "value": "a"}]}),
                rule({"path": {"type": "PathPrefix", "value": "/"}}),
            ],
        },
    }
    b = {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": "b", "namespace": NS},
        "spec": {
            "parentRefs": [{"name": "gw"}],
            "hostnames": ["b.test"],
            "rules": [{"backendRefs": [{"name": "missing", "port": 80}]}],
        },
    }
    return manifests.documents(
        _doc(gateway),
        manifests.service("svc", 80, upstream_port),
        manifests.endpoint_slice("svc", upstream_port),
        _doc(a),
        _doc(b),
    )


def _head(method: str, target: str, host: str | None, headers: list[tuple[str, str]], version: str) -> bytes:
    lines = [f"{method} {target} HTTP/{version}"]
    if host is not None:
        lines.append(f"Host: {host}")
    lines += [f"{k}: {v}" for k, v in headers]
    lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


@dataclass
class Served:
    gw: Gateway
    port: int
    router: Router


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    tmp = tmp_path_factory.mktemp("agreement")
    with ExitStack() as stack:
        up = stack.enter_context(Upstream("main", echo_all=True))
        port = free_port()
        config = tmp / "gw.yaml"
        config.write_text(_manifests(port, up.port))
        # explain's router: the same build `run` serves, with the snapshot's own backends.
        router = Router(build(str(config), 1).snapshot)
        gw = stack.enter_context(Gateway(Path(config), [port]))
        yield Served(gw, port, router)


def test_the_table_goes_the_same_way_through_explain_and_the_worker(served: Served) -> None:
    explained = []
    for method, target, host, headers, _version, _, _ in ROWS:
        raw = [(b"Host", host.encode())] if host is not None else []
        raw += [(k.encode(), v.encode()) for k, v in headers]
        w = walk(served.router, served.port, method.encode(), target.encode(), raw)
        explained.append((w.rule.name if w.rule is not None else None, w.status))
    time.sleep(0.3)  # the gateway's start-up lines are written
    logged = len(served.gw.access_log())
    worker = []
    for method, target, host, headers, version, _, _ in ROWS:
        data, _ = raw_exchange(served.port, _head(method, target, host, headers, version), timeout=5)
        responses = parse_responses(data, [method])
        assert len(responses) == 1, (target, data[:300])
        worker.append(responses[0].status)
    entries = served.gw.access_log(logged + len(ROWS))[logged:]
    assert len(entries) == len(ROWS), entries
    mismatches = []
    for row, (rule, status), got_status, entry in zip(ROWS, explained, worker, entries, strict=True):
        method, target, host, _, _, want_rule, want_status = row
        served_status = 0 if got_status == 200 and entry["reason"] in (None, "", "-") else got_status
        if not (rule == entry["route"] == want_rule and status == want_status and served_status == want_status):
            mismatches.append(
                f"{method} {target} Host {host}: want {want_rule} {want_status}; explain {rule} {status};"
                f" worker {entry['route']} {got_status} ({entry['reason']})"
            )
    assert not mismatches, "\n".join(mismatches)
