"""fsmfast.admin.dump: the /config document (certificates, routes in the router's order, backends,
policies) and that no key, PEM or Secret data reaches it in any form."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import msgspec
import orjson
import pytest
from cryptography import x509

from fsmfast import snapshot as s
from fsmfast.admin.dump import config_json
from fsmfast.compile import build
from fsmfast.proxy.router import HostTable, Router, VHost
from fsmfast.tls.certs import rfc3339
from tests.support.tls_config import NS, TlsConfig, leaks, write_tls_config

GW = f"{NS}/simple-fsm-gateway"
PORTS = {"http": 8000, "https": 8443, "https2": 9443}
GOLDEN = Path(__file__).resolve().parent.parent / "golden"
Dump = dict[str, Any]


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> TlsConfig:
    return write_tls_config(tmp_path_factory.mktemp("dump"), PORTS, 9000)


@pytest.fixture(scope="module")
def snapshot(config: TlsConfig) -> s.Snapshot:
    return build(str(config.config)).snapshot


@pytest.fixture(scope="module")
def dump(snapshot: s.Snapshot) -> Dump:
    return config_json(snapshot)


def _listener(dump: Dump, port: int) -> Dump:
    return next(li for li in dump["listeners"] if li["port"] == port)


def _backend(dump: Dump, name: str) -> Dump:
    return next(b for b in dump["backends"] if b["name"] == name)


def test_no_key_pem_or_secret_data_in_any_form(config: TlsConfig, snapshot: s.Snapshot, dump: Dump) -> None:
    # The snapshot does hold all of it (listener key, upstream client key, the CAs): the dump must drop it.
    raw = msgspec.json.encode(snapshot).decode()
    for pem in config.keys[1:3] + config.certs:  # the CA keys never enter the configuration
        assert pem.strip().replace("\n", "\\n") in raw
    # No PEM marker, no field named like key material, no piece of a key or certificate in any encoding.
    assert leaks(orjson.dumps(dump).decode(), config) == []
    assert leaks(json.dumps(dump, indent=2), config) == []


def test_listener_certificates_subject_sans_and_not_after(config: TlsConfig, dump: Dump) -> None:
    ref = x509.load_pem_x509_certificate(config.www.server_cert.read_bytes())
    https = _listener(dump, PORTS["https"])
    assert (https["protocol"], https["tls_mode"], https["names"]) == ("HTTPS", "Terminate", [f"{GW}/https"])
    [spec] = https["tls"]
    [cert] = spec["certificates"]
    assert cert["secret"] == f"{NS}/www-cert"
    assert cert["sni_names"] == ["www.example.com"]
    leaf, ca = cert["chain"]
    assert leaf["subject"] == "CN=www.example.com" and leaf["issuer"] == "CN=flomesh.io"
    assert leaf["sans"] == ["DNS:www.example.com", "IP Address:127.0.0.1"]
    assert leaf["not_after_epoch"] == ref.not_valid_after_utc.timestamp()
    assert leaf["not_after"] == ref.not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert (ca["position"], ca["subject"]) == (1, "CN=flomesh.io")
    # mTLS on this port only, trusting the Secret's ca.crt.
    client = https["client_certificates"]
    assert client["required"] is True
    assert [(c["secret"], c["subject"]) for c in client["trusted_cas"]] == [("www-cert", "CN=flomesh.io")]
    assert _listener(dump, PORTS["https2"])["client_certificates"] is None
    assert _listener(dump, PORTS["http"])["tls"] == []


def test_routes_in_precedence_order_with_the_words_of_fsmfast_routes(dump: Dump) -> None:
    for port in PORTS.values():
        [vhost] = _listener(dump, port)["virtual_hosts"]
        assert vhost["hostname"] == "*"
        rows = [(r["precedence"], r["text"]["path"], r["text"]["backends"]) for r in vhost["routes"]]
        assert rows == [
            (1, "Exact /healthz", f"{NS}/plain:80"),
            (2, "Prefix /api", f"{NS}/secure:8443"),
            (3, "Prefix /", f"{NS}/bundle:9443"),
        ]


def test_backends_with_endpoints_and_upstream_tls_without_pem(dump: Dump) -> None:
    assert [b["name"] for b in dump["backends"]] == [f"{NS}/bundle:9443", f"{NS}/plain:80", f"{NS}/secure:8443"]
    plain = _backend(dump, f"{NS}/plain:80")
    assert plain == {"name": f"{NS}/plain:80", "endpoints": ["127.0.0.1:9000"], "tls": None, "policies": []}
    secure = _backend(dump, f"{NS}/secure:8443")["tls"]
    assert secure["policy"] == f"UpstreamTLSPolicy {NS}/secure-tls"
    assert secure["server_name"] is None and secure["error"] is None
    assert [(c["secret"], c["subject"]) for c in secure["trusted_cas"]] == [("upstream-client", "CN=flomesh.io")]
    assert [(c["secret"], c["subject"]) for c in secure["client_certificate"]] == [("upstream-client", "CN=gateway")]
    bundle = _backend(dump, f"{NS}/bundle:9443")["tls"]
    assert bundle["server_name"] == "bundle.example.com"
    assert bundle["client_certificate"] is None
    cas = [(c["kind"], c["secret"], c["subject"]) for c in bundle["trusted_cas"]]
    assert cas == [("ConfigMap", "bundle-ca", "CN=other-ca"), ("Secret", "bundle-ca-2", "CN=flomesh.io")]
    assert dump["policies"] == [
        {
            "kind": "BackendTLSPolicy",
            "name": f"{NS}/httpbin-backend-tls",
            "backends": [{"backend": f"{NS}/bundle:9443", "error": None}],
        },
        {
            "kind": "UpstreamTLSPolicy",
            "name": f"{NS}/secure-tls",
            "backends": [{"backend": f"{NS}/secure:8443", "error": None}],
        },
    ]


def test_flat_certificate_list_and_generation(snapshot: s.Snapshot, dump: Dump) -> None:
    assert dump["generation"] == snapshot.generation and dump["schema"] == s.SCHEMA
    usages = [(c["secret"], c["usage"], c["position"]) for c in dump["certificates"]]
    assert usages == [
        ("www-cert", "listener", 0),
        ("www-cert", "listener", 1),
        ("www-cert", "client-ca", 0),
        ("bundle-ca", "upstream-ca", 0),
        ("bundle-ca-2", "upstream-ca", 0),
        ("upstream-client", "upstream-ca", 0),
        ("upstream-client", "upstream-client", 0),
    ]
    assert json.loads(json.dumps(dump)) == json.loads(orjson.dumps(dump))  # plain JSON types only


def test_rfc3339() -> None:
    assert rfc3339(0) == "1970-01-01T00:00:00Z"
    assert rfc3339(1797330140.0) == "2026-12-15T10:22:20Z"


def _vhost(table: HostTable, hostname: str) -> VHost | None:
    if hostname == "*":
        return table.any
    if hostname.startswith("*."):
        return table.wildcard.get(hostname[1:].encode())
    return table.exact.get(hostname.encode())


@pytest.mark.parametrize("case", ["routing", "multi-route"])
def test_route_order_is_the_order_the_router_tries(case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shutil.copytree(GOLDEN / case / "in", tmp_path / "in")
    monkeypatch.chdir(tmp_path)
    snap = build("in").snapshot
    router = Router(snap)
    dumped = config_json(snap)
    compared = 0
    for listener in dumped["listeners"]:
        for vh in listener["virtual_hosts"]:
            built = _vhost(router.tables[listener["port"]], vh["hostname"])
            assert built is not None
            assert [r["name"] for r in vh["routes"]] == [rule.name for rule in built.rules]
            compared += len(built.rules)
    assert compared > 5
