"""fsmfast.tls.inventory: every certificate of a compiled snapshot, named by the object it came from."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import msgspec
import pytest
from cryptography import x509

from fsmfast import snapshot as s
from fsmfast.compile import build
from fsmfast.tls import inventory
from fsmfast.tls.inventory import CertInfo, certificates, earliest
from tests.support.tls_config import NS, TlsConfig, write_tls_config

GW = f"{NS}/simple-fsm-gateway"


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> TlsConfig:
    return write_tls_config(tmp_path_factory.mktemp("inventory"), {"http": 8000, "https": 8443, "https2": 9443}, 9000)


@pytest.fixture(scope="module")
def snapshot(config: TlsConfig) -> s.Snapshot:
    return build(str(config.config)).snapshot


def test_every_certificate_with_its_object_usage_and_users(snapshot: s.Snapshot) -> None:
    rows = [(c.namespace, c.secret, c.kind, c.usage, c.position, c.subject, c.used_by) for c in certificates(snapshot)]
    both = (f"{GW}/https", f"{GW}/https2")
    assert rows == [
        # The chain in tls.crt: leaf first, then the CA; one entry for the two listeners serving it.
        (NS, "www-cert", "Secret", "listener", 0, "CN=www.example.com", both),
        (NS, "www-cert", "Secret", "listener", 1, "CN=flomesh.io", both),
        # GatewayTLSPolicy mTLS trusts the ca.crt of the port's certificate Secret: port https only.
        (NS, "www-cert", "Secret", "client-ca", 0, "CN=flomesh.io", (f"{GW}/https",)),
        # BackendTLSPolicy: a bundle of a ConfigMap's CA and a Secret's, each named (backends by name).
        (NS, "bundle-ca", "ConfigMap", "upstream-ca", 0, "CN=other-ca", (f"{NS}/bundle:9443",)),
        (NS, "bundle-ca-2", "Secret", "upstream-ca", 0, "CN=flomesh.io", (f"{NS}/bundle:9443",)),
        (NS, "upstream-client", "Secret", "upstream-ca", 0, "CN=flomesh.io", (f"{NS}/secure:8443",)),
        (NS, "upstream-client", "Secret", "upstream-client", 0, "CN=gateway", (f"{NS}/secure:8443",)),
    ]


def _by(snapshot: s.Snapshot, secret: str, usage: str, position: int = 0) -> CertInfo:
    return next(c for c in certificates(snapshot) if (c.secret, c.usage, c.position) == (secret, usage, position))


@pytest.mark.parametrize(
    ("secret", "usage", "path"),
    [
        ("www-cert", "listener", "www"),
        ("upstream-client", "upstream-client", "client"),
        ("bundle-ca", "upstream-ca", "other"),
    ],
)
def test_fields_agree_with_an_independent_parser(
    config: TlsConfig, snapshot: s.Snapshot, secret: str, usage: str, path: str
) -> None:
    file = {"www": config.www.server_cert, "client": config.client[0], "other": config.other.ca_cert}[path]
    ref = x509.load_pem_x509_certificate(file.read_bytes())
    info = _by(snapshot, secret, usage)
    assert info.not_after == ref.not_valid_after_utc.timestamp()
    assert info.not_before == ref.not_valid_before_utc.timestamp()
    assert int(info.serial, 16) == ref.serial_number
    assert info.subject == ref.subject.rfc4514_string()
    assert info.issuer == ref.issuer.rfc4514_string()


def test_sans_and_a_short_validity(snapshot: s.Snapshot) -> None:
    www = _by(snapshot, "www-cert", "listener")
    assert www.sans == ("DNS:www.example.com", "IP Address:127.0.0.1")
    assert 9.9 * 86400 < www.not_after - time.time() < 10.1 * 86400


def test_earliest_is_one_value_per_metric_series(snapshot: s.Snapshot) -> None:
    certs = certificates(snapshot)
    soonest = earliest(certs)
    # The chain's leaf expires before its CA; one series per (namespace, secret, usage).
    assert soonest[(NS, "www-cert", "listener")] == _by(snapshot, "www-cert", "listener").not_after
    assert _by(snapshot, "www-cert", "listener", 1).not_after > soonest[(NS, "www-cert", "listener")]
    assert len(soonest) == len({(c.namespace, c.secret, c.usage) for c in certs}) == 6


def test_a_reload_parses_only_what_changed(
    config: TlsConfig, snapshot: s.Snapshot, monkeypatch: pytest.MonkeyPatch
) -> None:
    parsed: list[list[str]] = []
    real = inventory.decode_blocks

    def counting(blocks: list[str]) -> list[Any]:
        parsed.append(blocks)
        return real(blocks)

    certificates(snapshot)
    monkeypatch.setattr(inventory, "decode_blocks", counting)
    first = certificates(snapshot)
    assert parsed == []
    # Another generation where only one listener's certificate changed.
    new_pem = config.other.server_cert.read_text()
    listener = snapshot.listeners[1]
    cert = listener.tls[0].certificates[0]
    other = msgspec.structs.replace(cert, cert_pem=new_pem)
    tls = (msgspec.structs.replace(listener.tls[0], certificates=(other,)),)
    listeners = (snapshot.listeners[0], msgspec.structs.replace(listener, tls=tls), *snapshot.listeners[2:])
    changed = msgspec.structs.replace(snapshot, generation=2, listeners=listeners)
    second = certificates(changed)
    assert parsed == [[new_pem]]  # only the new text was parsed
    assert second != first
    # The two listeners now serve different certificates of "one" Secret: both are listed, each with its user.
    leaves = [(c.subject, c.used_by) for c in second if (c.secret, c.usage, c.position) == ("www-cert", "listener", 0)]
    assert leaves == [("CN=foo.example.com", (f"{GW}/https",)), ("CN=www.example.com", (f"{GW}/https2",))]
    assert len(second) == len(first) + 1


def test_a_bundle_whose_sources_are_unknown_is_still_listed(config: TlsConfig) -> None:
    """A snapshot made without PemSource (by hand, in a test): certificates unnamed, not dropped."""
    bundle = config.pki.ca_cert.read_text() + config.other.ca_cert.read_text()
    snap = s.Snapshot(
        schema=s.SCHEMA,
        generation=1,
        listeners=(),
        backends={"ns/b:1": s.Backend("ns/b:1", (), s.UpstreamTLS(policy="p", ca_pem=bundle))},
    )
    rows = [(c.namespace, c.secret, c.usage, c.position, c.subject) for c in certificates(snap)]
    assert rows == [("", "", "upstream-ca", 0, "CN=flomesh.io"), ("", "", "upstream-ca", 1, "CN=other-ca")]


def test_a_block_that_does_not_parse_is_left_out(config: TlsConfig) -> None:
    broken = "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n"
    good = config.other.ca_cert.read_text()
    source = (s.PemSource(name="ns/ca", end=len(broken + good)),)
    tls = s.UpstreamTLS(policy="p", ca_pem=broken + good, ca_sources=source)
    snap = s.Snapshot(schema=s.SCHEMA, generation=1, listeners=(), backends={"ns/b:1": s.Backend("ns/b:1", (), tls)})
    assert [(c.secret, c.position, c.subject) for c in certificates(snap)] == [("ca", 1, "CN=other-ca")]


def test_an_empty_snapshot_has_no_certificates(tmp_path: Path) -> None:
    assert certificates(s.Snapshot(schema=s.SCHEMA, generation=1, listeners=(), backends={})) == []
