"""One Service with several endpoints on 127.0.0.1, and the resilience policies that target it
(issue 19): the configuration the load-balancing, health, retry, circuit-breaking and session
tests share.

The endpoints are one Service whose named target port resolves differently in one EndpointSlice
per endpoint (as for pods listening on different container ports), so they can all live on
127.0.0.1. Every response of ``tests.support.upstreams.Upstream`` names its upstream (``X-Upstream``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from fsmfast.demo.manifests import documents, service, to_yaml
from tests.support.procs import Gateway, wait_for
from tests.support.upstreams import Upstream

NS = "lb"
HOST = "lb.example"


def endpoint_slice(i: int, port: int, ready: bool = True) -> str:
    return to_yaml(
        {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {"name": f"svc-{i}", "namespace": NS, "labels": {"kubernetes.io/service-name": "svc"}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": port, "protocol": "TCP"}],
            "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": ready}}],
        }
    )


def service_policy(kind: str, config: dict[str, Any], name: str | None = None, port: int = 80) -> str:
    """An FSM service-level policy (``gateway.flomesh.io/v1alpha1``) on port ``port`` of the Service;
    a LoadBalancerPolicy takes ``config`` as the port entry itself (it has no ``config`` wrapper)."""
    entry = {"port": port, **config} if kind == "LoadBalancerPolicy" else {"port": port, "config": config}
    return to_yaml(
        {
            "apiVersion": "gateway.flomesh.io/v1alpha1",
            "kind": kind,
            "metadata": {"name": name or kind.lower(), "namespace": NS},
            "spec": {"targetRef": {"group": "", "kind": "Service", "name": "svc"}, "ports": [entry]},
        }
    )


def write_config(
    path: Path,
    port: int,
    upstream_ports: Sequence[int],
    *policies: str,
    rule: dict[str, Any] | None = None,
    not_ready: Sequence[int] = (),
) -> Path:
    """A Gateway on ``port``, an HTTPRoute for host ``HOST`` to Service svc port 80, its endpoints on
    ``upstream_ports`` (those at the indexes in ``not_ready`` not ready), and ``policies``.
    ``rule`` adds fields to the route's one rule (``retry``, ``sessionPersistence``, ``backendRefs``)."""
    gateway = to_yaml(
        {
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "Gateway",
            "metadata": {"name": "gw", "namespace": NS},
            "spec": {"gatewayClassName": "fsmfast", "listeners": [{"name": "http", "protocol": "HTTP", "port": port}]},
        }
    )
    route = to_yaml(
        {
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "HTTPRoute",
            "metadata": {"name": "r", "namespace": NS},
            "spec": {
                "parentRefs": [{"name": "gw"}],
                "hostnames": [HOST],
                "rules": [{"backendRefs": [{"name": "svc", "port": 80}], **(rule or {})}],
            },
        }
    )
    svc = yaml.safe_load(service("svc", 80, 0, namespace=NS, port_name="http"))
    svc["spec"]["ports"][0]["targetPort"] = "http"
    slices = [endpoint_slice(i, p, i not in not_ready) for i, p in enumerate(upstream_ports)]
    path.write_text(documents(gateway, to_yaml(svc), *slices, route, *policies))
    return path


@contextmanager
def upstreams(n: int, cls: type[Upstream] = Upstream) -> Iterator[list[Upstream]]:
    """``n`` echo upstreams named u0, u1, ..., answering every path (``echo_all``)."""
    ups = [cls(f"u{i}", echo_all=True) for i in range(n)]
    for u in ups:
        u.start()
    try:
        yield ups
    finally:
        for u in ups:
            u.stop()


def metrics_with(gw: Gateway, needle: str, timeout: float = 6.0) -> str:
    """The gateway's /metrics page once it contains ``needle`` (workers publish at most once a
    second); an admin listener not answering yet counts as not yet."""

    def page() -> str | None:
        try:
            text = gw.admin("/metrics")[1].decode()
        except OSError:
            return None
        return text if needle in text else None

    return wait_for(page, timeout, f"{needle} in /metrics")


def samples(text: str) -> dict[str, float]:
    """A Prometheus text page's samples by series (name and labels as written)."""
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            series, _, value = line.rpartition(" ")
            out[series] = float(value)
    return out
