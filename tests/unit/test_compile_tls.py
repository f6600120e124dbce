"""Upstream TLS in the snapshot: UpstreamTLSPolicy (FSM) and BackendTLSPolicy (Gateway API)."""

from __future__ import annotations

import base64
import datetime
import textwrap
from pathlib import Path
from typing import Literal

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from fsmfast import snapshot as s
from fsmfast.compile import Build, build
from fsmfast.errors import ConfigError


class Pem:
    """A CA, and a client certificate it signed, as PEM text."""

    def __init__(self) -> None:
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "flomesh.io")])
        self.ca = self._cert(ca_name, ca_name, ca_key, ca_key.public_key(), ca=True)
        client_key = ec.generate_private_key(ec.SECP256R1())
        client_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "gateway")])
        self.client_cert = self._cert(client_name, ca_name, ca_key, client_key.public_key(), ca=False)
        self.client_key = self._key(client_key)
        self.other_key = self._key(ec.generate_private_key(ec.SECP256R1()))

    @staticmethod
    def _key(key: ec.EllipticCurvePrivateKey) -> str:
        return key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode()

    @staticmethod
    def _cert(subject: x509.Name, issuer: x509.Name, key: ec.EllipticCurvePrivateKey, public: object, ca: bool) -> str:
        now = datetime.datetime.now(datetime.timezone.utc)
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer)
            .public_key(public)  # type: ignore[arg-type]
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
            .sign(key, hashes.SHA256())
        )
        return cert.public_bytes(serialization.Encoding.PEM).decode()


@pytest.fixture(scope="module")
def pem() -> Pem:
    return Pem()


@pytest.fixture
def cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


BASE = """\
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: httpbin}
spec:
  gatewayClassName: any
  listeners: [{name: http, port: 8000, protocol: HTTP}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r, namespace: httpbin}
spec:
  parentRefs: [{name: gw}]
  rules:
  - backendRefs: [{name: httpbin, port: 8443}, {name: httpbin, port: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: httpbin, namespace: httpbin}
spec:
  ports: [{name: https, port: 8443, targetPort: 443}, {name: http, port: 8080}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: httpbin-1, namespace: httpbin, labels: {kubernetes.io/service-name: httpbin}}
endpoints: [{addresses: [127.0.0.1]}]
ports: [{name: https, port: 9443}, {name: http, port: 9080}]
"""


def secret(name: str, **data: str) -> str:
    lines = "".join(f"  {key}: {b64(value)}\n" for key, value in data.items())
    return f"apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: httpbin}}\ndata:\n{lines}"


def config_map(name: str, ca: str) -> str:
    body = textwrap.indent(ca, "    ")
    return (
        f"apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {name}, namespace: httpbin}}\ndata:\n  ca.crt: |\n{body}"
    )


def upstream_policy(name: str = "p", spec: str = "", created: str | None = None) -> str:
    meta = f"name: {name}, namespace: httpbin" + (f", creationTimestamp: '{created}'" if created else "")
    spec = spec or "ports: [{port: 8443, config: {certificateRef: {name: https-cert}}}]"
    body = textwrap.indent(textwrap.dedent(spec), "  ")
    return (
        f"apiVersion: gateway.flomesh.io/v1alpha1\nkind: UpstreamTLSPolicy\nmetadata: {{{meta}}}\nspec:\n"
        f"  targetRef: {{group: '', kind: Service, name: httpbin, namespace: httpbin}}\n{body}"
    )


def backend_policy(name: str, target: str, validation: str, created: str | None = None) -> str:
    meta = f"name: {name}, namespace: httpbin" + (f", creationTimestamp: '{created}'" if created else "")
    body = textwrap.indent(textwrap.dedent(validation), "    ")
    return (
        f"apiVersion: gateway.networking.k8s.io/v1\nkind: BackendTLSPolicy\nmetadata: {{{meta}}}\nspec:\n"
        f"  targetRefs: [{target}]\n  validation:\n{body}"
    )


