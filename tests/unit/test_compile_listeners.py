"""Listener TLS and L4 routes in the snapshot: HTTPS/TLS/TCP listeners, certificates and their checks,
client mTLS (GatewayTLSPolicy and frontendValidation), TLSRoute and TCPRoute attachment."""

from __future__ import annotations

import base64
import datetime
import textwrap
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec
from cryptography.x509.oid import NameOID

from fsmfast import snapshot as s
from fsmfast.compile import Build, build
from fsmfast.errors import ConfigError
from fsmfast.tls.certs import as_text, inspect, rdn_string
from fsmfast.tls.listener import CertificateLoadError, Contexts
from tests.support.pki import Pki, san_pki

NOW = datetime.datetime.now(datetime.timezone.utc)
CA_KEY = ec.generate_private_key(ec.SECP256R1())
CA_NAME = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test-ca")])


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def make_cert(cn: str, sans: tuple[str, ...] = (), days: float = 90, ca: bool = False) -> tuple[bytes, bytes]:
    key = CA_KEY if ca else ec.generate_private_key(ec.SECP256R1())
    subject = CA_NAME if ca else x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(CA_NAME)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - datetime.timedelta(days=400))
        .not_valid_after(NOW + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in sans]), critical=False)
    cert = builder.sign(CA_KEY, hashes.SHA256())
    return cert.public_bytes(serialization.Encoding.PEM), _pem_key(key)


FOO = make_cert("foo.example.com")
WILD = make_cert("wild", ("*.wild.example.com", "wild.example.com"))
CA_PEM = make_cert("", ca=True)[0]


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def secret(name: str, pair: tuple[bytes, bytes], ns: str = "ns", ca: bytes | None = None, **extra: str) -> str:
    data = {"tls.crt": b64(pair[0]), "tls.key": b64(pair[1])}
    if ca is not None:
        data["ca.crt"] = b64(ca)
    data.update(extra)
    body = "".join(f"\n  {k}: {v}" for k, v in data.items())
    meta = f"metadata: {{name: {name}, namespace: {ns}}}"
    return f"apiVersion: v1\nkind: Secret\n{meta}\ntype: kubernetes.io/tls\ndata:{body}\n"


def gateway(listeners: str, name: str = "gw", ns: str = "ns", annotations: str = "") -> str:
    body = textwrap.indent(textwrap.dedent(listeners), "  ")
    meta = f"name: {name}, namespace: {ns}" + (f", annotations: {{{annotations}}}" if annotations else "")
    return (
        f"apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{{meta}}}\n"
        f"spec:\n gatewayClassName: any\n listeners:\n{body}\n"
    )


def obj(kind: str, name: str, spec: str, ns: str = "ns", api: str = "gateway.networking.k8s.io/v1alpha2") -> str:
    body = textwrap.indent(textwrap.dedent(spec), "  ")
    return f"apiVersion: {api}\nkind: {kind}\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n{body}"


def service(name: str = "svc", port: int = 80, ns: str = "ns") -> str:
    return (
        f"apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: {ns}}}\n"
        f"spec: {{ports: [{{port: {port}}}]}}\n"
        "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n"
        f"metadata: {{name: {name}-1, namespace: {ns}, labels: {{kubernetes.io/service-name: {name}}}}}\n"
        f"addressType: IPv4\nendpoints: [{{addresses: [10.0.0.1]}}]\nports: [{{name: '', port: {port}}}]\n"
    )


@pytest.fixture(autouse=True)
def cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


def compile_docs(*docs: str) -> Build:
    Path("all.yaml").write_text("".join("---\n" + (d if d.endswith("\n") else d + "\n") for d in docs))
    return build("all.yaml")


def listener(result: Build, port: int) -> s.Listener:
    return next(li for li in result.snapshot.listeners if li.port == port)


