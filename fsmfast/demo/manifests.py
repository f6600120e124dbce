"""The founding blog's manifests as YAML text, the same text a user would ``kubectl apply``.

Each function returns one YAML document (a ``str``); join several with :func:`documents`. Everything lives
in namespace ``httpbin`` unless told otherwise: on bare metal there is no ``kubectl -n``, so the namespace
is written into ``metadata`` (the blog applies its files with ``-n httpbin``).

Bare metal has no pods, so a Service's addresses come from an EndpointSlice written next to it, exactly as
the EndpointSlice controller would have written it (label ``kubernetes.io/service-name``, target port).
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import yaml

NAMESPACE = "httpbin"
GATEWAY_NAME = "simple-fsm-gateway"
GATEWAY_CLASS = "fsm-gateway-cls"


class _Dumper(yaml.SafeDumper):
    """Writes multi-line strings (PEM in a ConfigMap) as ``|`` blocks, as kubectl does."""


def _str(dumper: yaml.SafeDumper, data: str) -> yaml.ScalarNode:
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style="|" if "\n" in data else None)


_Dumper.add_representer(str, _str)


def to_yaml(doc: dict[str, Any]) -> str:
    """One YAML document in kubectl's style: field order kept, multi-line strings as ``|`` blocks."""
    # sort_keys=False keeps kubectl's field order (apiVersion, kind, metadata, spec), which reads naturally.
    return yaml.dump(doc, Dumper=_Dumper, sort_keys=False, default_flow_style=False)


def b64_file(path: Path | str) -> str:
    """A file's bytes in base64, as a Secret's ``data`` holds them."""
    return base64.b64encode(Path(path).read_bytes()).decode("ascii")


def documents(*docs: str) -> str:
    """Join single documents into one multi-document YAML text."""
    return "---\n" + "---\n".join(d if d.endswith("\n") else d + "\n" for d in docs)


def founding_gateway(port: int = 8000) -> str:
    """The blog's Gateway ``simple-fsm-gateway``: one plain-HTTP listener ``http`` on ``port``."""
    return to_yaml(
        {
            "apiVersion": "gateway.networking.k8s.io/v1beta1",
            "kind": "Gateway",
            "metadata": {"name": GATEWAY_NAME, "namespace": NAMESPACE},
            "spec": {
                "gatewayClassName": GATEWAY_CLASS,
                "listeners": [
                    {
                        "protocol": "HTTP",
                        "port": port,
                        "name": "http",
                        "allowedRoutes": {"namespaces": {"from": "Same"}},
                    }
                ],
            },
        }
    )


def founding_route(
    port: int = 8000, hostname: str = "foo.example.com", service: str = "httpbin", service_port: int = 8443
) -> str:
    """The blog's HTTPRoute ``http-route-foo``: host ``hostname``, PathPrefix ``/`` -> ``service:service_port``."""
    return to_yaml(
        {
            "apiVersion": "gateway.networking.k8s.io/v1beta1",
            "kind": "HTTPRoute",
            "metadata": {"name": "http-route-foo", "namespace": NAMESPACE},
            "spec": {
                "parentRefs": [{"name": GATEWAY_NAME, "port": port}],
                "hostnames": [hostname],
                "rules": [
                    {
                        "matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
                        "backendRefs": [{"name": service, "port": service_port}],
                    }
                ],
            },
        }
    )


def service(name: str, port: int, target_port: int, namespace: str = NAMESPACE, port_name: str | None = None) -> str:
    """A ClusterIP Service with one TCP port ``port`` -> ``target_port`` (named ``port_name`` when given)."""
    svc_port: dict[str, Any] = {"port": port, "protocol": "TCP", "targetPort": target_port}
    if port_name is not None:
        svc_port = {"name": port_name, **svc_port}
    return to_yaml(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"selector": {"app": name}, "ports": [svc_port]},
        }
    )


def endpoint_slice(
    service: str,
    port: int,
    addresses: tuple[str, ...] | list[str] = ("127.0.0.1",),
    namespace: str = NAMESPACE,
    port_name: str | None = None,
) -> str:
    """The EndpointSlice Kubernetes would make for ``service``: ready IPv4 ``addresses`` on target ``port``.

    ``port_name`` must equal the Service port's name; Kubernetes writes ``""`` for an unnamed port.
    """
    return to_yaml(
        {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": f"{service}-slice",
                "namespace": namespace,
                "labels": {"kubernetes.io/service-name": service},
            },
            "addressType": "IPv4",
            "ports": [{"name": port_name or "", "port": port, "protocol": "TCP"}],
            "endpoints": [{"addresses": [a], "conditions": {"ready": True}} for a in addresses],
        }
    )


def ca_secret(name: str, ca_pem_path: Path | str, namespace: str = NAMESPACE) -> str:
    """What ``kubectl create secret generic NAME --from-file=ca.crt=CA -n NS --dry-run=client -o yaml`` prints."""
    return to_yaml(
        {
            "apiVersion": "v1",
            "data": {"ca.crt": b64_file(ca_pem_path)},
            "kind": "Secret",
            "metadata": {"creationTimestamp": None, "name": name, "namespace": namespace},
        }
    )


def upstream_tls_policy(
    secret: str = "https-cert",
    port: int = 8443,
    mtls: bool = False,
    service: str = "httpbin",
    namespace: str = NAMESPACE,
    name: str = "upstream-tls-policy-sample",
) -> str:
    """The blog's FSM ``UpstreamTLSPolicy``: TLS to ``service`` port ``port``, trust from Secret ``secret``.

    ``mtls=True`` also presents the Secret's ``tls.crt``/``tls.key`` as the gateway's client certificate.
    """
    return to_yaml(
        {
            "apiVersion": "gateway.flomesh.io/v1alpha1",
            "kind": "UpstreamTLSPolicy",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {
                "targetRef": {"group": "", "kind": "Service", "name": service, "namespace": namespace},
                "ports": [
                    {
                        "port": port,
                        "config": {"certificateRef": {"namespace": namespace, "name": secret}, "mTLS": mtls},
                    }
                ],
            },
        }
    )


def write_founding(
    dir: Path, gateway_port: int, upstream_port: int, with_policy: bool = False, ca_pem: Path | str | None = None
) -> Path:
    """Write the founding blog's objects into ``dir`` as separate files and return ``dir``.

    - ``gateway.yaml``: the Gateway, HTTP listener on ``gateway_port``;
    - ``route.yaml``: HTTPRoute foo.example.com ``/`` -> httpbin:8443;
    - ``service.yaml``: Service httpbin 8443 -> ``upstream_port`` and its EndpointSlice (127.0.0.1);
    - ``policy.yaml`` (only with ``with_policy``): Secret ``https-cert`` holding ``ca_pem`` as ``ca.crt`` and
      the UpstreamTLSPolicy. Without ``with_policy`` an old ``policy.yaml`` is removed, so the directory
      always says exactly what was asked.
    """
    dir.mkdir(parents=True, exist_ok=True)
    (dir / "gateway.yaml").write_text(founding_gateway(gateway_port))
    (dir / "route.yaml").write_text(founding_route(gateway_port))
    (dir / "service.yaml").write_text(
        documents(service("httpbin", 8443, upstream_port), endpoint_slice("httpbin", upstream_port))
    )
    policy = dir / "policy.yaml"
    if with_policy:
        if ca_pem is None:
            raise ValueError("with_policy=True needs ca_pem, the CA certificate to trust")
        policy.write_text(documents(ca_secret("https-cert", ca_pem), upstream_tls_policy()))
    elif policy.exists():
        policy.unlink()
    return dir