def compile_with(*docs: str) -> Build:
    Path("all.yaml").write_text(BASE + "".join("---\n" + (d if d.endswith("\n") else d + "\n") for d in docs))
    return build("all.yaml")


def errors_with(*docs: str) -> list[str]:
    with pytest.raises(ConfigError) as exc:
        compile_with(*docs)
    return [str(i) for i in exc.value.issues]


def sources(*parts: tuple[str, str], kind: Literal["Secret", "ConfigMap"] = "Secret") -> tuple[s.PemSource, ...]:
    """The PemSources of a bundle joined from (namespace/name, text) parts, in order."""
    out, end = [], 0
    for name, text in parts:
        end += len(text)
        out.append(s.PemSource(name=name, end=end, kind=kind))
    return tuple(out)


def tls_of(result: Build, port: int = 8443) -> s.UpstreamTLS | None:
    return result.snapshot.backends[f"httpbin/httpbin:{port}"].tls


# --- UpstreamTLSPolicy ----------------------------------------------------------------------


def test_upstream_policy_applies_to_its_port_only(cwd: Path, pem: Pem) -> None:
    result = compile_with(secret("https-cert", **{"ca.crt": pem.ca}), upstream_policy())
    assert tls_of(result) == s.UpstreamTLS(
        policy="UpstreamTLSPolicy httpbin/p", ca_pem=pem.ca, ca_sources=sources(("httpbin/https-cert", pem.ca))
    )
    assert tls_of(result, 8080) is None
    assert result.warnings == []


def test_upstream_policy_default_config_is_merged(cwd: Path, pem: Pem) -> None:
    spec = """\
    config: {certificateRef: {name: client, namespace: httpbin}, mTLS: true}
    ports:
    - port: 8443
    - port: 8080
      config: {mTLS: false}
    """
    both = {"ca.crt": pem.ca, "tls.crt": pem.client_cert, "tls.key": pem.client_key}
    result = compile_with(secret("client", **both), upstream_policy(spec=spec))
    assert tls_of(result) == s.UpstreamTLS(
        policy="UpstreamTLSPolicy httpbin/p",
        ca_pem=pem.ca,
        client_cert_pem=pem.client_cert,
        client_key_pem=pem.client_key,
        ca_sources=sources(("httpbin/client", pem.ca)),
        client_cert_secret="httpbin/client",
    )
    assert tls_of(result, 8080) == s.UpstreamTLS(
        policy="UpstreamTLSPolicy httpbin/p", ca_pem=pem.ca, ca_sources=sources(("httpbin/client", pem.ca))
    )


def test_upstream_policy_missing_secret_never_falls_back_to_plaintext(cwd: Path, pem: Pem) -> None:
    spec = """\
    ports:
    - {port: 8443, config: {certificateRef: {name: https-cert}}}
    - {port: 8080, config: {certificateRef: {name: no-ca}, mTLS: true}}
    - {port: 9999, config: {certificateRef: {name: no-ca}}}
    """
    result = compile_with(secret("no-ca", **{"ca.crt": pem.ca, "tls.crt": pem.client_cert}), upstream_policy(spec=spec))
    assert tls_of(result) == s.UpstreamTLS(
        policy="UpstreamTLSPolicy httpbin/p", error="secret httpbin/https-cert not found"
    )
    assert tls_of(result, 8080) == s.UpstreamTLS(
        policy="UpstreamTLSPolicy httpbin/p", error="secret httpbin/no-ca has no key tls.key"
    )
    fails = "connections using this policy fail with 502 until it is fixed (no plaintext fallback)"
    assert result.warnings == [
        f"all.yaml#6 UpstreamTLSPolicy httpbin/p: spec.ports[0].config.certificateRef: secret httpbin/https-cert"
        f" not found; {fails}",
        f"all.yaml#6 UpstreamTLSPolicy httpbin/p: spec.ports[1].config.certificateRef: secret httpbin/no-ca has no"
        f" key tls.key; {fails}",
        "all.yaml#6 UpstreamTLSPolicy httpbin/p: spec.ports[2].port: service httpbin/httpbin has no port 9999",
    ]