HTTPS = """\
- name: https
  port: 8443
  protocol: HTTPS
  tls: {certificateRefs: [{name: foo}, {name: wild}]}
"""
ROUTE = obj(
    "HTTPRoute",
    "r",
    "parentRefs: [{name: gw}]\nrules: [{backendRefs: [{name: svc, port: 80}]}]",
    api="gateway.networking.k8s.io/v1",
)


# --- certificate inspection -------------------------------------------------------------------


def test_inspect_reads_names_and_expiry_and_checks_the_key() -> None:
    found = inspect(*WILD)
    assert found.problem is None and found.info is not None
    assert found.info.names == ("*.wild.example.com", "wild.example.com", "wild")  # SANs, then the CN
    assert found.info.subject == "CN=wild"
    assert found.info.not_after > NOW.timestamp()
    assert inspect(FOO[0], WILD[1]).message == "tls.key does not match the certificate in tls.crt"
    assert inspect(b"nope", FOO[1]).message.startswith("tls.crt is not a PEM certificate")
    assert inspect(FOO[0], b"garbage").message == (
        "tls.key is not a PEM private key (no -----BEGIN ... PRIVATE KEY----- line)"
    )


# What a worker cannot load, each way a Secret can hold it, on the blog's RSA certificate (tests/support/pki.py).
UNUSABLE = {
    "another certificate's key": (
        "other_key",
        "data.tls.key does not match the certificate in tls.crt",
    ),
    "an EC key": (
        "ec_key",
        "data.tls.key is a private key of another type than the certificate's public key in tls.crt",
    ),
    "a DSA key": (
        "dsa_key",
        "data.tls.key is a private key of another type than the certificate's public key in tls.crt",
    ),
    "a public key": ("public_key", "data.tls.key is not a PEM private key (no -----BEGIN ... PRIVATE KEY----- line)"),
    "a truncated key": ("truncated_key", "data.tls.key is not a usable PEM private key"),
    "an encrypted key": ("encrypted_key", "data.tls.key is an encrypted private key (not supported)"),
    "a garbage certificate": ("garbage_cert", "data.tls.crt does not parse as a PEM certificate"),
    "a chain that does not parse": (
        "bad_chain",
        "data.tls.crt has a chain certificate that does not parse (bad base64 decode)",
    ),
    "a truncated chain": ("truncated_chain", "data.tls.crt has a chain certificate that does not parse (bad end line)"),
}


@pytest.fixture(scope="module")
def rsa(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[bytes, bytes]]:
    """(tls.crt, tls.key) pairs: the blog's good one, and one per UNUSABLE kind."""
    cert, key = pki.server_cert.read_bytes(), pki.server_key.read_bytes()
    other = san_pki(tmp_path_factory.mktemp("other-pki"), pki, "a.example.com")
    dsa_key = dsa.generate_private_key(2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public = serialization.load_pem_private_key(key, None).public_key()
    encrypted = serialization.load_pem_private_key(key, None).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.BestAvailableEncryption(b"pw")
    )
    bad_block = b"-----BEGIN CERTIFICATE-----\nMIIB!!\n-----END CERTIFICATE-----\n"
    return {
        "good": (cert, key),
        "other_key": (cert, other.server_key.read_bytes()),
        "ec_key": (cert, FOO[1]),
        "dsa_key": (cert, dsa_key),
        "public_key": (
            cert,
            public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo),
        ),
        "truncated_key": (cert, key[:300] + key[-30:]),
        "encrypted_key": (cert, encrypted),
        "garbage_cert": (b"-----BEGIN CERTIFICATE-----\ngarbage\n-----END CERTIFICATE-----\n", key),
        "bad_chain": (cert + bad_block, key),
        "truncated_chain": (cert + pki.ca_cert.read_bytes()[:200], key),
    }


