"""The founding scenario end to end: a plain-HTTP gateway in front of httpbin served over HTTPS by gunicorn.

Everything is real: the blog's openssl certificates, httpbin on gunicorn with ``--certfile/--keyfile``,
``python -m fsmfast run`` as a separate process reading the manifests from a directory, and a client that
speaks HTTP/1.1 over a socket (``http.client``). Each test says which part of the blog (or which of
fsmfast's deliberate fixes to FSM v1.2) it checks.
"""

from __future__ import annotations

import http.client
import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests.support import manifests as m
from tests.support.pki import Pki, client_cert, other_ca, san_pki
from tests.support.procs import Gateway, Gunicorn, free_port, wait_for

HOST = "foo.example.com"


@dataclass
class Reply:
    status: int
    headers: dict[str, str]  # lower-case names
    body: str

    def json(self) -> dict:
        return json.loads(self.body)


def get(port: int, path: str, host: str = HOST, headers: dict[str, str] | None = None) -> Reply:
    """``GET path`` to the gateway on 127.0.0.1:``port`` with ``Host: host``, like the blog's curl."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    try:
        conn.request("GET", path, headers={"Host": host, **(headers or {})})
        resp = conn.getresponse()
        body = resp.read().decode(errors="replace")
        return Reply(resp.status, {k.lower(): v for k, v in resp.getheaders()}, body)
    finally:
        conn.close()


def write_policy(config: Path, *docs: str) -> None:
    (config / "policy.yaml").write_text(m.documents(*docs))


# --- (a) no policy: 502 with a reason, where FSM v1.2 gave an empty reply ------------------------------


@pytest.mark.timeout(60)
def test_without_policy_plain_http_to_tls_port_is_502_with_reason(httpbin_tls: Gunicorn, config_dir: Path) -> None:
    port = free_port()
    m.write_founding(config_dir, port, httpbin_tls.port)
    with Gateway(config_dir, [port]) as gw:
        reply = get(port, "/headers")
        assert reply.status == 502, reply
        assert reply.headers.get("content-type", "").startswith("text/plain"), reply.headers
        # "Names the reason": a sentence, not just the status phrase; what failed, not where (the
        # Service and endpoint are the logs', and the body's only with detailed errors on).
        assert reply.body.strip() == "upstream closed the connection before responding", reply.body
        assert "httpbin" not in reply.body and "127.0.0.1" not in reply.body, reply.body

        entry = next(e for e in gw.access_log(min_entries=1) if e.get("path") == "/headers")
        assert entry["status"] == 502
        assert entry["host"] == HOST
        assert entry["method"] == "GET"
        assert entry["reason"] == "upstream_reset", entry
        assert entry["backend"] == "httpbin/httpbin:8443" and entry["upstream"] == f"127.0.0.1:{httpbin_tls.port}"
        # The error log names the Service and the endpoint, with the hint for this classic mistake.
        hint = "attach an UpstreamTLSPolicy or BackendTLSPolicy"
        wait_for(
            lambda: any("httpbin/httpbin:8443" in ln and hint in ln for ln in gw.stderr_text().splitlines()),
            5,
            "the error-log line naming the Service, with the hint",
        )


# --- (b) the blog's fix: Secret + UpstreamTLSPolicy, SIGHUP, 200 with the client's Host ----------------


@pytest.mark.timeout(60)
def test_upstream_tls_policy_after_reload_gives_200_and_preserves_host(
    pki: Pki, httpbin_tls: Gunicorn, config_dir: Path
) -> None:
    port = free_port()
    m.write_founding(config_dir, port, httpbin_tls.port)
    with Gateway(config_dir, [port]) as gw:
        assert get(port, "/headers").status == 502

        m.write_founding(config_dir, port, httpbin_tls.port, with_policy=True, ca_pem=pki.ca_cert)
        line = gw.reload()
        assert "generation" in line, line

        reply = get(port, "/headers")
        assert reply.status == 200, reply
        # FSM v1.2.0 rewrote Host to the endpoint address; fsmfast forwards the client's Host.
        assert reply.json()["headers"]["Host"] == HOST, reply.body

        got = get(port, "/get?x=1")
        assert got.status == 200, got
        assert got.json()["args"] == {"x": "1"}

        entries = gw.access_log(min_entries=3)
        ok = [e for e in entries if e.get("status") == 200]
        assert ok, entries
        assert ok[0]["upstream"], ok[0]


# --- (c) BackendTLSPolicy: SNI + hostname verification against a SAN certificate ------------------------


@pytest.mark.timeout(90)
def test_backend_tls_policy_checks_hostname(pki: Pki, tmp_path: Path, config_dir: Path) -> None:
    san = san_pki(tmp_path / "san", pki, HOST)
    with Gunicorn(san.server_cert, san.server_key) as upstream:
        port = free_port()
        m.write_founding(config_dir, port, upstream.port)
        write_policy(config_dir, m.ca_configmap("httpbin-ca", pki.ca_cert), m.backend_tls_policy(HOST, "httpbin-ca"))
        with Gateway(config_dir, [port]) as gw:
            reply = get(port, "/headers")
            assert reply.status == 200, reply
            assert reply.json()["headers"]["Host"] == HOST

            # A name the certificate does not carry: the chain is fine, the name is not.
            write_policy(
                config_dir,
                m.ca_configmap("httpbin-ca", pki.ca_cert),
                m.backend_tls_policy("bar.example.com", "httpbin-ca"),
            )
            gw.reload()
            reply = get(port, "/headers")
            assert reply.status == 502, reply
            assert "certificate verify failed" in reply.body, reply.body
            # OpenSSL's words quote the name the policy wants: the error log's, not the client's.
            assert "bar.example.com" not in reply.body, reply.body
            wait_for(
                lambda: any(
                    "hostname mismatch" in ln.lower() and "bar.example.com" in ln
                    for ln in gw.stderr_text().splitlines()
                ),
                5,
                "OpenSSL's reason in the error log",
            )


# --- (d) per-service trust: a different CA fails verification, loudly --------------------------------


@pytest.mark.timeout(60)
def test_wrong_ca_is_502_certificate_verify_failed_and_logged(
    httpbin_tls: Gunicorn, tmp_path: Path, config_dir: Path
) -> None:
    wrong = other_ca(tmp_path / "other")
    port = free_port()
    m.write_founding(config_dir, port, httpbin_tls.port, with_policy=True, ca_pem=wrong.ca_cert)
    with Gateway(config_dir, [port]) as gw:
        reply = get(port, "/headers")
        assert reply.status == 502, reply
        assert "certificate verify failed" in reply.body, reply.body

        endpoint = f"127.0.0.1:{httpbin_tls.port}"
        lines = [
            line
            for line in gw.stderr_text().splitlines()
            if "httpbin/httpbin:8443" in line and endpoint in line and "certificate verify failed" in line
        ]
        assert lines, gw.stderr_text()
        # OpenSSL's own reason: the blog's server certificate is not signed by other-ca.
        assert "unable to get local issuer certificate" in lines[0], lines[0]


# --- (e) mTLS: the Secret's tls.crt/tls.key are presented only with mTLS: true ---------------------------


@pytest.mark.timeout(90)
def test_mtls_presents_client_certificate_only_when_enabled(pki: Pki, tmp_path: Path, config_dir: Path) -> None:
    cert, key = client_cert(tmp_path / "client", pki)
    with Gunicorn(pki.server_cert, pki.server_key, ca_certs=pki.ca_cert, cert_reqs=2) as upstream:
        port = free_port()
        m.write_founding(config_dir, port, upstream.port)
        secret = m.tls_secret("https-cert", cert, key, ca=pki.ca_cert)
        write_policy(config_dir, secret, m.upstream_tls_policy(mtls=True))
        with Gateway(config_dir, [port]) as gw:
            reply = get(port, "/headers")
            assert reply.status == 200, reply
            assert reply.json()["headers"]["Host"] == HOST

            # Same Secret, mTLS off: no client certificate, so the upstream refuses the handshake. A TLS
            # session resumed from the mTLS era would wrongly pass here.
            write_policy(config_dir, secret, m.upstream_tls_policy(mtls=False))
            gw.reload()
            reply = get(port, "/headers")
            assert reply.status == 502, reply
            assert reply.body.strip(), reply


# --- (f) X-Forwarded-* reach the upstream --------------------------------------------------------------


@pytest.mark.timeout(60)
def test_forwarded_headers_reach_httpbin(pki: Pki, httpbin_tls: Gunicorn, config_dir: Path) -> None:
    port = free_port()
    m.write_founding(config_dir, port, httpbin_tls.port, with_policy=True, ca_pem=pki.ca_cert)
    with Gateway(config_dir, [port]):
        # httpbin hides proxy headers unless show_env=1.
        reply = get(port, "/headers?show_env=1")
        assert reply.status == 200, reply
        headers = reply.json()["headers"]
        assert headers.get("X-Forwarded-For") == "127.0.0.1", headers
        assert headers.get("X-Forwarded-Proto") == "http", headers
        assert headers.get("X-Forwarded-Host") == HOST, headers
        assert headers.get("Host") == HOST, headers

        # A client's own X-Forwarded-For is kept and the peer appended; a spoofed proto is replaced.
        reply = get(
            port, "/headers?show_env=1", headers={"X-Forwarded-For": "203.0.113.7", "X-Forwarded-Proto": "https"}
        )
        assert reply.status == 200, reply
        headers = reply.json()["headers"]
        assert headers.get("X-Forwarded-For") == "203.0.113.7, 127.0.0.1", headers
        assert headers.get("X-Forwarded-Proto") == "http", headers


# --- (g) fsmfast check on the founding files ----------------------------------------------------------


def run_check(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fsmfast", "check", "-c", str(config)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.timeout(60)
def test_check_accepts_founding_and_names_missing_backend_port(pki: Pki, tmp_path: Path) -> None:
    good = m.write_founding(tmp_path / "good", 8000, 9443, with_policy=True, ca_pem=pki.ca_cert)
    ok = run_check(good)
    assert ok.returncode == 0, ok
    assert (ok.stdout + ok.stderr).strip(), "check printed no summary"

    broken = tmp_path / "broken"
    shutil.copytree(good, broken)
    route = yaml.safe_load((broken / "route.yaml").read_text())
    del route["spec"]["rules"][0]["backendRefs"][0]["port"]
    (broken / "route.yaml").write_text(yaml.safe_dump(route, sort_keys=False))
    bad = run_check(broken)
    assert bad.returncode == 1, bad
    assert "spec.rules[0].backendRefs[0].port" in bad.stdout + bad.stderr, bad
