"""Manifests as YAML text for the tests: the founding blog's objects (from :mod:`fsmfast.demo.manifests`, which
the demo writes too) and the ones only tests need (a TLS Secret, a BackendTLSPolicy, a CA ConfigMap).

Everything lives in namespace ``httpbin`` unless told otherwise; see :mod:`fsmfast.demo.manifests`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fsmfast.demo.manifests import (
    GATEWAY_CLASS,
    GATEWAY_NAME,
    NAMESPACE,
    b64_file,
    ca_secret,
    documents,
    endpoint_slice,
    founding_gateway,
    founding_route,
    service,
    to_yaml,
    upstream_tls_policy,
    write_founding,
)

__all__ = [
    "GATEWAY_CLASS",
    "GATEWAY_NAME",
    "NAMESPACE",
    "backend_tls_policy",
    "ca_configmap",
    "ca_secret",
    "documents",
    "endpoint_slice",
    "founding_gateway",
    "founding_route",
    "service",
    "tls_secret",
    "to_yaml",
    "upstream_tls_policy",
    "write_founding",
]


def tls_secret(
    name: str, cert: Path | str, key: Path | str, ca: Path | str | None = None, namespace: str = NAMESPACE
) -> str:
    """A ``kubernetes.io/tls`` Secret (``tls.crt``, ``tls.key``), plus ``ca.crt`` when ``ca`` is given, as
    cert-manager writes it. The UpstreamTLSPolicy mTLS case needs all three keys in one Secret."""
    data = {"tls.crt": b64_file(cert), "tls.key": b64_file(key)}
    if ca is not None:
        data = {"ca.crt": b64_file(ca), **data}
    return to_yaml(
        {
            "apiVersion": "v1",
            "data": data,
            "kind": "Secret",
            "metadata": {"creationTimestamp": None, "name": name, "namespace": namespace},
            "type": "kubernetes.io/tls",
        }
    )


def backend_tls_policy(
    hostname: str,
    ca_configmap: str | None = None,
    ca_secret: str | None = None,
    service: str = "httpbin",
    section_name: str | None = None,
    namespace: str = NAMESPACE,
    name: str = "httpbin-backend-tls",
) -> str:
    """A Gateway API ``BackendTLSPolicy`` (v1): SNI and verified name ``hostname``, CA from a ConfigMap
    ``ca_configmap`` and/or a Secret ``ca_secret`` (key ``ca.crt``); ``section_name`` is a Service port name."""
    ref: dict[str, Any] = {"group": "", "kind": "Service", "name": service}
    if section_name is not None:
        ref["sectionName"] = section_name
    cas: list[dict[str, str]] = []
    if ca_configmap is not None:
        cas.append({"group": "", "kind": "ConfigMap", "name": ca_configmap})
    if ca_secret is not None:
        cas.append({"group": "", "kind": "Secret", "name": ca_secret})
    return to_yaml(
        {
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "BackendTLSPolicy",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"targetRefs": [ref], "validation": {"caCertificateRefs": cas, "hostname": hostname}},
        }
    )


def ca_configmap(name: str, ca_pem_path: Path | str, namespace: str = NAMESPACE) -> str:
    """What ``kubectl create configmap NAME --from-file=ca.crt=CA --dry-run=client -o yaml`` prints."""
    return to_yaml(
        {
            "apiVersion": "v1",
            "data": {"ca.crt": Path(ca_pem_path).read_text()},
            "kind": "ConfigMap",
            "metadata": {"creationTimestamp": None, "name": name, "namespace": namespace},
        }
    )


def one_route(path: Path, port: int, upstream_port: int, namespace: str = NAMESPACE) -> Path:
    """Writes the smallest HTTP configuration to ``path``: Gateway ``gw`` with one HTTP listener on
    ``port``, and HTTPRoute ``r`` sending every host and path to Service ``svc`` (port 80) at
    ``upstream_port``; returns ``path``."""
    gateway = (
        "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\n"
        f"metadata: {{name: gw, namespace: {namespace}}}\n"
        f"spec: {{gatewayClassName: fsmfast, listeners: [{{name: http, protocol: HTTP, port: {port}}}]}}\n"
    )
    route = (
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\n"
        f"metadata: {{name: r, namespace: {namespace}}}\n"
        "spec: {parentRefs: [{name: gw}], rules: [{backendRefs: [{name: svc, port: 80}]}]}\n"
    )
    svc = service("svc", 80, upstream_port, namespace=namespace)
    path.write_text(documents(gateway, svc, endpoint_slice("svc", upstream_port, namespace=namespace), route))
    return path


def live_and_dead(
    path: Path,
    *,
    namespace: str,
    http_port: int,
    https_port: int,
    cert_secret: str,
    cert: Path | str,
    key: Path | str,
    live: tuple[str, str, int],
    dead: tuple[str, str, int],
) -> Path:
    """Writes to ``path`` Gateway ``gw`` with an HTTP listener ``http`` on ``http_port`` and an HTTPS listener
    ``https`` on ``https_port`` terminating with the TLS Secret ``cert_secret`` (``cert``, ``key``), and two
    HTTPRoutes for every host: ``ok`` and ``dead``, each ``(path prefix, service, endpoint port)`` with the
    Service on port 80. ``dead`` is meant for a port nothing listens on (502s, upstream errors); returns ``path``."""
    gateway = (
        "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\n"
        f"metadata: {{name: gw, namespace: {namespace}}}\n"
        "spec:\n  gatewayClassName: fsmfast\n  listeners:\n"
        f"  - {{name: http, protocol: HTTP, port: {http_port}}}\n"
        f"  - {{name: https, protocol: HTTPS, port: {https_port}, "
        f"tls: {{certificateRefs: [{{name: {cert_secret}}}]}}}}\n"
    )
    docs = [gateway, tls_secret(cert_secret, cert, key, namespace=namespace)]
    for name, (prefix, svc, port) in (("ok", live), ("dead", dead)):
        docs += [
            service(svc, 80, port, namespace=namespace),
            endpoint_slice(svc, port, namespace=namespace),
            "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\n"
            f"metadata: {{name: {name}, namespace: {namespace}}}\n"
            "spec: {parentRefs: [{name: gw}], rules: [{matches: [{path: {type: PathPrefix, "
            f"value: {prefix}}}}}], backendRefs: [{{name: {svc}, port: 80}}]}}]}}\n",
        ]
    path.write_text(documents(*docs))
    return path