@pytest.mark.parametrize("kind", list(UNUSABLE))
def test_an_unusable_certificate_is_an_error_even_beside_a_good_one(
    kind: str, rsa: dict[str, tuple[bytes, bytes]]
) -> None:
    pair_name, message = UNUSABLE[kind]
    pair = rsa[pair_name]
    field, _, problem = message.partition(" ")
    assert inspect(*pair).message == field.removeprefix("data.") + " " + problem
    listeners = "- {name: h, port: 8443, protocol: HTTPS, tls: {certificateRefs: [{name: good}, {name: bad}]}}"
    with pytest.raises(ConfigError) as exc:
        compile_docs(gateway(listeners), secret("good", rsa["good"]), secret("bad", pair), ROUTE, service())
    assert [str(i) for i in exc.value.issues] == [
        f"all.yaml#1 Gateway ns/gw: spec.listeners[0].tls.certificateRefs[1]: secret ns/bad {message}"
    ]
    # The worker loads the pair the same way; were the build's check ever to miss one, the worker refuses
    # the snapshot naming the Secret instead of serving the port without it.
    contexts = Contexts()
    with pytest.raises(CertificateLoadError, match=r"^certificate Secret ns/bad \(tls.crt, tls.key\) does not load: "):
        contexts.certificate(worker_certificate("ns/bad", pair), ("http/1.1",), None)
    assert contexts.certificate(worker_certificate("ns/good", rsa["good"]), ("http/1.1",), None) is not None


def worker_certificate(name: str, pair: tuple[bytes, bytes]) -> s.Certificate:
    return s.Certificate(name=name, cert_pem=as_text(pair[0]), key_pem=as_text(pair[1]), names=())


def test_a_missing_secret_is_skipped_beside_a_good_certificate_and_an_error_alone() -> None:
    result = compile_docs(
        gateway("- {name: a, port: 8443, protocol: HTTPS, tls: {certificateRefs: [{name: missing}, {name: foo}]}}"),
        secret("foo", FOO),
    )
    assert [c.name for c in listener(result, 8443).tls[0].certificates] == ["ns/foo"]
    assert result.warnings == [
        "all.yaml#1 Gateway ns/gw: spec.listeners[0].tls.certificateRefs[0]: secret ns/missing not found;"
        " certificate skipped",
    ]
    with pytest.raises(ConfigError) as exc:
        compile_docs(
            gateway(
                """\
                - {name: a, port: 8443, protocol: HTTPS, hostname: a.example.com, tls: {certificateRefs: [{name: foo}]}}
                - name: b
                  port: 8443
                  protocol: HTTPS
                  hostname: b.example.com
                  tls: {certificateRefs: [{name: missing}, {name: nokey}, {name: nocrt}]}
                """
            ),
            secret("foo", FOO),
            secret("nokey", FOO).replace(f"\n  tls.key: {b64(FOO[1])}", ""),
            secret("nocrt", FOO).replace(f"\n  tls.crt: {b64(FOO[0])}", ""),
        )
    # Listener b would be left with none: each of its references is an error (the port still has a's).
    assert [str(i) for i in exc.value.issues] == [
        "all.yaml#1 Gateway ns/gw: spec.listeners[1].tls.certificateRefs[0]: secret ns/missing not found;"
        " listener ns/gw/b would be left with no certificate",
        "all.yaml#1 Gateway ns/gw: spec.listeners[1].tls.certificateRefs[1]: secret ns/nokey has no key tls.key;"
        " listener ns/gw/b would be left with no certificate",
        "all.yaml#1 Gateway ns/gw: spec.listeners[1].tls.certificateRefs[2]: secret ns/nocrt has no key tls.crt;"
        " listener ns/gw/b would be left with no certificate",
    ]


def test_rdn_string_escapes_and_orders_most_specific_first() -> None:
    name = ((("countryName", "DE"),), (("organizationName", "A, B"),), (("commonName", "x\ny"),))
    assert rdn_string(name) == "CN=x\\0ay,O=A\\, B,C=DE"


# --- HTTPS listeners ----------------------------------------------------------------------------


