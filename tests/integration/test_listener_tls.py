"""HTTPS listeners end to end, with real TLS clients (Python ``ssl``, ``curl``, ``openssl s_client``).

One gateway (two workers) serves every case, each on its own port:

- SNI: one listener with three certificates (the blog's CN-only foo.example.com, a SAN certificate for
  a.example.com, a wildcard ``*.wild.example.com``); no SNI gets the first one;
- misdirected requests: two listeners told apart by hostname on one port (421);
- client mTLS as in FSM's gateway mTLS article (GatewayTLSPolicy), with the subject forwarded in the
  header the Gateway annotation names; and Gateway API ``frontendValidation`` from a ConfigMap;
- session tickets resumed on any worker and after a reload;
- a certificate replaced by SIGHUP while a long download over the old connection goes on;
- a key swapped for another certificate's: ``fsmfast check`` fails and a SIGHUP keeps the old certificate.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support import manifests as m
from tests.support.pki import Pki, client_cert, other_ca, san_pki
from tests.support.procs import Gateway, free_port, wait_for
from tests.support.upstreams import Response, Upstream, parse_response, pattern_sha256

NS = m.NAMESPACE
HEADER = "X-Client-Cert-Subject"


@dataclass
class Setup:
    gw: Gateway
    upstream: Upstream
    pki: Pki
    dir: Path
    ports: dict[str, int]
    client: tuple[Path, Path]
    stranger: tuple[Path, Path]
    wild: Pki
    san_a: Pki

    def ca_context(self, **kw: object) -> ssl.SSLContext:
        return client_context(self.pki.ca_cert, **kw)  # type: ignore[arg-type]


def client_context(
    ca: Path | None,
    cert: tuple[Path, Path] | None = None,
    check_hostname: bool = True,
    version: ssl.TLSVersion | None = None,
    alpn: list[str] | None = None,
) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.verify_flags &= ~getattr(ssl, "VERIFY_X509_STRICT", 0)  # the blog's CA has no keyUsage
    if ca is None:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    else:
        ctx.load_verify_locations(ca)
        ctx.check_hostname = check_hostname
    if cert is not None:
        ctx.load_cert_chain(*cert)
    if version is not None:
        ctx.minimum_version = ctx.maximum_version = version
    if alpn:
        ctx.set_alpn_protocols(alpn)
    return ctx


def tls_connect(
    port: int, ctx: ssl.SSLContext, sni: str | None, session: ssl.SSLSession | None = None
) -> ssl.SSLSocket:
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    return ctx.wrap_socket(raw, server_hostname=sni, session=session)


def request(tls: ssl.SSLSocket, host: str, path: str = "/echo", headers: str = "", close: bool = True) -> bytes:
    tls.sendall(
        f"GET {path} HTTP/1.1\r\nHost: {host}\r\n{headers}{'Connection: close' if close else ''}\r\n\r\n".encode()
    )
    if not close:
        return b""
    chunks = []
    while True:
        data = tls.recv(65536)
        if not data:
            return b"".join(chunks)
        chunks.append(data)


def read_one(tls: ssl.SSLSocket) -> Response:
    """One response with a Content-Length off a kept-alive connection."""
    data = b""
    while True:
        end = data.find(b"\r\n\r\n")
        if end >= 0:
            length = re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", data[: end + 2])
            if length is not None and len(data) >= end + 4 + int(length.group(1)):
                return parse_response(data)
        chunk = tls.recv(65536)
        assert chunk, f"connection closed mid-response: {data!r}"
        data += chunk


def get(port: int, ctx: ssl.SSLContext, sni: str | None, host: str | None = None, **kw: str) -> tuple[int, bytes]:
    with tls_connect(port, ctx, sni) as tls:
        resp = parse_response(request(tls, host or sni or "127.0.0.1", **kw))
    return resp.status, resp.body


def peer_cn(tls: ssl.SSLSocket) -> str:
    der = tls.getpeercert(binary_form=True)
    assert der is not None
    out = subprocess.run(
        ["openssl", "x509", "-inform", "DER", "-noout", "-subject"],
        input=der,
        capture_output=True,
        check=True,
        timeout=20,
    ).stdout.decode()
    return out.strip().split("CN", 1)[1].lstrip(" =")


def fingerprint(tls: ssl.SSLSocket) -> str:
    return hashlib.sha256(tls.getpeercert(binary_form=True) or b"").hexdigest()


def gateway_yaml(ports: dict[str, int]) -> str:
    def https(name: str, port: int, certs: list[str], hostname: str | None = None, extra: str = "") -> str:
        refs = ", ".join(f"{{name: {c}}}" for c in certs)
        host = f"\n    hostname: {hostname}" if hostname else ""
        return (
            f"  - name: {name}\n    port: {port}\n    protocol: HTTPS{host}\n"
            f"    tls:\n      certificateRefs: [{refs}]{extra}\n"
        )

    validation = "\n      frontendValidation: {caCertificateRefs: [{kind: ConfigMap, name: client-ca}]}"
    return (
        "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\n"
        f"metadata:\n  name: {m.GATEWAY_NAME}\n  namespace: {NS}\n"
        f"  annotations: {{fsmfast.io/client-cert-header: {HEADER}}}\n"
        f"spec:\n  gatewayClassName: {m.GATEWAY_CLASS}\n  listeners:\n"
        + https("sni", ports["sni"], ["foo-cert", "a-cert", "wild-cert"])
        + https("a", ports["hosts"], ["a-cert"], "a.example.com")
        + https("foo", ports["hosts"], ["foo-cert"], "foo.example.com")
        + https("mtls", ports["mtls"], ["foo-cert"])
        + https("validation", ports["validation"], ["a-cert"], extra=validation)
        + https("rotate", ports["rotate"], ["rot-cert"])
        + https("keyswap", ports["keyswap"], ["swap-cert"])
    )


def route_yaml() -> str:
    return (
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\n"
        f"metadata: {{name: all, namespace: {NS}}}\n"
        f"spec:\n  parentRefs: [{{name: {m.GATEWAY_NAME}}}]\n  rules: [{{backendRefs: [{{name: echo, port: 80}}]}}]\n"
    )


def policy_yaml(port: int) -> str:
    """FSM's gateway mTLS article: GatewayTLSPolicy with mTLS on the listener port."""
    return (
        "apiVersion: gateway.flomesh.io/v1alpha1\nkind: GatewayTLSPolicy\n"
        f"metadata: {{name: gateway-tls-policy-sample, namespace: {NS}}}\n"
        "spec:\n  targetRef: {group: gateway.networking.k8s.io, kind: Gateway, "
        f"name: {m.GATEWAY_NAME}, namespace: {NS}}}\n  ports:\n  - port: {port}\n    config: {{mTLS: true}}\n"
    )


