"""L4 listeners end to end: TLS passthrough by SNI, TLS terminated to TCP (with FSM's gateway mTLS), TCP.

One gateway (one worker, so weighted round robin is deterministic; ``--header-timeout 1`` bounds the
wait for a ClientHello) serves three ports:

- TLS Passthrough: TLSRoute ``foo.example.com`` -> httpbin on gunicorn serving HTTPS with its own
  certificate (the client verifies the backend end to end), ``*.wild.example.com`` -> a small TLS
  server with a wildcard certificate; no SNI, an unknown SNI, garbage and a ClientHello that never
  completes are closed, and the log says why;
- TLS Terminate + TCPRoute with a GatewayTLSPolicy (mTLS): the plaintext reaches an HTTP upstream;
- TCP + TCPRoute weighted 3:1 over two echo servers, with half-close and a large transfer.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support import manifests as m
from tests.support.pki import Pki, client_cert, san_pki
from tests.support.procs import Gateway, Gunicorn, free_port, wait_for
from tests.support.tcp import Echo, tcp_roundtrip
from tests.support.upstreams import Upstream

NS = m.NAMESPACE


@dataclass
class Setup:
    gw: Gateway
    pki: Pki
    ports: dict[str, int]
    client: tuple[Path, Path]
    http: Upstream


def gateway_yaml(ports: dict[str, int]) -> str:
    return (
        "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\n"
        f"metadata: {{name: {m.GATEWAY_NAME}, namespace: {NS}}}\n"
        f"spec:\n  gatewayClassName: {m.GATEWAY_CLASS}\n  listeners:\n"
        f"  - {{name: pass, port: {ports['pass']}, protocol: TLS, tls: {{mode: Passthrough}}}}\n"
        f"  - {{name: term, port: {ports['term']}, protocol: TLS, tls: {{certificateRefs: [{{name: gw-cert}}]}}}}\n"
        f"  - {{name: tcp, port: {ports['tcp']}, protocol: TCP}}\n"
    )


def routes_yaml() -> list[str]:
    def route(kind: str, name: str, section: str, backends: str, hostnames: str = "") -> str:
        return (
            f"apiVersion: gateway.networking.k8s.io/v1alpha2\nkind: {kind}\n"
            f"metadata: {{name: {name}, namespace: {NS}}}\n"
            f"spec:\n  parentRefs: [{{name: {m.GATEWAY_NAME}, sectionName: {section}}}]\n{hostnames}"
            f"  rules: [{{backendRefs: [{backends}]}}]\n"
        )

    return [
        route("TLSRoute", "foo", "pass", "{name: httpbin, port: 443}", "  hostnames: [foo.example.com]\n"),
        route("TLSRoute", "wild", "pass", "{name: wild, port: 443}", "  hostnames: ['*.wild.example.com']\n"),
        route("TCPRoute", "term", "term", "{name: web, port: 80}"),
        route("TCPRoute", "tcp", "tcp", "{name: one, port: 7000, weight: 3}, {name: two, port: 7000, weight: 1}"),
        # FSM's gateway mTLS article, on the TLS Terminate listener.
        "apiVersion: gateway.flomesh.io/v1alpha1\nkind: GatewayTLSPolicy\n"
        f"metadata: {{name: gateway-tls-policy-sample, namespace: {NS}}}\n"
        f"spec:\n  targetRef: {{group: gateway.networking.k8s.io, kind: Gateway, name: {m.GATEWAY_NAME}}}\n"
        "  ports: [{port: %d, config: {mTLS: true}}]\n",
    ]


@pytest.fixture(scope="module")
def setup(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    base = tmp_path_factory.mktemp("l4")
    foo = san_pki(base / "certs", pki, "foo.example.com")
    wild = san_pki(base / "certs", pki, "*.wild.example.com")
    client = client_cert(base / "certs", pki)
    wild_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    wild_ctx.load_cert_chain(wild.server_cert, wild.server_key)
    ports = {name: free_port() for name in ("pass", "term", "tcp")}
    config = base / "config"
    config.mkdir()
    with (
        Gunicorn(foo.server_cert, foo.server_key) as httpbin,
        Echo("wild", wild_ctx) as wild_server,
        Echo("one") as one,
        Echo("two") as two,
        Upstream("web", host="127.0.0.1") as web,
    ):
        services = []
        for name, port, target in (
            ("httpbin", 443, httpbin.port),
            ("wild", 443, wild_server.port),
            ("one", 7000, one.port),
            ("two", 7000, two.port),
            ("web", 80, web.port),
        ):
            services += [m.service(name, port, target), m.endpoint_slice(name, target)]
        docs = routes_yaml()
        docs[-1] = docs[-1] % ports["term"]
        (config / "all.yaml").write_text(
            m.documents(
                gateway_yaml(ports),
                *docs,
                *services,
                m.tls_secret("gw-cert", pki.server_cert, pki.server_key, ca=pki.ca_cert),
            )
        )
        with Gateway(config, list(ports.values()), workers=1, args=["--header-timeout", "1"]) as gw:
            yield Setup(gw, pki, ports, client, web)


def logged(setup: Setup, text: str) -> str:
    return wait_for(
        lambda: next((x for x in setup.gw.stderr_text().splitlines() if text in x), None), 10, f"log line with {text!r}"
    )


# --- TLS passthrough --------------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_passthrough_reaches_an_https_backend_verified_end_to_end_with_curl(setup: Setup) -> None:
    port = setup.ports["pass"]
    out = subprocess.run(
        ["curl", "-sS", "--cacert", str(setup.pki.ca_cert), "--resolve", f"foo.example.com:{port}:127.0.0.1",
         f"https://foo.example.com:{port}/get?via=passthrough"],
        capture_output=True, timeout=30, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    # httpbin saw the request itself: the gateway never terminated TLS.
    assert json.loads(out.stdout)["args"] == {"via": "passthrough"}
    entry = wait_for(
        lambda: next((e for e in setup.gw.access_log() if e.get("route") == "tlsroute/httpbin/foo"), None), 10, "log"
    )
    assert entry["protocol"] == "tls-passthrough" and entry["sni"] == "foo.example.com"
    assert entry["bytes_up"] > 0 and entry["bytes"] > 0


@pytest.mark.timeout(60)
def test_passthrough_wildcard_route_with_python_ssl(setup: Setup) -> None:
    ctx = ssl.create_default_context(cafile=str(setup.pki.ca_cert))
    ctx.verify_flags &= ~getattr(ssl, "VERIFY_X509_STRICT", 0)
    raw = socket.create_connection(("127.0.0.1", setup.ports["pass"]), timeout=10)
    with ctx.wrap_socket(raw, server_hostname="x.wild.example.com") as tls:
        assert tls.recv(100) == b"wild\n"
        tls.sendall(b"ping")
        assert tls.recv(100) == b"ping"


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("sni", "code"), [(None, "no_sni"), ("nobody.example.com", "no_route")], ids=["no-sni", "unknown-sni"]
)
def test_passthrough_without_a_route_closes_and_says_why(setup: Setup, sni: str | None, code: str) -> None:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with (
        socket.create_connection(("127.0.0.1", setup.ports["pass"]), timeout=10) as raw,
        pytest.raises((ssl.SSLError, ConnectionError)),
    ):
        ctx.wrap_socket(raw, server_hostname=sni)
    assert f"[{code}]" in logged(setup, f"[{code}]")


@pytest.mark.timeout(60)
def test_passthrough_refuses_garbage_and_a_silent_client(setup: Setup) -> None:
    port = setup.ports["pass"]
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        raw.sendall(b"GET / HTTP/1.1\r\nHost: foo.example.com\r\n\r\n")
        assert raw.recv(100) == b""
    assert "not a valid TLS ClientHello" in logged(setup, "[client_hello_invalid]")
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        raw.sendall(b"\x16\x03\x01")  # a ClientHello that never completes
        assert raw.recv(100) == b""
    assert 0.5 < time.monotonic() - started < 5
    assert "no complete ClientHello within 1s" in logged(setup, "[client_hello_timeout]")


# --- TLS terminate + TCPRoute, with FSM's gateway mTLS ---------------------------------------------


def curl_term(setup: Setup, *args: str) -> subprocess.CompletedProcess[bytes]:
    port = setup.ports["term"]
    return subprocess.run(
        ["curl", "-sS", "--cacert", str(setup.pki.ca_cert), "--resolve", f"foo.example.com:{port}:127.0.0.1",
         *args, f"https://foo.example.com:{port}/echo"],
        capture_output=True, timeout=30, check=False,
    )  # fmt: skip


@pytest.mark.timeout(60)
def test_tls_terminate_with_mtls_refuses_a_client_without_certificate(setup: Setup) -> None:
    out = curl_term(setup)
    assert out.returncode != 0 and out.stdout == b"", out
    assert "none presented" in logged(setup, f"on port {setup.ports['term']} (SNI foo.example.com) refused")


@pytest.mark.timeout(60)
def test_tls_terminate_with_mtls_forwards_plaintext_for_a_ca_signed_client(setup: Setup) -> None:
    cert, key = setup.client
    out = curl_term(setup, "--cert", str(cert), "--key", str(key))
    assert out.returncode == 0, out.stderr
    seen = json.loads(out.stdout)
    # The upstream got the client's own HTTP bytes: no gateway header was added.
    assert seen["upstream"] == "web"
    assert not any(k.lower().startswith("x-forwarded") for k, _ in seen["headers"]), seen["headers"]
    entry = wait_for(
        lambda: next((e for e in setup.gw.access_log() if e.get("protocol") == "tls-terminate"), None), 10, "log"
    )
    assert entry["client_cert"] == "CN=client" and entry["route"] == "tcproute/httpbin/term"


# --- TCP ------------------------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_tcp_route_weights_three_to_one(setup: Setup) -> None:
    names = [tcp_roundtrip(setup.ports["tcp"], b"hello")[0] for _ in range(8)]
    assert sorted(names) == ["one"] * 6 + ["two"] * 2, names


@pytest.mark.timeout(90)
def test_tcp_large_transfer_both_ways_with_half_close(setup: Setup) -> None:
    payload = os.urandom(16 * 1024 * 1024)
    _, echoed = tcp_roundtrip(setup.ports["tcp"], payload)
    assert hashlib.sha256(echoed).hexdigest() == hashlib.sha256(payload).hexdigest()


@pytest.mark.timeout(60)
def test_http_on_the_tcp_port_is_just_bytes(setup: Setup) -> None:
    name, echoed = tcp_roundtrip(setup.ports["tcp"], b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert name in ("one", "two") and echoed == b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