def test_secret_without_ca(cwd: Path, pem: Pem) -> None:
    result = compile_with(secret("https-cert", **{"tls.crt": pem.client_cert}), upstream_policy())
    assert tls_of(result) == s.UpstreamTLS(
        policy="UpstreamTLSPolicy httpbin/p", error="secret httpbin/https-cert has no key ca.crt"
    )


def test_oldest_upstream_policy_wins(cwd: Path, pem: Pem) -> None:
    result = compile_with(
        secret("https-cert", **{"ca.crt": pem.ca}),
        upstream_policy("newer", created="2024-02-01T00:00:00Z"),
        upstream_policy("older", created="2024-01-01T00:00:00Z"),
    )
    assert tls_of(result) == s.UpstreamTLS(
        policy="UpstreamTLSPolicy httpbin/older", ca_pem=pem.ca, ca_sources=sources(("httpbin/https-cert", pem.ca))
    )
    assert result.warnings == [
        "all.yaml#6 UpstreamTLSPolicy httpbin/newer: spec.ports[0]: conflicts with UpstreamTLSPolicy httpbin/older"
        " (older) on service httpbin/httpbin port 8443; ignored there"
    ]


def test_upstream_policy_for_a_missing_service(cwd: Path, pem: Pem) -> None:
    policy = upstream_policy().replace("name: httpbin, namespace: httpbin}", "name: nope}")
    result = compile_with(secret("https-cert", **{"ca.crt": pem.ca}), policy)
    assert result.warnings == [
        "all.yaml#6 UpstreamTLSPolicy httpbin/p: spec.targetRef: service httpbin/nope not found; policy has no effect"
    ]


def test_bad_pem_is_an_error(cwd: Path, pem: Pem) -> None:
    broken = pem.ca.replace(pem.ca.splitlines()[2], "AAAA" * 16)
    assert errors_with(
        secret("https-cert", **{"ca.crt": "hello"}),
        secret("broken", **{"ca.crt": broken}),
        upstream_policy(),
        upstream_policy("p2", "ports: [{port: 8080, config: {certificateRef: {name: broken}}}]"),
    ) == [
        "all.yaml#5 Secret httpbin/https-cert: data.ca.crt: is not a PEM certificate"
        " (no -----BEGIN CERTIFICATE----- line)",
        "all.yaml#6 Secret httpbin/broken: data.ca.crt: does not parse as PEM certificates",
    ]


def test_client_certificate_and_key_must_match(cwd: Path, pem: Pem) -> None:
    data = {"ca.crt": pem.ca, "tls.crt": pem.client_cert, "tls.key": pem.other_key}
    assert errors_with(
        secret("https-cert", **data),
        upstream_policy(spec="ports: [{port: 8443, config: {certificateRef: {name: https-cert}, mTLS: true}}]"),
    ) == [
        "all.yaml#5 Secret httpbin/https-cert: data.tls.crt: tls.crt and tls.key do not load as a certificate"
        " and its private key"
    ]


# --- BackendTLSPolicy -----------------------------------------------------------------------


def test_backend_policy_with_config_map_and_sans(cwd: Path, pem: Pem) -> None:
    result = compile_with(
        config_map("ca", pem.ca),
        backend_policy(
            "b",
            "{group: '', kind: Service, name: httpbin, sectionName: https}",
            """\
            caCertificateRefs: [{group: '', kind: ConfigMap, name: ca}]
            hostname: HTTPBIN.example.com
            subjectAltNames:
            - {type: Hostname, hostname: alt.example.com}
            - {type: URI, uri: "spiffe://td/ns/httpbin/sa/httpbin"}
            """,
        ),
    )
    assert tls_of(result) == s.UpstreamTLS(
        policy="BackendTLSPolicy httpbin/b",
        ca_pem=pem.ca,
        server_name="httpbin.example.com",
        subject_alt_names=(
            s.SubjectAltName(type="Hostname", value="alt.example.com"),
            s.SubjectAltName(type="URI", value="spiffe://td/ns/httpbin/sa/httpbin"),
        ),
        ca_sources=sources(("httpbin/ca", pem.ca), kind="ConfigMap"),
    )
    assert tls_of(result, 8080) is None  # sectionName https = the port named https only


