"""Black-box tests of the HTTP/1.1 data plane: a real ``fsmfast run`` in front of real upstreams.

One gateway serves the whole module (two listeners) so the suite stays fast; the few cases
that need other process flags start their own. Every request is written byte by byte with
``tests.support.upstreams`` so the tests see exactly what the gateway sends and what reached
the upstream (or, for refused requests, that nothing did).

Layout of the module gateway:

- listener ``hosts`` (port ``pa``): routes for ``foo.example.com`` (exact), ``*.example.com``
  (wildcard) and one without hostnames (catch-all);
- listener ``paths`` (port ``pb``), no catch-all, so unknown hosts get 404:
  ``up.test`` (general upstream), ``paths.test`` (path matching, weights, invalid backends),
  ``err.test`` (client errors: its upstream must never see a request), ``fail.test``
  (upstream failures), ``stale.test`` (stale pooled connections).
"""

from __future__ import annotations

import hashlib
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support import manifests
from tests.support.pki import Pki
from tests.support.procs import Gateway, free_port
from tests.support.upstreams import (
    Client,
    Response,
    TlsServer,
    Upstream,
    build_request,
    parse_response,
    parse_responses,
    pattern_bytes,
    pattern_sha256,
    raw_exchange,
)

NS = manifests.NAMESPACE
SVC_PORT = 80
CLIENT_IP = "127.0.0.1"

UPSTREAMS = (
    "main",
    "exact",
    "wild",
    "catch",
    "foo",
    "exact-path",
    "exact-prefix",
    "only",
    "short",
    "long",
    "w3",
    "w1",
    "w0",
    "err",
    "fail",
    "stale",
    "notready",
)

# -- manifests -------------------------------------------------------------------------------


def _doc(d: dict[str, Any]) -> str:
    return yaml.safe_dump(d, sort_keys=False)


def gateway_doc(listeners: list[tuple[str, int]]) -> str:
    return _doc(
        {
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "Gateway",
            "metadata": {"name": "gw", "namespace": NS},
            "spec": {
                "gatewayClassName": "fsmfast",
                "listeners": [{"name": n, "protocol": "HTTP", "port": p} for n, p in listeners],
            },
        }
    )


def rule(path_type: str, value: str, *backends: tuple[str, int]) -> dict[str, Any]:
    return {
        "matches": [{"path": {"type": path_type, "value": value}}],
        "backendRefs": [{"name": name, "port": SVC_PORT, "weight": w} for name, w in backends],
    }


def route_doc(name: str, section: str, hostnames: list[str], rules: list[dict[str, Any]]) -> str:
    spec: dict[str, Any] = {"parentRefs": [{"name": "gw", "sectionName": section}]}
    if hostnames:
        spec["hostnames"] = hostnames
    spec["rules"] = rules
    return _doc(
        {
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "HTTPRoute",
            "metadata": {"name": name, "namespace": NS},
            "spec": spec,
        }
    )


def backend_docs(service: str, port: int, ready: bool = True) -> list[str]:
    """A Service and its EndpointSlice pointing at 127.0.0.1:port."""
    docs = [manifests.service(service, SVC_PORT, port)]
    if ready:
        docs.append(manifests.endpoint_slice(service, port))
    else:
        docs.append(
            _doc(
                {
                    "apiVersion": "discovery.k8s.io/v1",
                    "kind": "EndpointSlice",
                    "metadata": {
                        "name": f"{service}-slice",
                        "namespace": NS,
                        "labels": {"kubernetes.io/service-name": service},
                    },
                    "addressType": "IPv4",
                    "ports": [{"name": "", "port": port, "protocol": "TCP"}],
                    "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": False}}],
                }
            )
        )
    return docs


def write_config(path: Path, docs: list[str]) -> Path:
    path.write_text(manifests.documents(*docs))
    return path


# -- the module gateway ----------------------------------------------------------------------