def test_https_listener_carries_certificates_in_order_and_attaches_httproutes() -> None:
    result = compile_docs(gateway(HTTPS), secret("foo", FOO), secret("wild", WILD), ROUTE, service())
    li = listener(result, 8443)
    assert (li.protocol, li.tls_mode) == ("HTTPS", "Terminate")
    [tls] = li.tls
    assert tls.name == "ns/gw/https" and tls.hostname is None
    assert [c.name for c in tls.certificates] == ["ns/foo", "ns/wild"]
    assert [c.names for c in tls.certificates] == [
        ("foo.example.com",),
        ("*.wild.example.com", "wild.example.com", "wild"),
    ]
    assert li.client_ca_pem is None
    assert [vh.hostname for vh in li.vhosts] == ["*"]
    assert result.warnings == []


def test_one_secret_shared_by_two_listeners_is_reported_for_each_with_its_field() -> None:
    docs = (
        gateway(
            """\
            - {name: a, port: 8443, protocol: HTTPS, hostname: a.example.com,
               tls: {certificateRefs: [{name: missing}, {name: mismatch}, {name: foo}]}}
            - {name: b, port: 9443, protocol: HTTPS, tls: {certificateRefs: [{name: mismatch}]}}
            """
        ),
        secret("foo", FOO),
        secret("mismatch", (FOO[0], WILD[1])),
    )
    with pytest.raises(ConfigError) as exc:
        compile_docs(*docs)
    # The mismatch is an error for each listener using it; the missing Secret beside foo is not an error.
    assert [str(i) for i in exc.value.issues] == [
        "all.yaml#1 Gateway ns/gw: spec.listeners[0].tls.certificateRefs[1]: secret ns/mismatch data.tls.key does"
        " not match the certificate in tls.crt",
        "all.yaml#1 Gateway ns/gw: spec.listeners[1].tls.certificateRefs[0]: secret ns/mismatch data.tls.key does"
        " not match the certificate in tls.crt",
    ]


def test_expired_certificate_is_an_error_and_one_expiring_soon_a_warning() -> None:
    soon = make_cert("soon.example.com", days=10)
    result = compile_docs(
        gateway("- {name: h, port: 8443, protocol: HTTPS, tls: {certificateRefs: [{name: soon}]}}"),
        secret("soon", soon),
    )
    [warning] = result.warnings
    assert warning.startswith("all.yaml#2 Secret ns/soon: data.tls.crt: certificate CN=soon.example.com expires in")
    with pytest.raises(ConfigError) as exc:
        compile_docs(
            gateway("- {name: h, port: 8443, protocol: HTTPS, tls: {certificateRefs: [{name: old}]}}"),
            secret("old", make_cert("old.example.com", days=-1)),
        )
    [error] = [str(i) for i in exc.value.issues]
    assert error.startswith("all.yaml#2 Secret ns/old: data.tls.crt: certificate CN=old.example.com expired at")


def test_cross_namespace_certificate_needs_a_reference_grant() -> None:
    listeners = "- {name: h, port: 8443, protocol: HTTPS, tls: {certificateRefs: [{name: foo, namespace: certs}]}}"
    # Without the grant the listener would have no certificate at all: an error, not a closed port.
    with pytest.raises(ConfigError) as exc:
        compile_docs(gateway(listeners), secret("foo", FOO, ns="certs"))
    assert [str(i) for i in exc.value.issues] == [
        "all.yaml#1 Gateway ns/gw: spec.listeners[0].tls.certificateRefs[0]: reference to secret certs/foo needs a"
        " ReferenceGrant; listener ns/gw/h would be left with no certificate"
    ]
    grant = obj(
        "ReferenceGrant",
        "g",
        "from: [{group: gateway.networking.k8s.io, kind: Gateway, namespace: ns}]\nto: [{group: '', kind: Secret}]",
        ns="certs",
        api="gateway.networking.k8s.io/v1beta1",
    )
    result = compile_docs(gateway(listeners), secret("foo", FOO, ns="certs"), grant)
    assert result.warnings == []
    assert listener(result, 8443).tls[0].certificates[0].name == "certs/foo"