@pytest.fixture(scope="module")
def setup(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    base = tmp_path_factory.mktemp("listener-tls")
    certs = base / "certs"
    san_a = san_pki(certs, pki, "a.example.com")
    wild = san_pki(certs, pki, "*.wild.example.com")
    rot1 = san_pki(base / "rot1", pki, "rot.example.com")
    san_pki(base / "rot2", pki, "rot.example.com")
    client = client_cert(certs, pki)
    stranger = client_cert(certs, other_ca(base / "other"), cn="stranger")
    config = base / "config"
    config.mkdir()
    ports = {name: free_port() for name in ("sni", "hosts", "mtls", "validation", "rotate", "keyswap")}
    with Upstream("echo", host="127.0.0.1") as upstream:
        (config / "gateway.yaml").write_text(m.documents(gateway_yaml(ports), route_yaml(), policy_yaml(ports["mtls"])))
        (config / "service.yaml").write_text(
            m.documents(m.service("echo", 80, upstream.port), m.endpoint_slice("echo", upstream.port))
        )
        (config / "secrets.yaml").write_text(
            m.documents(
                m.tls_secret("foo-cert", pki.server_cert, pki.server_key, ca=pki.ca_cert),
                m.tls_secret("a-cert", san_a.server_cert, san_a.server_key),
                m.tls_secret("wild-cert", wild.server_cert, wild.server_key),
                m.ca_configmap("client-ca", pki.ca_cert),
            )
        )
        (config / "rotate.yaml").write_text(m.tls_secret("rot-cert", rot1.server_cert, rot1.server_key))
        (config / "swap.yaml").write_text(m.tls_secret("swap-cert", san_a.server_cert, san_a.server_key))
        with Gateway(config, list(ports.values()), workers=2) as gw:
            yield Setup(gw, upstream, pki, base, ports, client, stranger, wild, san_a)


# --- SNI ------------------------------------------------------------------------------------------------


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("sni", "cn"),
    [
        ("foo.example.com", "foo.example.com"),
        ("a.example.com", "a.example.com"),
        ("x.wild.example.com", "*.wild.example.com"),
    ],
)
def test_sni_selects_among_three_certificates_including_a_wildcard(setup: Setup, sni: str, cn: str) -> None:
    # check_hostname=True: Python verifies the chain and the name, as a browser would.
    with tls_connect(setup.ports["sni"], setup.ca_context(), sni) as tls:
        assert peer_cn(tls) == cn
        resp = parse_response(request(tls, sni))
    assert resp.status == 200, resp
    assert json.loads(resp.body)["headers"]