@dataclass
class Env:
    gw: Gateway
    pa: int
    pb: int
    ups: dict[str, Upstream]
    refused_port: int
    tls: TlsServer


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> Iterator[Env]:
    tmp = tmp_path_factory.mktemp("dataplane")
    with ExitStack() as stack:
        ups = {n: stack.enter_context(Upstream(n)) for n in UPSTREAMS}
        tls = stack.enter_context(TlsServer(str(pki.server_cert), str(pki.server_key)))
        pa, pb, refused_port = free_port(), free_port(), free_port()

        docs = [gateway_doc([("hosts", pa), ("paths", pb)])]
        for n, up in ups.items():
            docs += backend_docs(f"svc-{n}", up.port, ready=n != "notready")
        docs += backend_docs("svc-refused", refused_port)
        docs += backend_docs("svc-tls", tls.port)
        # A Service with no EndpointSlice at all: no ready endpoint, like an all-unready slice.
        docs.append(manifests.service("svc-noslice", SVC_PORT, 9))

        docs += [
            route_doc("r-exact", "hosts", ["foo.example.com"], [rule("PathPrefix", "/", ("svc-exact", 1))]),
            route_doc("r-wild", "hosts", ["*.example.com"], [rule("PathPrefix", "/", ("svc-wild", 1))]),
            route_doc("r-catch", "hosts", [], [rule("PathPrefix", "/", ("svc-catch", 1))]),
            route_doc("r-main", "paths", ["up.test"], [rule("PathPrefix", "/", ("svc-main", 1))]),
            route_doc(
                "r-paths",
                "paths",
                ["paths.test"],
                # Less specific rules come first, so list order can't be what makes the right one win.
                [
                    rule("PathPrefix", "/foo", ("svc-foo", 1)),
                    rule("PathPrefix", "/exact", ("svc-exact-prefix", 1)),
                    rule("Exact", "/exact", ("svc-exact-path", 1)),
                    rule("Exact", "/only", ("svc-only", 1)),
                    rule("PathPrefix", "/long", ("svc-short", 1)),
                    rule("PathPrefix", "/long/er", ("svc-long", 1)),
                    rule("PathPrefix", "/weighted", ("svc-w3", 3), ("svc-w1", 1), ("svc-w0", 0)),
                    rule("PathPrefix", "/missing", ("svc-does-not-exist", 1)),
                    rule("PathPrefix", "/notready", ("svc-notready", 1)),
                    rule("PathPrefix", "/noslice", ("svc-noslice", 1)),
                ],
            ),
            route_doc("r-err", "paths", ["err.test"], [rule("PathPrefix", "/", ("svc-err", 1))]),
            route_doc(
                "r-fail",
                "paths",
                ["fail.test"],
                [
                    rule("PathPrefix", "/refused", ("svc-refused", 1)),
                    rule("PathPrefix", "/tls", ("svc-tls", 1)),
                    rule("PathPrefix", "/", ("svc-fail", 1)),
                ],
            ),
            route_doc("r-stale", "paths", ["stale.test"], [rule("PathPrefix", "/", ("svc-stale", 1))]),
        ]
        config = write_config(tmp / "gateway.yaml", docs)
        gw = stack.enter_context(Gateway(config, [pa, pb]))
        yield Env(gw, pa, pb, ups, refused_port, tls)


# -- helpers ---------------------------------------------------------------------------------


def fetch(
    port: int,
    target: str,
    host: str | None,
    headers: list[tuple[str, str]] | None = None,
    method: str = "GET",
    body: bytes = b"",
    version: str = "HTTP/1.1",
) -> Response:
    """One request on a fresh client connection."""
    hdrs = ([("Host", host)] if host is not None else []) + list(headers or [])
    if body and not any(k.lower() in ("content-length", "transfer-encoding") for k, _ in hdrs):
        hdrs.append(("Content-Length", str(len(body))))
    with Client(port) as c:
        return c.request(method, target, hdrs, body, version)


def echo_headers(resp: Response) -> list[tuple[str, str]]:
    assert resp.status == 200, (resp.status, resp.text)
    return [(k, v) for k, v in resp.json()["headers"]]


def values(headers: list[tuple[str, str]], name: str) -> list[str]:
    return [v for k, v in headers if k.lower() == name.lower()]


def assert_local_error(resp: Response, status: int | set[int], *, closes: bool) -> None:
    """A response the gateway made itself: the status, a short text reason, and honest Connection."""
    expected = {status} if isinstance(status, int) else status
    assert resp.status in expected, (resp.status, resp.headers, resp.body[:300])
    assert resp.header("X-Upstream") is None, "an upstream answered; the gateway should have"
    assert 0 < len(resp.body) <= 1024, f"want a short reason text, got {resp.body[:300]!r}"
    assert (resp.header("Content-Type") or "").startswith("text/"), resp.headers
    resp.body.decode("utf-8")
    if closes:
        assert "close" in resp.tokens("connection"), resp.headers


def wait_log(gw: Gateway, pred: Any, timeout: float = 3.0) -> dict[str, Any]:
    """The first access-log entry matching ``pred`` (the log is flushed every ~100 ms)."""
    deadline = time.monotonic() + timeout
    while True:
        for entry in gw.access_log():
            if pred(entry):
                return entry
        if time.monotonic() > deadline:
            raise AssertionError(f"no access-log entry matched; have {gw.access_log()[-5:]!r}")
        time.sleep(0.05)


# -- keep-alive, HTTP/1.0, pipelining -----------------------------------------------------------


@pytest.mark.timeout(30)
def test_keepalive_client_and_upstream_pool(env: Env) -> None:
    up = env.ups["main"]
    before = up.connections
    with Client(env.pb) as c:
        for i in range(6):
            resp = c.request("GET", f"/echo?i={i}", [("Host", "up.test")])
            assert resp.status == 200
            assert resp.json()["target"] == f"/echo?i={i}"
            assert "close" not in resp.tokens("connection")
        assert not c.closed_by_peer(0.3)
    # Sequential requests from one worker must share one pooled upstream connection.
    assert up.connections - before <= 1, f"{up.connections - before} upstream connections for 6 requests"