def test_listener_validation_errors() -> None:
    with pytest.raises(ConfigError) as exc:
        compile_docs(
            gateway(
                """\
                - {name: a, port: 1, protocol: HTTPS}
                - {name: b, port: 2, protocol: HTTPS, tls: {mode: Passthrough}}
                - {name: c, port: 3, protocol: TCP, tls: {certificateRefs: [{name: x}]}}
                - {name: d, port: 4, protocol: TLS, tls: {certificateRefs: [{kind: ConfigMap, name: x}]}}
                """
            )
        )
    assert [str(i).split(": ", 1)[1] for i in exc.value.issues] == [
        "spec.listeners[0].tls: required for protocol HTTPS",
        "spec.listeners[1].tls.mode: must be Terminate for protocol HTTPS (use protocol TLS for Passthrough)",
        "spec.listeners[2].tls: must not be set for protocol TCP",
        'spec.listeners[3].tls.certificateRefs[0]: must reference a Secret (group "", kind Secret), got ConfigMap',
    ]


def test_udp_is_out_of_scope_and_one_protocol_per_port() -> None:
    result = compile_docs(
        gateway(
            """\
            - {name: udp, port: 53, protocol: UDP}
            - {name: http, port: 8000, protocol: HTTP}
            - {name: tcp, port: 8000, protocol: TCP}
            """
        )
    )
    assert result.warnings == [
        "all.yaml#1 Gateway ns/gw: spec.listeners[0]: UDP listeners are out of scope for fsmfast; listener ignored",
        "all.yaml#1 Gateway ns/gw: spec.listeners[2]: port 8000 is already served as HTTP by listener ns/gw/http"
        " (one protocol per port); listener ignored",
    ]
    assert [(li.port, li.protocol) for li in result.snapshot.listeners] == [(8000, "HTTP")]


def test_two_https_listeners_with_the_same_hostname_conflict() -> None:
    result = compile_docs(
        gateway(
            """\
            - {name: a, port: 8443, protocol: HTTPS, hostname: x.example.com, tls: {certificateRefs: [{name: foo}]}}
            """
        ),
        gateway(
            "- {name: b, port: 8443, protocol: HTTPS, hostname: x.example.com, tls: {certificateRefs: [{name: foo}]}}",
            name="gw2",
        ),
        secret("foo", FOO),
    )
    assert [t.name for t in listener(result, 8443).tls] == ["ns/gw/a"]
    assert result.warnings == [
        "all.yaml#2 Gateway ns/gw2: spec.listeners[0]: listener ns/gw/a already terminates TLS for hostname"
        " x.example.com; listener ignored"
    ]


# --- client certificates --------------------------------------------------------------------


def test_gateway_tls_policy_requires_client_certificates_on_its_port_trusting_ca_crt() -> None:
    policy = obj(
        "GatewayTLSPolicy",
        "mtls",
        "targetRef: {group: gateway.networking.k8s.io, kind: Gateway, name: gw}\n"
        "ports: [{port: 8443, config: {mTLS: true}}, {port: 9443}]\nconfig: {mTLS: false}",
        api="gateway.flomesh.io/v1alpha1",
    )
    result = compile_docs(
        gateway(
            """\
            - {name: a, port: 8443, protocol: HTTPS, hostname: a.example.com, tls: {certificateRefs: [{name: foo}]}}
            - {name: b, port: 8443, protocol: HTTPS, hostname: b.example.com, tls: {certificateRefs: [{name: wild}]}}
            - {name: c, port: 9443, protocol: HTTPS, tls: {certificateRefs: [{name: wild}]}}
            """,
            annotations="fsmfast.io/client-cert-header: X-Client-Cert-Subject",
        ),
        secret("foo", FOO, ca=CA_PEM),
        secret("wild", WILD),
        policy,
    )
    assert listener(result, 8443).client_ca_pem == CA_PEM.decode()
    # Where the CA came from, for the admin listener and the expiry metric.
    assert listener(result, 8443).client_ca_sources == (s.PemSource(name="ns/foo", end=len(CA_PEM)),)
    assert listener(result, 8443).client_cert_header == "X-Client-Cert-Subject"
    assert listener(result, 9443).client_ca_pem is None
    assert result.warnings == []