@pytest.mark.timeout(60)
def test_sni_with_curl(setup: Setup) -> None:
    port = setup.ports["sni"]
    out = subprocess.run(
        ["curl", "-sS", "--cacert", str(setup.pki.ca_cert), "--resolve", f"b.wild.example.com:{port}:127.0.0.1",
         "-o", "/dev/null", "-w", "%{http_code} %{http_version}", f"https://b.wild.example.com:{port}/echo"],
        capture_output=True, timeout=30, check=False,
    )  # fmt: skip
    assert out.stdout.decode() == "200 1.1", out.stderr


@pytest.mark.timeout(60)
def test_no_sni_gets_the_listeners_first_certificate(setup: Setup) -> None:
    port = setup.ports["sni"]
    with tls_connect(port, client_context(None), None) as tls:
        assert peer_cn(tls) == "foo.example.com"
        assert parse_response(request(tls, "foo.example.com")).status == 200
    out = subprocess.run(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-noservername", "-CAfile", str(setup.pki.ca_cert)],
        input=b"", capture_output=True, timeout=30, check=False,
    )  # fmt: skip
    text = out.stdout.decode(errors="replace")
    assert "CN = foo.example.com" in text or "CN=foo.example.com" in text, text


@pytest.mark.timeout(60)
@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_tls12_and_tls13_with_alpn_http11(setup: Setup, version: ssl.TLSVersion) -> None:
    ctx = setup.ca_context(version=version, alpn=["h2", "http/1.1"])
    with tls_connect(setup.ports["sni"], ctx, "a.example.com") as tls:
        assert tls.version() == version.name.replace("v1_", "v1.")
        assert tls.selected_alpn_protocol() == "http/1.1"
        assert parse_response(request(tls, "a.example.com", f"/echo?v={version.name}")).status == 200
    entry = wait_for(
        lambda: next((e for e in setup.gw.access_log() if e.get("path") == f"/echo?v={version.name}"), None),
        10,
        "the access-log entry",
    )
    assert entry["sni"] == "a.example.com" and entry["tls"] == version.name.replace("v1_", "v1.")


# --- listeners told apart by hostname ---------------------------------------------------------------


@pytest.mark.timeout(60)
def test_host_of_another_listener_gets_421_on_the_same_connection(setup: Setup) -> None:
    port = setup.ports["hosts"]
    with tls_connect(port, setup.ca_context(), "a.example.com") as tls:
        assert peer_cn(tls) == "a.example.com"
        request(tls, "foo.example.com", close=False)
        tls.settimeout(10)
        data = b""
        while b"\r\n\r\n" not in data or not data.endswith(b"\n"):
            data += tls.recv(65536)
        head = parse_response(data)
        assert head.status == 421, head
        assert b"another listener" in head.body
        request(tls, "a.example.com", close=False)
        assert read_one(tls).status == 200
        # A connection remembers the Host it admitted last: another one is still checked.
        request(tls, "foo.example.com", close=False)
        assert read_one(tls).status == 421
        assert parse_response(request(tls, "a.example.com")).status == 200
    with tls_connect(port, setup.ca_context(), "foo.example.com") as tls:
        assert peer_cn(tls) == "foo.example.com"
        assert parse_response(request(tls, "foo.example.com")).status == 200


# --- client certificates --------------------------------------------------------------------------


