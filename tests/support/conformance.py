"""Conformance-style tables: Gateway API manifests plus request/expectation cases, run against a live gateway.

A topic is a directory under ``tests/conformance/`` with ``manifests.yaml`` and ``cases.yaml``. A test
module serves several topics from ONE gateway (the topics use distinct hostnames or ports), so the whole
suite starts a handful of processes.

Manifests use the placeholders ``${PORT_<NAME>}`` for listener ports (each name gets a free port) and may
reference the echo backends below; their Services and EndpointSlices are generated. Every backend is a
``tests.support.upstreams.Upstream`` with ``echo_all``: any path answers with the request it received as
JSON, and every response says which backend answered in ``X-Upstream``.

A case (``cases.yaml`` is a list of them)::

    - name: prefix matches at a segment boundary
      request: {port: HTTP, host: paths.example.com, path: /v2/x?q=1, method: GET, headers: {x-a: b}}
      expect:
        status: 200
        backend: backend-v1          # X-Upstream of the response; null: the gateway answered itself
        path: /v2/x?q=1              # request-target the backend saw
        host: paths.example.com      # Host the backend saw
        headers: {x-a: b}            # headers the backend saw (several lines joined with ",")
        absent: [x-b]                # headers the backend did not see
        response_headers: {x-r: v}   # on the response the client got
        response_absent: [x-s]
        location: http://...         # Location of a redirect
        mirrored_to: [mirror-a]      # these backends got one copy of this very request, with
        mirrored_path: /v2/x         # ... this request-target
        mirrored_body_length: 10     # ... and a body this long (request: body_length sends one)
        not_mirrored_to: [mirror-b]
        after: 0.4                   # the response took at least this long (seconds) ...
        within: 2.0                  # ... and at most this long
      repeat: 100                    # send the request this many times, and then
      distribution: {backend-v1: 0.7, backend-v2: 0.3}   # check the share of each backend (±0.05)
"""

from __future__ import annotations

import re
import time
import uuid
from collections import Counter
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tests.support import manifests
from tests.support.procs import Gateway, free_port, wait_for
from tests.support.upstreams import Client, Response, Upstream

ROOT = Path(__file__).resolve().parent.parent / "conformance"
SERVICE_PORT = 8080
# (namespace, name) of the echo backends every topic may use.
BACKENDS = (
    ("infra", "backend-v1"),
    ("infra", "backend-v2"),
    ("infra", "backend-v3"),
    ("infra", "mirror-a"),
    ("infra", "mirror-b"),
    ("web", "web-backend"),
)
CASE_HEADER = "X-Case-Id"
_PLACEHOLDER = re.compile(r"\$\{PORT_([A-Z0-9_]+)\}")


@dataclass
class Case:
    topic: str
    name: str
    request: dict[str, Any]
    expect: dict[str, Any]
    repeat: int = 1
    distribution: dict[str, float] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return f"{self.topic}: {self.name}"


@dataclass
class Suite:
    gw: Gateway
    ports: dict[str, int]
    ups: dict[str, Upstream]


def load_cases(*topics: str) -> list[Case]:
    out = []
    for topic in topics:
        for raw in yaml.safe_load((ROOT / topic / "cases.yaml").read_text()):
            out.append(
                Case(
                    topic=topic,
                    name=raw["name"],
                    request=raw.get("request", {}),
                    expect=raw.get("expect", {}),
                    repeat=raw.get("repeat", 1),
                    distribution=raw.get("distribution", {}),
                )
            )
    return out


def start(stack: ExitStack, tmp: Path, *topics: str, args: tuple[str, ...] = ()) -> Suite:
    """One gateway serving every topic's manifests, and the echo backends."""
    ups = {name: stack.enter_context(Upstream(name, echo_all=True)) for _, name in BACKENDS}
    docs = []
    for ns, name in BACKENDS:
        docs.append(manifests.service(name, SERVICE_PORT, ups[name].port, namespace=ns))
        docs.append(manifests.endpoint_slice(name, ups[name].port, namespace=ns))
    config = tmp / "config"
    config.mkdir()
    (config / "echo-backends.yaml").write_text(manifests.documents(*docs))
    texts = {topic: (ROOT / topic / "manifests.yaml").read_text() for topic in topics}
    names = sorted({m for text in texts.values() for m in _PLACEHOLDER.findall(text)})
    ports = {name: free_port() for name in names}
    for topic, text in texts.items():
        filled = _PLACEHOLDER.sub(lambda m: str(ports[m.group(1)]), text)
        (config / f"topic-{topic}.yaml").write_text(filled)
    gw = stack.enter_context(Gateway(config, sorted(ports.values()), args=args))
    return Suite(gw, ports, ups)


# -- running one case ----------------------------------------------------------------------