def test_frontend_validation_is_per_port_and_told_to_the_other_listeners() -> None:
    configmap = (
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cas, namespace: ns}\ndata:\n  ca.crt: |\n"
        + textwrap.indent(CA_PEM.decode(), "    ")
    )
    result = compile_docs(
        gateway(
            """\
            - name: a
              port: 8443
              protocol: HTTPS
              hostname: a.example.com
              tls:
                certificateRefs: [{name: foo}]
                frontendValidation: {caCertificateRefs: [{kind: ConfigMap, name: cas}]}
            - {name: b, port: 8443, protocol: HTTPS, hostname: b.example.com, tls: {certificateRefs: [{name: foo}]}}
            """
        ),
        secret("foo", FOO),
        configmap,
    )
    assert listener(result, 8443).client_ca_pem == CA_PEM.decode()
    assert listener(result, 8443).client_ca_sources == (s.PemSource(name="ns/cas", end=len(CA_PEM), kind="ConfigMap"),)
    assert result.warnings == [
        "all.yaml#1 Gateway ns/gw: spec.listeners[1]: clients must present a certificate on all of port 8443,"
        " because listener ns/gw/a requires one (client validation is one per port)"
    ]


def test_mtls_without_any_ca_refuses_every_client_and_says_so() -> None:
    policy = obj(
        "GatewayTLSPolicy",
        "mtls",
        "targetRef: {group: gateway.networking.k8s.io, kind: Gateway, name: gw}\nports: [{port: 8443}]\n"
        "config: {mTLS: true}",
        api="gateway.flomesh.io/v1alpha1",
    )
    result = compile_docs(
        gateway("- {name: a, port: 8443, protocol: HTTPS, tls: {certificateRefs: [{name: foo}]}}"),
        secret("foo", FOO),
        policy,
    )
    assert listener(result, 8443).client_ca_pem == ""
    assert "every client is refused" in result.warnings[0]


def test_gateway_tls_policy_on_a_passthrough_port_is_ignored() -> None:
    policy = obj(
        "GatewayTLSPolicy",
        "mtls",
        "targetRef: {group: gateway.networking.k8s.io, kind: Gateway, name: gw}\n"
        "ports: [{port: 8443, config: {mTLS: true}}, {port: 1}]",
        api="gateway.flomesh.io/v1alpha1",
    )
    result = compile_docs(gateway("- {name: p, port: 8443, protocol: TLS, tls: {mode: Passthrough}}"), policy)
    assert result.warnings == [
        "all.yaml#2 GatewayTLSPolicy ns/mtls: spec.ports[0]: port 8443 is TLS Passthrough: mTLS applies only to"
        " HTTPS and TLS Terminate listeners; ignored",
        "all.yaml#2 GatewayTLSPolicy ns/mtls: spec.ports[1].port: gateway ns/gw serves no listener on port 1",
    ]


def test_client_cert_header_annotation_must_be_a_header_name() -> None:
    with pytest.raises(ConfigError, match="is not a valid header name"):
        compile_docs(
            gateway("- {name: h, port: 80, protocol: HTTP}", annotations="fsmfast.io/client-cert-header: 'a b'")
        )


# --- TLSRoute and TCPRoute ------------------------------------------------------------------------

L4_LISTENERS = """\
- {name: pass, port: 8443, protocol: TLS, tls: {mode: Passthrough}}
- {name: pass-a, port: 8443, protocol: TLS, hostname: a.example.com, tls: {mode: Passthrough}}
- {name: tcp, port: 9000, protocol: TCP}
- {name: term, port: 9443, protocol: TLS, tls: {certificateRefs: [{name: foo}]}}
"""