@pytest.mark.timeout(30)
def test_http10_response_and_close_by_default(env: Env) -> None:
    data, closed = raw_exchange(env.pb, b"GET /echo HTTP/1.0\r\nHost: up.test\r\n\r\n")
    assert closed, f"HTTP/1.0 without keep-alive must be closed after the response: {data[:300]!r}"
    resp = parse_response(data)
    assert resp.status == 200
    assert resp.framing in ("length", "close"), "no chunked encoding for an HTTP/1.0 client"
    assert resp.complete
    assert resp.json()["target"] == "/echo"


@pytest.mark.timeout(30)
def test_http10_keepalive_when_asked(env: Env) -> None:
    with Client(env.pb) as c:
        for _ in range(2):
            resp = c.request("GET", "/echo", [("Host", "up.test"), ("Connection", "keep-alive")], version="HTTP/1.0")
            assert resp.status == 200
            assert resp.framing == "length", "a kept-alive HTTP/1.0 response needs Content-Length"
            # An HTTP/1.0 client only keeps the connection when the server says so.
            assert "keep-alive" in resp.tokens("connection"), resp.headers
        assert not c.closed_by_peer(0.3)


@pytest.mark.timeout(30)
def test_http10_without_host_is_allowed(env: Env) -> None:
    data, _ = raw_exchange(env.pa, b"GET /echo HTTP/1.0\r\n\r\n")
    resp = parse_response(data)
    assert resp.status == 200, (resp.status, resp.body[:200])
    assert resp.header("X-Upstream") == "catch"


@pytest.mark.timeout(30)
def test_pipelined_requests_answered_in_order(env: Env) -> None:
    data = (
        build_request("GET", "/echo?n=1", [("Host", "up.test")])
        + build_request("GET", "/bytes/70000", [("Host", "up.test")])
        + build_request("GET", "/echo?n=3", [("Host", "up.test"), ("Connection", "close")])
    )
    raw, closed = raw_exchange(env.pb, data)
    assert closed
    responses = parse_responses(raw)
    assert [r.status for r in responses] == [200, 200, 200]
    assert all(r.complete for r in responses)
    assert responses[0].json()["target"] == "/echo?n=1"
    assert hashlib.sha256(responses[1].body).hexdigest() == pattern_sha256(70000)
    assert responses[2].json()["target"] == "/echo?n=3"


# -- routing ---------------------------------------------------------------------------------


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("foo.example.com", "exact"),
        ("FOO.Example.COM", "exact"),
        ("foo.example.com:8000", "exact"),
        ("bar.example.com", "wild"),
        ("bar.example.com:8000", "wild"),
        ("a.b.example.com", "wild"),
        ("example.com", "catch"),
        ("other.test", "catch"),
        ("127.0.0.1", "catch"),
    ],
)
def test_hostname_routing(env: Env, host: str, expected: str) -> None:
    resp = fetch(env.pa, "/echo", host)
    assert resp.status == 200, (resp.status, resp.text)
    assert resp.header("X-Upstream") == expected


@pytest.mark.timeout(30)
def test_host_with_port_forwarded_unmodified(env: Env) -> None:
    headers = echo_headers(fetch(env.pa, "/echo", "foo.example.com:8000"))
    assert values(headers, "Host") == ["foo.example.com:8000"]


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/foo", "foo"),
        ("/foo/", "foo"),
        ("/foo/bar", "foo"),
        ("/foo?q=1", "foo"),
        ("/foobar", None),
        ("/exact", "exact-path"),
        ("/exact?q=/x", "exact-path"),
        ("/exact/", "exact-prefix"),
        ("/exactly", None),
        ("/only", "only"),
        ("/only/", None),
        ("/Only", None),
        ("/long", "short"),
        ("/long/e", "short"),
        ("/long/erx", "short"),
        ("/long/er", "long"),
        ("/long/er/x", "long"),
        ("/", None),
        ("/nothing", None),
    ],
)
def test_path_matching(env: Env, path: str, expected: str | None) -> None:
    resp = fetch(env.pb, path, "paths.test")
    if expected is None:
        assert_local_error(resp, 404, closes=False)
    else:
        assert resp.status in (200, 404), (resp.status, resp.text)
        assert resp.header("X-Upstream") == expected
        # The path reaches the upstream as the client wrote it.
        assert env.ups[expected].requests[-1].target == path


@pytest.mark.timeout(30)
def test_unknown_host_is_404(env: Env) -> None:
    resp = fetch(env.pb, "/echo", "nope.test")
    assert_local_error(resp, 404, closes=False)


@pytest.mark.timeout(60)
def test_weighted_backends(env: Env) -> None:
    counts: Counter[str | None] = Counter()
    with Client(env.pb) as c:
        for _ in range(40):
            resp = c.request("GET", "/weighted", [("Host", "paths.test")])
            counts[resp.header("X-Upstream")] += 1
    assert counts["w0"] == 0, "a weight-0 backend must never be chosen"
    assert set(counts) <= {"w3", "w1"}, counts
    # Weights 3:1 over 40 requests; smooth weighted round robin gives exactly 30/10 per worker.
    assert abs(counts["w3"] - 30) <= 3 and abs(counts["w1"] - 10) <= 3, counts
    assert not env.ups["w0"].requests


