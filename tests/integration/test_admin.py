"""The admin listener's GET /config and ``fsmfast status`` against a real gateway.

One gateway (two workers) serves ``tests.support.tls_config``: an HTTP listener, two HTTPS listeners sharing
a certificate Secret whose leaf expires in 10 days (client certificates required on one port), an
UpstreamTLSPolicy with a CA and a client certificate and key, and a BackendTLSPolicy trusting a ConfigMap's
CA and a Secret's. /config must describe exactly that, with no key or Secret data in the raw body; ``fsmfast
status`` must print it for a person, the soon-expiring certificate included, then a reload's result.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from cryptography import x509

from tests.support.procs import Gateway, children_of, free_port, wait_for
from tests.support.tls_config import NS, TlsConfig, leaks, write_tls_config

GW = f"{NS}/simple-fsm-gateway"


@dataclass
class Setup:
    gw: Gateway
    tls: TlsConfig
    upstream_port: int

    def config(self) -> dict[str, Any]:
        status, body = self.gw.admin("/config")
        assert status == 200, body
        return dict(json.loads(body))

    def status(self) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "fsmfast", "status", "--admin-address", f"127.0.0.1:{self.gw.admin_port}"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )


def _serving(setup: Setup, generation: int) -> bool:
    try:
        code, body = setup.gw.admin("/status")
    except OSError:
        return False
    if code != 200:
        return False
    status = json.loads(body)
    workers = status.get("workers") or []
    return (
        status.get("generation") == generation
        and len(workers) == 2
        and all(w.get("ready") and w.get("generation") == generation for w in workers)
    )


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    ports = {"http": free_port(), "https": free_port(), "https2": free_port()}
    upstream_port = free_port()
    tls = write_tls_config(tmp_path_factory.mktemp("admin"), ports, upstream_port, short_days=10)
    with Gateway(tls.config, list(ports.values()), workers=2) as gw:
        setup = Setup(gw, tls, upstream_port)
        wait_for(lambda: _serving(setup, 1), timeout=30, what="both workers serving generation 1")
        yield setup


def _listener(config: dict[str, Any], name: str) -> dict[str, Any]:
    return next(li for li in config["listeners"] if li["names"] == [f"{GW}/{name}"])


def test_config_describes_the_served_generation(setup: Setup) -> None:
    config = setup.config()
    assert config["generation"] == 1
    ports = setup.tls.ports
    assert [(li["port"], li["protocol"]) for li in config["listeners"]] == sorted(
        [(ports["http"], "HTTP"), (ports["https"], "HTTPS"), (ports["https2"], "HTTPS")]
    )
    # The listener certificate as the gateway decoded it, checked against an independent parser.
    ref = x509.load_pem_x509_certificate(setup.tls.www.server_cert.read_bytes())
    https = _listener(config, "https")
    [spec] = https["tls"]
    [cert] = spec["certificates"]
    leaf = cert["chain"][0]
    assert (cert["secret"], leaf["subject"]) == (f"{NS}/www-cert", ref.subject.rfc4514_string())
    assert leaf["sans"] == ["DNS:www.example.com", "IP Address:127.0.0.1"]
    assert leaf["not_after_epoch"] == ref.not_valid_after_utc.timestamp()
    assert leaf["not_after"] == ref.not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert [c["subject"] for c in https["client_certificates"]["trusted_cas"]] == ["CN=flomesh.io"]
    assert _listener(config, "https2")["client_certificates"] is None
    # Routes in precedence order on every port.
    for listener in config["listeners"]:
        [vhost] = listener["virtual_hosts"]
        assert [(r["path"]["type"], r["path"]["value"]) for r in vhost["routes"]] == [
            ("Exact", "/healthz"),
            ("PathPrefix", "/api"),
            ("PathPrefix", "/"),
        ]
    # Backends, endpoints and upstream TLS.
    backends = {b["name"]: b for b in config["backends"]}
    endpoint = [f"127.0.0.1:{setup.upstream_port}"]
    assert {name: b["endpoints"] for name, b in backends.items()} == {
        f"{NS}/bundle:9443": endpoint,
        f"{NS}/plain:80": endpoint,
        f"{NS}/secure:8443": endpoint,
    }
    secure = backends[f"{NS}/secure:8443"]["tls"]
    assert secure["policy"] == f"UpstreamTLSPolicy {NS}/secure-tls"
    assert [c["subject"] for c in secure["trusted_cas"]] == ["CN=flomesh.io"]
    assert [c["subject"] for c in secure["client_certificate"]] == ["CN=gateway"]
    bundle = backends[f"{NS}/bundle:9443"]["tls"]
    assert bundle["server_name"] == "bundle.example.com"
    assert [(c["secret"], c["subject"]) for c in bundle["trusted_cas"]] == [
        ("bundle-ca", "CN=other-ca"),
        ("bundle-ca-2", "CN=flomesh.io"),
    ]


def test_no_secret_material_in_the_raw_body(setup: Setup) -> None:
    status, body = setup.gw.admin("/config")
    assert status == 200
    assert leaks(body.decode(), setup.tls) == []


def test_status_prints_workers_listeners_and_the_expiring_certificate(setup: Setup) -> None:
    result = setup.status()
    assert result.returncode == 0, result.stderr
    out = result.stdout
    master = setup.gw.proc.pid if setup.gw.proc is not None else 0
    assert re.search(rf"master pid {master}: serving\ngeneration 1,", out), out
    workers = children_of(master)
    assert len(workers) == 2
    for pid in workers:
        assert re.search(rf"^  [01]\s+{pid}\s+\S+( \S+)?\s+[\d.]+ MiB\s+1\s+yes$", out, re.M), out
    for name, port in setup.tls.ports.items():
        protocol = "HTTP" if name == "http" else "HTTPS"
        assert re.search(rf"^  {port}\s+{protocol}\b.*{GW}/{name}$", out, re.M), out
    expiring = out.split("certificates expiring within 30 days\n", 1)[1].split("\n\n", 1)[0]
    # Only the 10-day leaf; the CAs and the client certificate live far longer.
    assert re.fullmatch(rf"  {NS}/www-cert\s+listener\s+CN=www\.example\.com\s+expires in 9d 23h, \S+Z", expiring), (
        expiring
    )
    assert out.endswith("last reload\n  none since the master started\n"), out


def test_status_shows_a_failed_then_a_successful_reload(setup: Setup) -> None:
    master = setup.gw.proc.pid if setup.gw.proc is not None else 0
    broken = setup.tls.config / "zz-broken.yaml"
    broken.write_text("apiVersion: v1\nkind: Service\nmetadata: {name: bad, namespace: httpbin}\nspec: {ports: nope}\n")
    os.kill(master, signal.SIGHUP)
    wait_for(lambda: "failure" in setup.status().stdout, timeout=20, what="the failed reload in fsmfast status")
    out = setup.status().stdout
    assert re.search(r"last reload\n  failure \S+Z \(\S+( \S+)? ago\), kept generation 1, by signal\n  error: ", out), (
        out
    )
    assert "zz-broken.yaml" in out
    assert setup.config()["generation"] == 1  # the old generation keeps serving

    broken.unlink()
    os.kill(master, signal.SIGHUP)
    wait_for(lambda: _serving(setup, 2), timeout=30, what="both workers serving generation 2")
    out = setup.status().stdout
    assert re.search(r"last reload\n  success \S+Z \(\S+( \S+)? ago\), now serving generation 2, by signal\n$", out), (
        out
    )
    assert "generation 2," in out.splitlines()[1]
    assert setup.config()["generation"] == 2


def test_status_without_a_listener_is_exit_1() -> None:
    port = free_port()
    result = subprocess.run(
        [sys.executable, "-m", "fsmfast", "status", "--admin-address", f"127.0.0.1:{port}"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 1
    assert result.stderr == f"fsmfast status: cannot reach the admin listener at 127.0.0.1:{port}: Connection refused\n"