def test_l4_routes_compile_to_sni_tables_and_weighted_backends() -> None:
    result = compile_docs(
        gateway(L4_LISTENERS),
        secret("foo", FOO),
        service("one", 443),
        service("two", 443),
        obj(
            "TLSRoute",
            "wild",
            "parentRefs: [{name: gw, sectionName: pass}]\nhostnames: ['*.example.com']\n"
            "rules: [{backendRefs: [{name: one, port: 443}]}]",
        ),
        obj(
            "TLSRoute",
            "a",
            "parentRefs: [{name: gw, sectionName: pass-a}]\nrules: [{backendRefs: [{name: two, port: 443}]}]",
            api="gateway.networking.k8s.io/v1alpha3",
        ),
        obj(
            "TCPRoute",
            "t",
            "parentRefs: [{name: gw, sectionName: tcp}, {name: gw, sectionName: term}]\n"
            "rules: [{backendRefs: [{name: one, port: 443, weight: 3}, {name: two, port: 443},"
            " {name: gone, port: 1}]}]",
        ),
    )
    passthrough = listener(result, 8443)
    assert (passthrough.protocol, passthrough.tls_mode) == ("TLS", "Passthrough")
    assert [(r.hostname, r.name) for r in passthrough.routes] == [
        ("a.example.com", "tlsroute/ns/a"),
        ("*.example.com", "tlsroute/ns/wild"),
    ]
    tcp = listener(result, 9000)
    [route] = tcp.routes
    assert route.name == "tcproute/ns/t"
    assert [(b.weight, b.backend, b.error) for b in route.backends] == [
        (3, "ns/one:443", None),
        (1, "ns/two:443", None),
        (1, None, "service ns/gone not found"),
    ]
    terminate = listener(result, 9443)
    assert terminate.tls_mode == "Terminate"
    assert terminate.tls[0].route == route
    assert sorted(result.snapshot.backends) == ["ns/one:443", "ns/two:443"]
    assert result.warnings == [
        "all.yaml#9 TCPRoute ns/t: spec.rules[0].backendRefs[2]: service ns/gone not found; connections sent to it"
        " are closed"
    ]


def test_l4_attachment_refusals_and_conflicts() -> None:
    result = compile_docs(
        gateway(L4_LISTENERS),
        secret("foo", FOO),
        service("one", 443),
        obj(
            "TLSRoute", "old", "parentRefs: [{name: gw, port: 8443}]\nrules: [{backendRefs: [{name: one, port: 443}]}]"
        ),
        obj(
            "TLSRoute",
            "wrong",
            "parentRefs: [{name: gw, port: 9000}]\nrules: [{backendRefs: [{name: one, port: 443}]}]",
        ),
        obj("TCPRoute", "t1", "parentRefs: [{name: gw, port: 9000}]\nrules: [{backendRefs: [{name: one, port: 443}]}]"),
        obj("TCPRoute", "t2", "parentRefs: [{name: gw, port: 9000}]\nrules: [{backendRefs: [{name: one, port: 443}]}]"),
    )
    warnings = [w.split(": ", 1)[1] for w in result.warnings]
    assert "spec.parentRefs[0]: not attached: listener ns/gw/tcp (TCP) takes TCPRoutes, not TLSRoutes" in warnings, (
        warnings
    )
    assert "spec.parentRefs[0]: not attached to TCP port 9000: tcproute/ns/t1 (older) already routes it" in warnings
    # "old" attaches to both passthrough listeners: "*" through pass and a.example.com through pass-a.
    assert [r.hostname for r in listener(result, 8443).routes] == ["a.example.com", "*"]


def test_tcproute_rules_beyond_the_first_are_reported() -> None:
    result = compile_docs(
        gateway("- {name: tcp, port: 9000, protocol: TCP}"),
        service("one", 443),
        obj(
            "TCPRoute",
            "t",
            "parentRefs: [{name: gw}]\nrules: [{backendRefs: [{name: one, port: 443}]}, {backendRefs: []}]",
        ),
    )
    assert result.warnings[0].endswith("a TCPRoute has no matches to tell rules apart: only spec.rules[0] is used")
