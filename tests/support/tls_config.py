"""One configuration with every kind of certificate the operations surface reports, shared by the unit tests
of ``fsmfast.tls.inventory`` and ``fsmfast.admin.dump`` and by the admin listener's integration test.

Namespace ``httpbin``, Gateway ``simple-fsm-gateway``:

- listener ``http`` (HTTP) and listener ``https`` (HTTPS, Secret ``www-cert``): ``tls.crt`` is a chain, a
  certificate for www.example.com (+ IP 127.0.0.1) valid ``short_days`` days, then the blog's CA; ``ca.crt``
  is the blog's CA, trusted for client certificates on that port by a GatewayTLSPolicy (mTLS);
- listener ``https2`` on another port serving the same Secret (one certificate, two users);
- HTTPRoute ``web``: Exact ``/healthz`` -> ``plain``, PathPrefix ``/api`` -> ``secure`` (mTLS upstream),
  PathPrefix ``/`` -> ``bundle``; so precedence is /healthz, /api, /;
- Service ``secure`` port 8443 with an UpstreamTLSPolicy (mTLS): Secret ``upstream-client`` holds the blog's
  CA as ``ca.crt`` and a client certificate (CN=gateway) with its key;
- Service ``bundle`` port 9443 with a BackendTLSPolicy trusting a ConfigMap ``bundle-ca`` (another CA) and
  a Secret ``bundle-ca-2`` (the blog's CA).

Certificates are made with openssl (``tests.support.pki``). ``secrets`` holds every PEM text that went into
a Secret or ConfigMap, so a test can look for any of them (or their base64 bodies) in an output.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass, field
from pathlib import Path

from tests.support import manifests as m
from tests.support.pki import Pki, blog_pki, client_cert, other_ca, short_lived

NS = m.NAMESPACE
GATEWAY = m.GATEWAY_NAME
CERT = "www-cert"


@dataclass
class TlsConfig:
    config: Path  # the manifests directory
    pki: Pki  # the blog's CA (and its server certificate, unused)
    www: Pki  # the short-lived listener certificate
    client: tuple[Path, Path]  # the upstream client certificate and key
    other: Pki  # the other CA, trusted by the BackendTLSPolicy
    ports: dict[str, int]
    keys: list[str] = field(default_factory=list)  # every private key's PEM text in the configuration
    certs: list[str] = field(default_factory=list)  # every certificate's PEM text in the configuration


def make_pki(dir: Path, short_days: int = 10) -> tuple[Pki, Pki, tuple[Path, Path], Pki]:
    """(blog CA, short-lived www certificate, upstream client certificate, other CA) in ``dir``."""
    pki = blog_pki(dir)
    www = short_lived(dir, pki, "www.example.com", short_days, sans=("IP:127.0.0.1",))
    return pki, www, client_cert(dir, pki, "gateway"), other_ca(dir)


def _gateway(ports: dict[str, int]) -> str:
    return (
        "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\n"
        f"metadata: {{name: {GATEWAY}, namespace: {NS}}}\n"
        f"spec:\n  gatewayClassName: {m.GATEWAY_CLASS}\n  listeners:\n"
        f"  - {{name: http, port: {ports['http']}, protocol: HTTP}}\n"
        + "".join(
            f"  - {{name: {name}, port: {ports[name]}, protocol: HTTPS, tls: {{certificateRefs: [{{name: {CERT}}}]}}}}"
            + "\n"
            for name in ("https", "https2")
        )
    )


def _mtls_policy(port: int) -> str:
    return (
        "apiVersion: gateway.flomesh.io/v1alpha1\nkind: GatewayTLSPolicy\n"
        f"metadata: {{name: client-auth, namespace: {NS}}}\n"
        f"spec:\n  targetRef: {{group: gateway.networking.k8s.io, kind: Gateway, name: {GATEWAY}, namespace: {NS}}}\n"
        f"  ports: [{{port: {port}, config: {{mTLS: true}}}}]\n"
    )


def _route() -> str:
    return (
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\n"
        f"metadata: {{name: web, namespace: {NS}}}\n"
        f"spec:\n  parentRefs: [{{name: {GATEWAY}}}]\n  rules:\n"
        "  - matches: [{path: {type: PathPrefix, value: /}}]\n    backendRefs: [{name: bundle, port: 9443}]\n"
        "  - matches: [{path: {type: PathPrefix, value: /api}}]\n    backendRefs: [{name: secure, port: 8443}]\n"
        "  - matches: [{path: {type: Exact, value: /healthz}}]\n    backendRefs: [{name: plain, port: 80}]\n"
    )


def write_tls_config(dir: Path, ports: dict[str, int], upstream_port: int, short_days: int = 10) -> TlsConfig:
    """Make the certificates in ``dir/pki`` and write the configuration to ``dir/config/all.yaml``;
    ``ports`` has ``http``, ``https`` and ``https2``; every Service points at 127.0.0.1:``upstream_port``."""
    pki, www, client, other = make_pki(dir / "pki", short_days)
    chain = dir / "pki" / "www-chain.pem"
    chain.write_text(www.server_cert.read_text() + pki.ca_cert.read_text())
    config = dir / "config"
    config.mkdir(parents=True, exist_ok=True)
    docs = [
        _gateway(ports),
        _mtls_policy(ports["https"]),
        _route(),
        m.tls_secret("www-cert", chain, www.server_key, ca=pki.ca_cert),
        m.service("plain", 80, upstream_port),
        m.endpoint_slice("plain", upstream_port),
        m.service("secure", 8443, upstream_port),
        m.endpoint_slice("secure", upstream_port),
        m.tls_secret("upstream-client", client[0], client[1], ca=pki.ca_cert),
        m.upstream_tls_policy("upstream-client", port=8443, mtls=True, service="secure", name="secure-tls"),
        m.service("bundle", 9443, upstream_port, port_name="https"),
        m.endpoint_slice("bundle", upstream_port, port_name="https"),
        m.ca_configmap("bundle-ca", other.ca_cert),
        m.ca_secret("bundle-ca-2", pki.ca_cert),
        m.backend_tls_policy("bundle.example.com", ca_configmap="bundle-ca", ca_secret="bundle-ca-2", service="bundle"),
    ]
    (config / "all.yaml").write_text(m.documents(*docs))
    keys = [p.read_text() for p in (pki.ca_key, www.server_key, client[1], other.ca_key)]
    certs = [p.read_text() for p in (pki.ca_cert, www.server_cert, client[0], other.ca_cert)]
    return TlsConfig(config, pki, www, client, other, dict(ports), keys, certs)


def _windows(text: str, size: int, step: int = 4) -> list[str]:
    return [text[i : i + size] for i in range(0, max(1, len(text) - size + 1), step)]


def _forms(pem: str, der_too: bool) -> list[str]:
    """Pieces of ``pem`` as they could leak: its base64 body, the base64 of the whole PEM text (how a
    Secret's data holds it), and with ``der_too`` the DER bytes as hex (either case) or as raw characters
    (only for keys: a certificate's DER holds its serial number, which /config shows in hex on purpose)."""
    body = "".join(line for line in pem.splitlines() if line and not line.startswith("-----"))
    secret_data = base64.b64encode(pem.encode()).decode()
    out = _windows(body, 16) + _windows(secret_data, 16)
    if der_too:
        der = base64.b64decode(body)
        out += _windows(der.hex(), 24) + _windows(der.hex().upper(), 24)
        out += [w for w in _windows(der.decode("latin-1"), 12) if w.isprintable()]
    return out


def leaks(text: str, config: TlsConfig) -> list[str]:
    """What of ``config``'s keys and certificates appears in ``text`` as PEM, base64 or (keys) DER: a PEM
    marker, a key-like field name, or a 16-character window of any of them. Empty when nothing leaked."""
    found = [marker for marker in ("-----BEGIN", "-----END", "PRIVATE KEY", "CERTIFICATE-----") if marker in text]
    found += re.findall(r'"[a-z_]*(?:pem|key|secret_data|private)[a-z_]*"\s*:', text)
    for pem in config.keys:
        found += [piece for piece in _forms(pem, der_too=True) if piece in text]
    for pem in config.certs:
        found += [piece for piece in _forms(pem, der_too=False) if piece in text]
    return found