def curl(setup: Setup, port: int, *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        ["curl", "-sS", "--cacert", str(setup.pki.ca_cert), "--resolve", f"foo.example.com:{port}:127.0.0.1",
         *args, f"https://foo.example.com:{port}/echo"],
        capture_output=True, timeout=30, check=False,
    )  # fmt: skip


@pytest.mark.timeout(60)
def test_gateway_mtls_article_refuses_without_a_client_certificate(setup: Setup) -> None:
    port = setup.ports["mtls"]
    out = curl(setup, port)
    # FSM's article: "curl: (52) Empty reply from server". Here the handshake itself is refused.
    assert out.returncode != 0 and out.stdout == b"", out
    line = wait_for(
        lambda: next(
            (x for x in setup.gw.stderr_text().splitlines() if f"on port {port}" in x and "refused" in x), None
        ),
        10,
        "the refusal in the gateway log",
    )
    assert "client certificate: none presented" in line, line
    # TLS 1.3: the client's handshake ends before the server checks its certificate; the refusal
    # comes as an alert on the first read.
    with pytest.raises(ssl.SSLError, match=r"CERTIFICATE_REQUIRED|certificate required"):
        get(port, setup.ca_context(), "foo.example.com")


@pytest.mark.timeout(60)
def test_gateway_mtls_article_ca_signed_client_gets_200_and_its_subject(setup: Setup) -> None:
    port = setup.ports["mtls"]
    cert, key = setup.client
    out = curl(setup, port, "--cert", str(cert), "--key", str(key), "-H", f"{HEADER}: CN=forged")
    assert out.returncode == 0, out
    seen = json.loads(out.stdout)["headers"]
    # The forged copy is dropped; the verified subject is what the upstream sees.
    assert [v for k, v in seen if k.lower() == HEADER.lower()] == ["CN=client"], seen
    entry = wait_for(
        lambda: next((e for e in setup.gw.access_log() if e.get("port") == port and e.get("status") == 200), None),
        10,
        "the access-log entry",
    )
    assert entry["client_cert"] == "CN=client" and entry["status"] == 200


@pytest.mark.timeout(60)
def test_client_certificate_from_another_ca_is_refused_and_logged(setup: Setup) -> None:
    port = setup.ports["mtls"]
    cert, key = setup.stranger
    out = subprocess.run(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername", "foo.example.com",
         "-cert", str(cert), "-key", str(key), "-CAfile", str(setup.pki.ca_cert)],
        input=b"GET /echo HTTP/1.1\r\nHost: foo.example.com\r\nConnection: close\r\n\r\n",
        capture_output=True, timeout=30, check=False,
    )  # fmt: skip
    assert b"HTTP/1.1 200" not in out.stdout
    line = wait_for(
        lambda: next((x for x in setup.gw.stderr_text().splitlines() if "verify failed" in x), None),
        10,
        "a verify failure in the gateway log",
    )
    assert f"on port {port}" in line and "client certificate" in line, line


@pytest.mark.timeout(60)
def test_frontend_validation_from_a_configmap(setup: Setup) -> None:
    port = setup.ports["validation"]
    status, body = get(port, setup.ca_context(cert=setup.client), "a.example.com")
    assert status == 200
    assert [HEADER, "CN=client"] in json.loads(body)["headers"]
    with pytest.raises(ssl.SSLError, match=r"CERTIFICATE_REQUIRED|certificate required"):
        get(port, setup.ca_context(), "a.example.com")


# --- sessions and reloads -------------------------------------------------------------------------


def _resumed(setup: Setup, session: ssl.SSLSession, ctx: ssl.SSLContext) -> bool:
    with tls_connect(setup.ports["sni"], ctx, "a.example.com", session=session) as tls:
        reused = tls.session_reused
        assert parse_response(request(tls, "a.example.com")).status == 200
    return reused


@pytest.mark.timeout(90)
@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.TLSv1_2])
def test_session_tickets_resume_on_every_worker_and_after_a_reload(setup: Setup, version: ssl.TLSVersion) -> None:
    ctx = setup.ca_context(version=version)
    with tls_connect(setup.ports["sni"], ctx, "a.example.com") as tls:
        request(tls, "a.example.com")  # TLS 1.3 tickets arrive after the handshake
        session = tls.session
    assert session is not None and session.has_ticket
    before = len(setup.gw.access_log())
    assert all(_resumed(setup, session, ctx) for _ in range(12))
    workers = {e["worker"] for e in setup.gw.access_log(min_entries=before + 12)[before:]}
    # SO_REUSEPORT spreads new connections over both workers: tickets are shared, not per worker.
    assert workers == {0, 1}, workers
    setup.gw.reload()
    assert _resumed(setup, session, ctx)