@pytest.mark.timeout(30)
def test_missing_service_is_500(env: Env) -> None:
    resp = fetch(env.pb, "/missing", "paths.test")
    assert_local_error(resp, 500, closes=False)


@pytest.mark.timeout(30)
@pytest.mark.parametrize("path", ["/notready", "/noslice"])
def test_no_ready_endpoint_is_503(env: Env, path: str) -> None:
    resp = fetch(env.pb, path, "paths.test")
    assert_local_error(resp, 503, closes=False)
    assert not env.ups["notready"].requests


# -- headers to and from the upstream -----------------------------------------------------------


@pytest.mark.timeout(30)
def test_forwarded_headers_appended(env: Env) -> None:
    headers = echo_headers(fetch(env.pb, "/echo", "up.test", [("X-Forwarded-For", "1.2.3.4")]))
    assert values(headers, "Host") == ["up.test"]
    assert values(headers, "X-Forwarded-For") == [f"1.2.3.4, {CLIENT_IP}"]
    assert values(headers, "X-Forwarded-Proto") == ["http"]
    assert values(headers, "X-Forwarded-Host") == ["up.test"]


@pytest.mark.timeout(30)
def test_forwarded_for_set_when_absent(env: Env) -> None:
    headers = echo_headers(fetch(env.pb, "/echo", "up.test"))
    assert values(headers, "X-Forwarded-For") == [CLIENT_IP]


@pytest.mark.timeout(30)
def test_forwarded_for_several_lines_appended(env: Env) -> None:
    headers = echo_headers(
        fetch(env.pb, "/echo", "up.test", [("X-Forwarded-For", "1.2.3.4"), ("X-Forwarded-For", "5.6.7.8")])
    )
    joined = ", ".join(values(headers, "X-Forwarded-For"))
    assert joined == f"1.2.3.4, 5.6.7.8, {CLIENT_IP}"


@pytest.mark.timeout(30)
def test_forwarded_proto_not_spoofable(env: Env) -> None:
    headers = echo_headers(fetch(env.pb, "/echo", "up.test", [("X-Forwarded-Proto", "https")]))
    assert values(headers, "X-Forwarded-Proto") == ["http"]


@pytest.mark.timeout(30)
def test_hop_by_hop_request_headers_stripped(env: Env) -> None:
    sent = [
        ("Connection", "keep-alive, X-Drop"),
        ("X-Drop", "secret"),
        ("X-Keep", "1"),
        ("Keep-Alive", "timeout=5"),
        ("TE", "trailers"),
        ("Trailer", "X-Foo"),
        ("Upgrade", "h2c"),
        ("Proxy-Connection", "keep-alive"),
    ]
    headers = echo_headers(fetch(env.pb, "/echo", "up.test", sent))
    names = {k.lower() for k, _ in headers}
    for gone in ("x-drop", "keep-alive", "te", "trailer", "upgrade", "proxy-connection"):
        assert gone not in names, f"{gone} reached the upstream: {headers}"
    # The gateway may send its own Connection header upstream, but never the client's tokens.
    for token in ", ".join(values(headers, "Connection")).split(","):
        assert token.strip().lower() in ("", "keep-alive", "close"), headers
    assert values(headers, "X-Keep") == ["1"]


@pytest.mark.timeout(30)
def test_connection_close_with_named_header(env: Env) -> None:
    with Client(env.pb) as c:
        resp = c.request("GET", "/echo", [("Host", "up.test"), ("Connection", "close, X-Drop"), ("X-Drop", "1")])
        headers = echo_headers(resp)
        assert not values(headers, "X-Drop")
        assert "close" in resp.tokens("connection")
        assert c.closed_by_peer()


@pytest.mark.timeout(30)
def test_connection_cannot_remove_forwarded_headers(env: Env) -> None:
    sent = [
        ("Connection", "X-Forwarded-For, X-Forwarded-Proto, X-Forwarded-Host"),
        ("X-Forwarded-For", "1.2.3.4"),
    ]
    headers = echo_headers(fetch(env.pb, "/echo", "up.test", sent))
    xff = values(headers, "X-Forwarded-For")
    assert len(xff) == 1 and xff[0].split(",")[-1].strip() == CLIENT_IP, headers
    assert values(headers, "X-Forwarded-Proto") == ["http"]
    assert values(headers, "X-Forwarded-Host") == ["up.test"]


