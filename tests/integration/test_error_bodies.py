"""What the gateway's own error bodies tell a client: what failed, never where.

By default a 502/503/504/500 body names the failure (connect refused, invalid response, no
healthy upstream, no usable backend) but not the namespace, Service, endpoint address or a
parser's message; those go to the error log and the access log. ``fsmfast run
--detailed-errors``, or ``fsmfast.io/detailed-errors: "true"`` on a Gateway (for its listeners'
ports), puts them in the body too. One config serves the same routes on two Gateways, one
annotated; a second process runs a copy of it with the flag.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support import manifests
from tests.support.procs import Gateway, free_port, wait_for
from tests.support.upstreams import Client, Upstream

NS = manifests.NAMESPACE
DETAILED = "fsmfast.io/detailed-errors"


def _doc(d: dict[str, Any]) -> str:
    return yaml.safe_dump(d, sort_keys=False)


def _gateway(name: str, port: int, annotations: dict[str, str]) -> str:
    meta: dict[str, Any] = {"name": name, "namespace": NS}
    if annotations:
        meta["annotations"] = annotations
    listeners = [{"name": "http", "protocol": "HTTP", "port": port}]
    return _doc(
        {
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "Gateway",
            "metadata": meta,
            "spec": {"gatewayClassName": "fsmfast", "listeners": listeners},
        }
    )


def _route(host: str, service: str, gateways: list[str]) -> str:
    return _doc(
        {
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "HTTPRoute",
            "metadata": {"name": host.split(".")[0], "namespace": NS},
            "spec": {
                "parentRefs": [{"name": g} for g in gateways],
                "hostnames": [host],
                "rules": [{"backendRefs": [{"name": service, "port": 80}]}],
            },
        }
    )


@dataclass
class Setup:
    plain: int  # port of the Gateway without the annotation
    annotated: int  # port of the annotated Gateway, same process
    flagged: int  # port of the --detailed-errors process
    gw: Gateway
    flagged_gw: Gateway
    up: Upstream
    refused: int  # a port nothing listens on


def _config(path: Path, gateways: list[tuple[str, int, dict[str, str]]], up: Upstream, refused: int) -> Path:
    names = [g for g, _, _ in gateways]
    docs = [_gateway(*g) for g in gateways]
    docs += [manifests.service("svc-ok", 80, up.port), manifests.endpoint_slice("svc-ok", up.port)]
    docs += [manifests.service("svc-refused", 80, refused), manifests.endpoint_slice("svc-refused", refused)]
    docs.append(manifests.service("svc-down", 80, 9))  # no EndpointSlice: no ready endpoint
    docs += [_route(h, s, names) for h, s in [("ok.test", "svc-ok"), ("refused.test", "svc-refused")]]
    docs += [_route("down.test", "svc-down", names), _route("missing.test", "svc-missing", names)]
    path.write_text(manifests.documents(*docs))
    return path


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    tmp = tmp_path_factory.mktemp("errbodies")
    with ExitStack() as stack:
        up = stack.enter_context(Upstream("ok"))
        refused = free_port()
        plain, annotated, flagged = free_port(), free_port(), free_port()
        config = _config(
            tmp / "gw.yaml", [("gw", plain, {}), ("gw-detailed", annotated, {DETAILED: "true"})], up, refused
        )
        gw = stack.enter_context(Gateway(config, [plain, annotated]))
        other = _config(tmp / "flagged.yaml", [("gw", flagged, {})], up, refused)
        flagged_gw = stack.enter_context(Gateway(other, [flagged], args=("--detailed-errors",)))
        yield Setup(plain, annotated, flagged, gw, flagged_gw, up, refused)


def _get(port: int, host: str, path: str) -> tuple[int, str]:
    with Client(port, timeout=10) as c:
        resp = c.request("GET", path, [("Host", host)])
        return resp.status, resp.body.decode()


def _logged(gw: Gateway, path: str) -> dict[str, Any]:
    def find() -> dict[str, Any] | None:
        return next((e for e in gw.access_log() if e.get("path") == path), None)

    return wait_for(find, 5, f"an access-log entry for {path}")


# (host, path, status, what the body says by default, what only a detailed body says)
CASES = [
    (
        "refused.test",
        "/r",
        502,
        "connect to upstream failed: Connection refused",
        "svc-refused:80 (127.0.0.1:{refused})",
    ),
    ("ok.test", "/garbage", 502, "invalid HTTP response from upstream", "svc-ok:80 (127.0.0.1:{up})"),
    ("down.test", "/d", 503, "no healthy upstream", "service {ns}/svc-down:80 has no ready endpoints"),
    ("missing.test", "/m", 500, "no usable backend for this route", "route httproute/{ns}/missing/"),
]
SERVICE = {"refused.test": "svc-refused", "ok.test": "svc-ok", "down.test": "svc-down"}


def _fill(text: str, s: Setup) -> str:
    return text.format(refused=s.refused, up=s.up.port, ns=NS)


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("host", "path", "status", "says", "detail"), CASES)
def test_default_bodies_say_what_failed_not_where(
    setup: Setup, host: str, path: str, status: int, says: str, detail: str
) -> None:
    path = f"{path}?plain"
    got, body = _get(setup.plain, host, path)
    assert got == status, body
    assert says in body, body
    for secret in ("127.0.0.1", str(setup.refused), str(setup.up.port), f"{NS}/", "svc-", "httproute"):
        assert secret not in body, (secret, body)
    # The access log keeps who was asked either way.
    entry = _logged(setup.gw, path)
    assert entry["status"] == status
    assert entry["route"], entry
    if host in SERVICE:
        assert entry["backend"] == f"{NS}/{SERVICE[host]}:80", entry
    if status == 502:
        port = setup.refused if host == "refused.test" else setup.up.port
        assert entry["upstream"] == f"127.0.0.1:{port}", entry


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("host", "path", "status", "says", "detail"), CASES)
@pytest.mark.parametrize("how", ["annotation", "flag"])
def test_detailed_bodies_name_namespace_service_and_endpoint(
    setup: Setup, how: str, host: str, path: str, status: int, says: str, detail: str
) -> None:
    port = setup.annotated if how == "annotation" else setup.flagged
    got, body = _get(port, host, f"{path}?{how}")
    assert got == status, body
    assert _fill(detail, setup) in body, body


@pytest.mark.timeout(60)
def test_the_error_log_names_the_endpoint_and_the_parsers_message(setup: Setup, tmp_path: Path) -> None:
    # The parser's own words (llhttp's) and the endpoint are for the operator: the log has them. A
    # gateway of its own: the log lets through a few lines of a kind per interval (fsmfast.logs).
    port = free_port()
    config = _config(tmp_path / "gw.yaml", [("gw", port, {})], setup.up, setup.refused)
    with Gateway(config, [port]) as gw:
        got, body = _get(port, "ok.test", "/garbage?log")
        assert got == 502 and body.strip() == "invalid HTTP response from upstream", body
        want = f"{NS}/svc-ok:80 endpoint 127.0.0.1:{setup.up.port}: invalid HTTP response from upstream: "
        wait_for(lambda: want in gw.stderr_text(), 5, "the error-log line")
    got, body = _get(setup.annotated, "ok.test", "/garbage?log")
    assert "invalid HTTP response from upstream: " in body, body  # the detailed body has the parser's words