@pytest.mark.timeout(120)
def test_certificate_rotated_by_sighup_while_a_long_download_continues(setup: Setup) -> None:
    port = setup.ports["rotate"]
    ctx = setup.ca_context()
    size = 48 * 1024 * 1024
    download = tls_connect(port, ctx, "rot.example.com")
    old = fingerprint(download)
    download.settimeout(30)
    request(download, "rot.example.com", f"/bytes/{size}", close=False)
    download.sendall(b"")  # the request is out; read slowly so the download spans the reload
    first = download.recv(256 * 1024)
    head, _, body_start = first.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    digest = hashlib.sha256(body_start)
    got = len(body_start)

    rot2 = setup.dir / "rot2"
    (setup.gw.config / "rotate.yaml").write_text(
        m.tls_secret("rot-cert", rot2 / "san-rot.example.com-cert.pem", rot2 / "san-rot.example.com-key.pem")
    )
    setup.gw.reload()
    with tls_connect(port, ctx, "rot.example.com") as fresh:
        new = fingerprint(fresh)
        assert parse_response(request(fresh, "rot.example.com")).status == 200
    assert new != old
    assert (
        new == hashlib.sha256(ssl.PEM_cert_to_DER_cert((rot2 / "san-rot.example.com-cert.pem").read_text())).hexdigest()
    )

    while got < size:
        data = download.recv(1024 * 1024)
        assert data, f"download cut at {got} of {size} bytes"
        digest.update(data)
        got += len(data)
        time.sleep(0.001)
    download.close()
    assert got == size and digest.hexdigest() == pattern_sha256(size)


@pytest.mark.timeout(120)
def test_a_key_of_another_certificate_fails_check_and_the_reload_keeps_the_old_certificate(setup: Setup) -> None:
    port = setup.ports["keyswap"]
    ctx = setup.ca_context()
    with tls_connect(port, ctx, "a.example.com") as tls:
        old = fingerprint(tls)
        assert parse_response(request(tls, "a.example.com")).status == 200

    swap = setup.gw.config / "swap.yaml"
    good = swap.read_text()
    # The kind of edit that used to "succeed" and close the port: tls.key now holds the blog certificate's key.
    swap.write_text(m.tls_secret("swap-cert", setup.san_a.server_cert, setup.pki.server_key))
    problem = (
        f"Gateway {NS}/{m.GATEWAY_NAME}: spec.listeners[6].tls.certificateRefs[0]: secret {NS}/swap-cert"
        " data.tls.key does not match the certificate in tls.crt"
    )
    try:
        check = subprocess.run(
            [sys.executable, "-m", "fsmfast", "check", "-c", str(setup.gw.config)],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert check.returncode == 1, check
        assert check.stderr.splitlines()[0] == "fsmfast: configuration is invalid (1 error):", check.stderr
        assert problem in check.stderr, check.stderr

        line = setup.gw.reload(expect="data.tls.key")
        assert problem in line, line
        lines = setup.gw.stderr_text().splitlines()
        at = max(i for i, text in enumerate(lines) if problem in text)
        assert re.search(r"reload failed, keeping generation \d+:$", lines[at - 1]), lines[at - 1]
        # Both workers (new connections spread over them) still serve the old certificate.
        before = len(setup.gw.access_log())
        for _ in range(8):
            with tls_connect(port, ctx, "a.example.com") as tls:
                assert fingerprint(tls) == old
                assert parse_response(request(tls, "a.example.com")).status == 200
        assert len(setup.gw.access_log(min_entries=before + 8)) >= before + 8
    finally:
        swap.write_text(good)
    setup.gw.reload()
    with tls_connect(port, ctx, "a.example.com") as tls:
        assert parse_response(request(tls, "a.example.com")).status == 200


def test_openssl_cli_is_available() -> None:
    assert shutil.which("openssl") and shutil.which("curl")