@pytest.mark.timeout(30)
def test_hop_by_hop_response_headers_stripped(env: Env) -> None:
    query = (
        "Connection=X-Secret&X-Secret=1&Keep-Alive=timeout%3D5&Proxy-Connection=keep-alive"
        "&Upgrade=h2c&X-Visible=yes&Set-Cookie=a%3D1&Set-Cookie=b%3D2"
    )
    with Client(env.pb) as c:
        resp = c.request("GET", f"/header?{query}", [("Host", "up.test")])
        assert resp.status == 200
        names = {k.lower() for k, _ in resp.headers}
        for gone in ("x-secret", "keep-alive", "proxy-connection", "upgrade"):
            assert gone not in names, f"{gone} reached the client: {resp.headers}"
        assert "x-secret" not in resp.tokens("connection")
        assert resp.header_all("X-Visible") == ["yes"]
        assert resp.header_all("Set-Cookie") == ["a=1", "b=2"]
        assert resp.body == b"ok\n"
        # Still one good keep-alive connection afterwards.
        assert c.request("GET", "/echo", [("Host", "up.test")]).status == 200


@pytest.mark.timeout(30)
def test_header_order_and_duplicates_preserved(env: Env) -> None:
    sent = [("X-Dup", "1"), ("X-A", "a"), ("X-Dup", "2"), ("X-B", "b")]
    headers = echo_headers(fetch(env.pb, "/echo", "up.test", sent))
    got = [(k.lower(), v) for k, v in headers if k.lower() in ("x-dup", "x-a", "x-b")]
    assert got == [("x-dup", "1"), ("x-a", "a"), ("x-dup", "2"), ("x-b", "b")]


@pytest.mark.timeout(30)
def test_large_header_under_limit_is_forwarded(env: Env) -> None:
    # Each field under the 8 KiB field limit, 56 KB in all: under the 64 KiB head limit.
    big = "v" * 8000
    sent = [(f"X-Big-{i}", big) for i in range(7)]
    headers = echo_headers(fetch(env.pb, "/echo", "up.test", sent))
    assert [(k.lower(), v) for k, v in headers if k.lower().startswith("x-big-")] == [(k.lower(), v) for k, v in sent]


# -- bodies ----------------------------------------------------------------------------------


@pytest.mark.timeout(30)
def test_content_length_upload(env: Env) -> None:
    body = pattern_bytes(1024 * 1024 + 3)
    resp = fetch(env.pb, "/upload", "up.test", method="POST", body=body)
    assert resp.status == 200
    assert resp.json()["length"] == len(body)
    assert resp.json()["sha256"] == hashlib.sha256(body).hexdigest()


@pytest.mark.timeout(30)
def test_chunked_upload_reframed(env: Env) -> None:
    pieces = [pattern_bytes(n) for n in (1, 100, 65536, 5000, 3)]
    encoded = b"".join(b"%x%s\r\n%s\r\n" % (len(p), b";ext=1" if i == 1 else b"", p) for i, p in enumerate(pieces))
    encoded += b"0\r\nX-Trailer: 1\r\n\r\n"
    whole = b"".join(pieces)
    with Client(env.pb) as c:
        c.send(build_request("POST", "/upload", [("Host", "up.test"), ("Transfer-Encoding", "chunked")]))
        # Split the body across writes, mid-chunk, as real clients do.
        for i in range(0, len(encoded), 7000):
            c.send(encoded[i : i + 7000])
        resp = c.read_response()
        assert resp.status == 200
        assert resp.json() == {"upstream": "main", "length": len(whole), "sha256": hashlib.sha256(whole).hexdigest()}
        rec = env.ups["main"].requests_for("/upload")[-1]
        assert rec.body_len == len(whole)
        framing = [k.lower() for k, _ in rec.headers if k.lower() in ("content-length", "transfer-encoding")]
        assert len(framing) == 1, f"upstream request framing headers: {rec.headers}"
        assert c.request("GET", "/echo", [("Host", "up.test")]).status == 200


@pytest.mark.timeout(30)
def test_chunked_download(env: Env) -> None:
    with Client(env.pb) as c:
        resp = c.request("GET", "/chunked/300001", [("Host", "up.test")])
        assert resp.status == 200 and resp.complete
        assert resp.framing in ("chunked", "length")
        assert hashlib.sha256(resp.body).hexdigest() == pattern_sha256(300001)
        assert c.request("GET", "/echo", [("Host", "up.test")]).status == 200


@pytest.mark.timeout(30)
def test_close_delimited_upstream_to_http11_client_is_chunked(env: Env) -> None:
    with Client(env.pb) as c:
        resp = c.request("GET", "/close/300001", [("Host", "up.test")])
        assert resp.status == 200 and resp.complete
        assert resp.framing == "chunked", f"re-framed as chunked for HTTP/1.1, got {resp.framing}: {resp.headers}"
        assert hashlib.sha256(resp.body).hexdigest() == pattern_sha256(300001)
        # The client connection survives the upstream's close.
        assert c.request("GET", "/echo", [("Host", "up.test")]).status == 200


@pytest.mark.timeout(30)
def test_close_delimited_upstream_to_http10_client(env: Env) -> None:
    data, closed = raw_exchange(env.pb, b"GET /close/300001 HTTP/1.0\r\nHost: up.test\r\n\r\n")
    assert closed
    resp = parse_response(data)
    assert resp.status == 200 and resp.complete
    assert resp.framing == "close", resp.headers
    assert hashlib.sha256(resp.body).hexdigest() == pattern_sha256(300001)