def _request(suite: Suite, req: dict[str, Any], case_id: str) -> tuple[Response, float]:
    port = suite.ports[req.get("port", "HTTP")]
    headers: list[tuple[str, str]] = []
    if req.get("host") is not None:
        headers.append(("Host", req["host"]))
    extra = req.get("headers", {})
    items = extra.items() if isinstance(extra, dict) else [tuple(pair) for pair in extra]
    headers += [(str(k), str(v)) for k, v in items]
    headers.append((CASE_HEADER, case_id))
    method = req.get("method", "GET")
    body = b""
    if "body_length" in req:  # a body of that many bytes, sent with Content-Length
        body = b"x" * int(req["body_length"])
        headers.append(("Content-Length", str(len(body))))
    started = time.monotonic()
    with Client(port, timeout=10.0) as c:
        resp = c.request(method, req.get("path", "/"), headers, body)
    return resp, time.monotonic() - started


def _seen(resp: Response) -> dict[str, Any]:
    return resp.json() if resp.header("Content-Type") == "application/json" else {}


def _header(pairs: list[list[str]] | list[tuple[str, str]], name: str) -> str | None:
    values = [v for k, v in pairs if k.lower() == name.lower()]
    return ",".join(values) if values else None


def check(suite: Suite, case: Case) -> None:
    if case.distribution:
        _check_distribution(suite, case)
        return
    case_id = uuid.uuid4().hex
    resp, elapsed = _request(suite, case.request, case_id)
    exp = _fill(case.expect, suite.ports)
    ctx = f"{case.id}: got {resp.status} {resp.headers} {resp.body[:300]!r}"
    if "status" in exp:
        assert resp.status == exp["status"], ctx
    if "backend" in exp:
        assert resp.header("X-Upstream") == exp["backend"], ctx
    seen = _seen(resp)
    if "path" in exp:
        assert seen.get("target") == exp["path"], ctx
    upstream_headers = seen.get("headers", [])
    if "host" in exp:
        assert _header(upstream_headers, "Host") == exp["host"], ctx
    for name, value in exp.get("headers", {}).items():
        assert _header(upstream_headers, name) == str(value), f"upstream header {name}: {ctx}"
    for name in exp.get("absent", []):
        assert _header(upstream_headers, name) is None, f"upstream header {name} should be absent: {ctx}"
    for name, value in exp.get("response_headers", {}).items():
        assert _header(resp.headers, name) == str(value), f"response header {name}: {ctx}"
    for name in exp.get("response_absent", []):
        assert _header(resp.headers, name) is None, f"response header {name} should be absent: {ctx}"
    if "location" in exp:
        assert resp.header("Location") == exp["location"], ctx
    if "after" in exp:
        assert elapsed >= exp["after"], f"answered after {elapsed:.3f}s: {ctx}"
    if "within" in exp:
        assert elapsed <= exp["within"], f"answered after {elapsed:.3f}s: {ctx}"
    for name in exp.get("mirrored_to", []):
        copies = wait_for(lambda n=name: _copies(suite, n, case_id), 5.0, f"a mirrored copy at {name} ({case.id})")
        assert len(copies) == 1, f"{name} got {len(copies)} copies: {case.id}"
        if "mirrored_path" in exp:
            assert copies[0].target == exp["mirrored_path"], f"{name} saw {copies[0].target}: {case.id}"
        if "mirrored_body_length" in exp:
            assert copies[0].body_len == exp["mirrored_body_length"], f"{name}: {copies[0]}: {case.id}"
    if exp.get("not_mirrored_to"):
        time.sleep(0.3)
        for name in exp["not_mirrored_to"]:
            assert not _copies(suite, name, case_id), f"{name} got a copy: {case.id}"


def _fill(value: Any, ports: dict[str, int]) -> Any:
    """``${PORT_<NAME>}`` in expectations (a redirect to the listener port) -> the port chosen."""
    if isinstance(value, str):
        return _PLACEHOLDER.sub(lambda m: str(ports[m.group(1)]), value)
    if isinstance(value, dict):
        return {k: _fill(v, ports) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, ports) for v in value]
    return value


def _copies(suite: Suite, name: str, case_id: str) -> list[Any]:
    return [r for r in list(suite.ups[name].requests) if r.header(CASE_HEADER) == case_id]


def _check_distribution(suite: Suite, case: Case) -> None:
    counts: Counter[str | None] = Counter()
    for _ in range(case.repeat):
        resp, _ = _request(suite, case.request, uuid.uuid4().hex)
        counts[resp.header("X-Upstream") if resp.status == 200 else f"status {resp.status}"] += 1
    shares = {k: n / case.repeat for k, n in counts.items()}
    for name, want in case.distribution.items():
        got = shares.get(name, 0.0)
        assert abs(got - want) <= 0.05, f"{case.id}: {name} got {got:.2f}, want {want:.2f} ({dict(counts)})"
    unexpected = set(shares) - set(case.distribution)
    assert not unexpected, f"{case.id}: unexpected answers {unexpected} ({dict(counts)})"