def test_backend_policy_system_ca_and_missing_ca(cwd: Path) -> None:
    result = compile_with(
        backend_policy(
            "system",
            "{group: '', kind: Service, name: httpbin, sectionName: https}",
            "wellKnownCACertificates: System\nhostname: a.example.com",
        ),
        backend_policy(
            "missing",
            "{group: '', kind: Service, name: httpbin, sectionName: http}",
            "caCertificateRefs: [{group: '', kind: Secret, name: nope}]\nhostname: b.example.com",
        ),
    )
    assert tls_of(result) == s.UpstreamTLS(
        policy="BackendTLSPolicy httpbin/system", system_ca=True, server_name="a.example.com"
    )
    assert tls_of(result, 8080) == s.UpstreamTLS(
        policy="BackendTLSPolicy httpbin/missing", server_name="b.example.com", error="secret httpbin/nope not found"
    )
    assert result.warnings == [
        "all.yaml#6 BackendTLSPolicy httpbin/missing: spec.validation.caCertificateRefs[0]: secret httpbin/nope not"
        " found; connections using this policy fail with 502 until it is fixed (no plaintext fallback)"
    ]


def test_section_name_beats_whole_service_and_oldest_wins(cwd: Path, pem: Pem) -> None:
    validation = "wellKnownCACertificates: System\nhostname: %s.example.com"
    result = compile_with(
        backend_policy(
            "whole", "{group: '', kind: Service, name: httpbin}", validation % "whole", "2024-01-01T00:00:00Z"
        ),
        backend_policy(
            "port-new",
            "{group: '', kind: Service, name: httpbin, sectionName: https}",
            validation % "new",
            "2024-03-01T00:00:00Z",
        ),
        backend_policy(
            "port-old",
            "{group: '', kind: Service, name: httpbin, sectionName: https}",
            validation % "old",
            "2024-02-01T00:00:00Z",
        ),
        backend_policy("typo", "{group: '', kind: Service, name: httpbin, sectionName: htps}", validation % "typo"),
    )
    # the whole-service policy does not conflict with the port one: it serves the other port
    assert tls_of(result).server_name == "old.example.com"  # type: ignore[union-attr]
    assert tls_of(result, 8080).server_name == "whole.example.com"  # type: ignore[union-attr]
    assert result.warnings == [
        "all.yaml#6 BackendTLSPolicy httpbin/port-new: spec.targetRefs[0]: conflicts with BackendTLSPolicy"
        ' httpbin/port-old (older) on service httpbin/httpbin port "https"; ignored there',
        "all.yaml#8 BackendTLSPolicy httpbin/typo: spec.targetRefs[0].sectionName: service httpbin/httpbin has no"
        ' port named "htps"',
    ]


def test_backend_policy_overrides_upstream_policy(cwd: Path, pem: Pem) -> None:
    result = compile_with(
        secret("https-cert", **{"ca.crt": pem.ca}),
        upstream_policy(),
        backend_policy(
            "b", "{group: '', kind: Service, name: httpbin}", "wellKnownCACertificates: System\nhostname: h.example.com"
        ),
    )
    assert tls_of(result).policy == "BackendTLSPolicy httpbin/b"  # type: ignore[union-attr]
    assert result.warnings == [
        "all.yaml#6 UpstreamTLSPolicy httpbin/p: spec.ports[0]: overridden by BackendTLSPolicy httpbin/b for"
        " service httpbin/httpbin port 8443"
    ]


def test_bad_config_map_pem_is_an_error(cwd: Path) -> None:
    assert errors_with(
        config_map("ca", "not a certificate\n"),
        backend_policy(
            "b",
            "{group: '', kind: Service, name: httpbin}",
            "caCertificateRefs: [{kind: ConfigMap, name: ca}]\nhostname: h.example.com",
        ),
    ) == [
        "all.yaml#5 ConfigMap httpbin/ca: data.ca.crt: is not a PEM certificate (no -----BEGIN CERTIFICATE----- line)"
    ]