@pytest.mark.timeout(30)
def test_chunked_upstream_to_http10_client_is_decoded(env: Env) -> None:
    data, closed = raw_exchange(env.pb, b"GET /chunked/300001 HTTP/1.0\r\nHost: up.test\r\n\r\n")
    assert closed
    resp = parse_response(data)
    assert resp.status == 200 and resp.complete
    assert resp.framing in ("close", "length"), f"HTTP/1.0 has no chunked coding: {resp.headers}"
    assert hashlib.sha256(resp.body).hexdigest() == pattern_sha256(300001)


@pytest.mark.timeout(30)
def test_expect_100_continue_upload(env: Env) -> None:
    body = pattern_bytes(100000)
    headers = [("Host", "up.test"), ("Content-Length", str(len(body))), ("Expect", "100-continue")]
    with Client(env.pb) as c:
        c.send(build_request("POST", "/upload", headers))
        # A client waits a little for 100 Continue, then sends the body anyway (RFC 9110 10.1.1).
        c.sock.settimeout(2)
        interim = []
        try:
            first = c.reader.read_response("POST", interim=True)
            assert first is not None and first.status == 100, first
            interim.append(first)
        except TimeoutError:
            pass
        c.sock.settimeout(10)
        c.send(body)
        final = c.read_response("POST")
        while final.status == 100:
            interim.append(final)
            final = c.read_response("POST")
        assert final.status == 200, (final.status, final.text)
        assert final.json()["length"] == len(body)
        assert final.json()["sha256"] == hashlib.sha256(body).hexdigest()
        assert len(interim) <= 1, "at most one 100 Continue"
        assert c.request("GET", "/echo", [("Host", "up.test")]).status == 200


@pytest.mark.timeout(30)
def test_head_has_length_but_no_body(env: Env) -> None:
    with Client(env.pb) as c:
        resp = c.request("HEAD", "/bytes/100", [("Host", "up.test")])
        assert resp.status == 200
        assert resp.header_all("Content-Length") == ["100"]
        assert resp.header("Transfer-Encoding") is None
        # A body wrongly sent after HEAD would be read here as the next status line.
        nxt = c.request("GET", "/echo", [("Host", "up.test")])
        assert nxt.status == 200 and nxt.json()["method"] == "GET"
    assert env.ups["main"].requests_for("/bytes/100")[-1].method == "HEAD"


@pytest.mark.timeout(30)
def test_local_reply_to_head_has_no_body(env: Env) -> None:
    # The gateway's own answers follow the HEAD rule too: the GET answer's length, no content.
    with Client(env.pb) as c:
        get = c.request("GET", "/nothing", [("Host", "paths.test")])
        assert_local_error(get, 404, closes=False)
        head = c.request("HEAD", "/nothing", [("Host", "paths.test")])
        assert head.status == 404 and head.body == b""
        assert head.header_all("Content-Length") == [str(len(get.body))]
        assert head.header("Content-Type") == get.header("Content-Type")
        # Content sent after the HEAD answer would be read here as the next status line.
        nxt = c.request("GET", "/echo", [("Host", "up.test")])
        assert nxt.status == 200 and nxt.json()["method"] == "GET"


@pytest.mark.timeout(30)
@pytest.mark.parametrize("status", [204, 304])
def test_no_body_statuses(env: Env, status: int) -> None:
    with Client(env.pb) as c:
        c.send(
            build_request("GET", f"/status/{status}", [("Host", "up.test")])
            + build_request("GET", "/echo?after", [("Host", "up.test")])
        )
        first = c.read_response()
        assert first.status == status
        assert first.header("Transfer-Encoding") is None, first.headers
        assert first.header("Content-Length") in (None, "0"), first.headers
        second = c.read_response()
        assert second.status == 200 and second.json()["target"] == "/echo?after"


# -- client errors: answered by the gateway, never forwarded --------------------------------------

_H = b"Host: err.test\r\n"

CLIENT_ERRORS = [
    ("bad-request-line", b"GARBAGE\r\n\r\n", {400}),
    ("request-line-extra-token", b"GET /echo HTTP/1.1 extra\r\n" + _H + b"\r\n", {400}),
    ("bad-version", b"GET /echo HTTX/1.1\r\n" + _H + b"\r\n", {400}),
    ("http-2.0-on-http1-port", b"GET /echo HTTP/2.0\r\n" + _H + b"\r\n", {400, 505}),
    (
        "content-length-and-chunked",
        b"POST /echo HTTP/1.1\r\n"
        + _H
        + b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        {400},
    ),
    ("transfer-encoding-gzip", b"POST /echo HTTP/1.1\r\n" + _H + b"Transfer-Encoding: gzip\r\n\r\nabcde", {501}),
    ("content-length-abc", b"POST /echo HTTP/1.1\r\n" + _H + b"Content-Length: abc\r\n\r\nabc", {400}),
    ("content-length-plus", b"POST /echo HTTP/1.1\r\n" + _H + b"Content-Length: +5\r\n\r\nhello", {400}),
    ("content-length-list", b"POST /echo HTTP/1.1\r\n" + _H + b"Content-Length: 1,2\r\n\r\nab", {400}),
    (
        "content-length-conflict",
        b"POST /echo HTTP/1.1\r\n" + _H + b"Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
        {400},
    ),
    ("http11-without-host", b"GET /echo HTTP/1.1\r\n\r\n", {400}),
    ("two-host-headers", b"GET /echo HTTP/1.1\r\n" + _H + _H + b"\r\n", {400}),
    ("space-before-colon", b"GET /echo HTTP/1.1\r\n" + _H + b"X-Bad : 1\r\n\r\n", {400}),
    ("huge-header", b"GET /echo HTTP/1.1\r\n" + _H + b"X-Big: " + b"a" * 70000 + b"\r\n\r\n", {431}),
    ("huge-url", b"GET /echo?" + b"a" * 70000 + b" HTTP/1.1\r\n" + _H + b"\r\n", {414}),
]


@pytest.mark.timeout(30)
@pytest.mark.parametrize(("data", "expected"), [c[1:] for c in CLIENT_ERRORS], ids=[c[0] for c in CLIENT_ERRORS])
def test_client_error_never_reaches_upstream(env: Env, data: bytes, expected: set[int]) -> None:
    up = env.ups["err"]
    before = len(up.requests)
    raw, closed = raw_exchange(env.pb, data)
    assert raw, "no response at all"
    resp = parse_response(raw)
    assert_local_error(resp, expected, closes=True)
    assert closed, "the gateway must close the connection after a framing error"
    assert up.requests[before:] == [], f"reached the upstream: {up.requests[before:]}"


# -- upstream failures -----------------------------------------------------------------------


@pytest.mark.timeout(30)
def test_upstream_connection_refused_is_502(env: Env) -> None:
    resp = fetch(env.pb, "/refused", "fail.test")
    assert_local_error(resp, 502, closes=False)


@pytest.mark.timeout(30)
def test_upstream_hang_up_is_502(env: Env) -> None:
    up = env.ups["fail"]
    before = len(up.requests_for("/hang-up"))
    t0 = time.monotonic()
    resp = fetch(env.pb, "/hang-up", "fail.test")
    assert_local_error(resp, 502, closes=False)
    assert time.monotonic() - t0 < 10
    # At most one retry, and only if the first attempt used a pooled connection.
    assert 1 <= len(up.requests_for("/hang-up")) - before <= 2


@pytest.mark.timeout(30)
def test_upstream_garbage_is_502(env: Env) -> None:
    resp = fetch(env.pb, "/garbage", "fail.test")
    assert_local_error(resp, 502, closes=False)


@pytest.mark.timeout(30)
def test_plain_http_to_tls_port_is_502(env: Env) -> None:
    # An empty reply (the connection closed without a response) fails inside fetch().
    resp = fetch(env.pb, "/tls", "fail.test")
    assert_local_error(resp, 502, closes=False)


@dataclass
class ShortTimeouts:
    port: int
    up: Upstream


@pytest.fixture(scope="module")
def short(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ShortTimeouts]:
    """A gateway whose upstream-response, client-header and keep-alive timeouts are all 1 s."""
    tmp = tmp_path_factory.mktemp("timeouts")
    with Upstream("slow") as up:
        port = free_port()
        docs = [gateway_doc([("http", port)]), *backend_docs("svc-slow", up.port)]
        docs.append(route_doc("r", "http", [], [rule("PathPrefix", "/", ("svc-slow", 1))]))
        args = ("--response-timeout", "1", "--header-timeout", "1", "--keepalive-timeout", "1")
        with Gateway(write_config(tmp / "gw.yaml", docs), [port], args=args):
            yield ShortTimeouts(port, up)


@pytest.mark.timeout(60)
def test_upstream_response_timeout_is_504(short: ShortTimeouts) -> None:
    t0 = time.monotonic()
    resp = fetch(short.port, "/slow?s=3", "slow.test")
    elapsed = time.monotonic() - t0
    assert_local_error(resp, 504, closes=False)
    assert 0.9 <= elapsed < 2.9, elapsed
    # The late answer lands on the abandoned upstream connection; it must never be handed
    # to the next request (that connection can't go back to the pool).
    time.sleep(2.5)
    with Client(short.port) as c:
        for i in range(3):
            resp = c.request("GET", f"/echo?after-timeout={i}", [("Host", "slow.test")])
            assert resp.status == 200, (resp.status, resp.body[:100])
            assert resp.json()["target"] == f"/echo?after-timeout={i}"


@pytest.mark.timeout(30)
def test_header_timeout_is_408(short: ShortTimeouts) -> None:
    t0 = time.monotonic()
    # An unfinished head (no blank line): a slowloris client.
    raw, closed = raw_exchange(short.port, b"GET /echo?slowloris HTTP/1.1\r\nHost: slow.test\r\n", timeout=5)
    elapsed = time.monotonic() - t0
    assert closed, f"still open after 5 s: {raw[:200]!r}"
    assert 0.9 <= elapsed < 4, elapsed
    assert_local_error(parse_response(raw), 408, closes=True)
    assert not short.up.requests_for("/echo?slowloris")


@pytest.mark.timeout(30)
def test_keepalive_timeout_closes_idle_client(short: ShortTimeouts) -> None:
    with Client(short.port) as c:
        assert c.request("GET", "/echo", [("Host", "slow.test")]).status == 200
        t0 = time.monotonic()
        assert c.closed_by_peer(wait=5), "idle keep-alive connection not closed"
        assert 0.9 <= time.monotonic() - t0 < 4


@pytest.mark.timeout(30)
def test_stale_pooled_connection_closed_while_idle(env: Env) -> None:
    up = env.ups["stale"]
    assert fetch(env.pb, "/close-after?s=0.1", "stale.test").status == 200
    time.sleep(0.5)
    resp = fetch(env.pb, "/echo", "stale.test")
    assert resp.status == 200, (resp.status, resp.text)
    assert resp.header("X-Upstream") == "stale"
    assert up.requests_for("/echo")


@pytest.mark.timeout(30)
def test_stale_pooled_connection_dropped_on_reuse(env: Env) -> None:
    """The upstream closes a kept-alive connection just as the next request arrives: retry once."""
    up = env.ups["stale"]
    before = len(up.requests_for("/echo?drop"))
    assert fetch(env.pb, "/drop-next", "stale.test").status == 200
    resp = fetch(env.pb, "/echo?drop", "stale.test")
    assert resp.status == 200, (resp.status, resp.text)
    # The first attempt went to the pooled connection (dropped), the retry to a fresh one.
    assert len(up.requests_for("/echo?drop")) - before == 2


@pytest.mark.timeout(30)
def test_bytes_after_a_whole_response_are_dropped_with_the_connection(env: Env) -> None:
    # Response and stray bytes arrive in one read: the client gets exactly the announced body and
    # the connection is not pooled (the stray bytes would be read as the next response's head).
    up = env.ups["stale"]
    resp = fetch(env.pb, "/overlong", "stale.test")
    assert resp.status == 200 and resp.body == b"hello\n", (resp.status, resp.body)
    before = up.connections
    resp = fetch(env.pb, "/echo?after-overlong", "stale.test")
    assert resp.status == 200, (resp.status, resp.text)
    assert up.connections == before + 1, "the confused connection was reused"


# -- access log ------------------------------------------------------------------------------


@pytest.mark.timeout(30)
def test_access_log_success_entry(env: Env) -> None:
    host = f"log-{uuid.uuid4().hex[:8]}.test"
    resp = fetch(env.pa, "/echo", host)
    assert resp.status == 200 and resp.body
    entry = wait_log(env.gw, lambda e: e.get("host") == host)
    assert entry["status"] == 200
    assert entry["bytes"] == len(resp.body)  # the body went out with the head, in one piece
    assert entry["method"] == "GET"
    assert entry["path"] == "/echo"
    assert entry["upstream"] == f"127.0.0.1:{env.ups['catch'].port}"
    assert isinstance(entry["duration_ms"], int | float) and entry["duration_ms"] >= 0
    assert entry.get("reason") in (None, "")
    assert entry["pid"] in env.gw.worker_pids()


@pytest.mark.timeout(30)
def test_access_log_no_route_entry(env: Env) -> None:
    host = f"nolog-{uuid.uuid4().hex[:8]}.test"
    assert fetch(env.pb, "/x", host).status == 404
    entry = wait_log(env.gw, lambda e: e.get("host") == host)
    assert entry["status"] == 404
    assert entry["reason"] == "no_route"
    assert entry["upstream"] is None


@pytest.mark.timeout(30)
def test_access_log_connect_refused_entry(env: Env) -> None:
    path = f"/refused/{uuid.uuid4().hex[:8]}"
    assert fetch(env.pb, path, "fail.test").status == 502
    entry = wait_log(env.gw, lambda e: e.get("path") == path)
    assert entry["status"] == 502
    assert entry["reason"] == "upstream_connect_refused"
    assert entry["host"] == "fail.test"


@pytest.mark.timeout(60)
def test_no_access_log_flag(tmp_path: Path) -> None:
    with Upstream("quiet") as up:
        port = free_port()
        docs = [gateway_doc([("http", port)]), *backend_docs("svc-quiet", up.port)]
        docs.append(route_doc("r", "http", [], [rule("PathPrefix", "/", ("svc-quiet", 1))]))
        with Gateway(write_config(tmp_path / "gw.yaml", docs), [port], args=("--no-access-log",)) as gw:
            for _ in range(3):
                assert fetch(port, "/echo", "quiet.test").status == 200
            assert fetch(port, "/status/500", "quiet.test").status == 500
            time.sleep(0.5)  # past the log's flush interval
            assert gw.access_log() == []
