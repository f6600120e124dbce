"""The hostile-request corpus: every ``tests/requests/NNN-name.http`` against one live gateway.

Each ``.http`` file holds the raw bytes a client sends (one connection; several requests when
the case is about pipelining); its sibling ``.json`` says what must happen:

- ``statuses``: the status of every response on the connection, in order (a list of sets of
  accepted statuses is allowed: ``[[400, 505]]``);
- ``close``: the gateway closes the connection after them (``true`` for every refusal);
- ``upstream``: every request that may reach an upstream, in order, as
  ``{"upstream": name, "target": ..., "host": ..., "body_length": n, "headers": {name: value},
  "matching": {name: regex}, "absent": [names]}`` (only ``upstream`` and ``target`` are required;
  a ``matching`` header appears once, its value a full match of the regex); ``[]`` means nothing
  may reach any upstream;
- ``note``: why, and what nginx/HAProxy do;
- ``split``: byte offsets where the client pauses, so that the gateway reads the pieces
  separately (a head split across reads goes to llhttp, not the one-read plain reader);
- ``access_log``: the access-log entries the connection leaves, in order, each as the fields
  that must have exactly these values (``{"method": "-", "status": 400}``); a value may instead be
  ``{"matching": regex}`` (a full match), or ``{"upstream_header": [i, name]}``: the value the
  case's ``i``-th upstream request had for that header (the request id the upstream saw).

The gateway (``corpus`` fixture) serves three hosts on one port: ``corpus.test`` (``/admin``
to upstream ``admin``, everything else to ``main``), ``limit.test`` (annotation
``fsmfast.io/max-body-size: 1Ki``) and ``ws.test`` (``fsmfast.io/websocket: "true"``).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support import manifests
from tests.support.procs import Gateway, free_port
from tests.support.upstreams import Request, Upstream, parse_responses, raw_exchange

CORPUS = Path(__file__).resolve().parent.parent / "requests"
CASES = sorted(p.stem for p in CORPUS.glob("*.http"))
NS = manifests.NAMESPACE


def _doc(d: dict[str, Any]) -> str:
    return yaml.safe_dump(d, sort_keys=False)


def _route(name: str, hostname: str, rules: list[tuple[str, str]], annotations: dict[str, str]) -> str:
    meta: dict[str, Any] = {"name": name, "namespace": NS}
    if annotations:
        meta["annotations"] = annotations
    return _doc(
        {
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "HTTPRoute",
            "metadata": meta,
            "spec": {
                "parentRefs": [{"name": "gw"}],
                "hostnames": [hostname],
                "rules": [
                    {
                        "matches": [{"path": {"type": "PathPrefix", "value": p}}],
                        "backendRefs": [{"name": s, "port": 80}],
                    }
                    for p, s in rules
                ],
            },
        }
    )


@dataclass
class Corpus:
    gw: Gateway
    port: int
    ups: dict[str, Upstream]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Corpus]:
    tmp = tmp_path_factory.mktemp("corpus")
    with ExitStack() as stack:
        ups = {n: stack.enter_context(Upstream(n, echo_all=True)) for n in ("main", "admin")}
        port = free_port()
        docs = [
            _doc(
                {
                    "apiVersion": "gateway.networking.k8s.io/v1",
                    "kind": "Gateway",
                    "metadata": {"name": "gw", "namespace": NS},
                    "spec": {
                        "gatewayClassName": "fsmfast",
                        "listeners": [{"name": "http", "protocol": "HTTP", "port": port}],
                    },
                }
            )
        ]
        for name, up in ups.items():
            docs += [manifests.service(f"svc-{name}", 80, up.port), manifests.endpoint_slice(f"svc-{name}", up.port)]
        docs += [
            _route("corpus", "corpus.test", [("/admin", "svc-admin"), ("/", "svc-main")], {}),
            _route("limited", "limit.test", [("/", "svc-main")], {"fsmfast.io/max-body-size": "1Ki"}),
            _route("ws", "ws.test", [("/", "svc-main")], {"fsmfast.io/websocket": "true"}),
        ]
        config = tmp / "gw.yaml"
        config.write_text(manifests.documents(*docs))
        gw = stack.enter_context(Gateway(config, [port]))
        yield Corpus(gw, port, ups)


def test_corpus_is_there() -> None:
    assert len(CASES) >= 100
    for stem in CASES:
        assert (CORPUS / f"{stem}.json").is_file(), f"{stem}.http has no .json"


def _seen(ups: dict[str, Upstream], before: dict[str, int]) -> list[tuple[str, Request]]:
    return [(name, r) for name, up in ups.items() for r in list(up.requests)[before[name] :]]


def _check_request(name: str, req: Request, want: dict[str, Any]) -> None:
    assert name == want["upstream"], (name, req)
    assert req.target == want["target"], req
    if "host" in want:
        assert req.header_all("Host") == [want["host"]], req.headers
    if "body_length" in want:
        assert req.body_len == want["body_length"], req
    for header, value in want.get("headers", {}).items():
        assert req.header_all(header) == [value], (header, req.headers)
    for header, pattern in want.get("matching", {}).items():
        got = req.header_all(header)
        assert len(got) == 1 and re.fullmatch(pattern, got[0]), (header, pattern, req.headers)
    for header in want.get("absent", []):
        assert req.header(header) is None, (header, req.headers)
    framing = [k.lower() for k, _ in req.headers if k.lower() in ("content-length", "transfer-encoding")]
    assert len(framing) <= 1, f"the upstream got two framings: {req.headers}"


@pytest.mark.timeout(30)
@pytest.mark.parametrize("case", CASES)
def test_request(corpus: Corpus, case: str) -> None:
    data = (CORPUS / f"{case}.http").read_bytes()
    spec = json.loads((CORPUS / f"{case}.json").read_text())
    before = {name: len(up.requests) for name, up in corpus.ups.items()}
    logged = _settled_log_length(corpus.gw) if "access_log" in spec else 0
    raw, closed = raw_exchange(corpus.port, data, timeout=5, split=spec.get("split", ()))
    responses = parse_responses(raw)
    got = [r.status for r in responses]
    want = [set(s) if isinstance(s, list) else {s} for s in spec["statuses"]]
    assert len(got) == len(want) and all(g in w for g, w in zip(got, want, strict=True)), (
        f"{case}: statuses {got}, want {spec['statuses']} ({spec.get('note', '')}); received {raw[:400]!r}"
    )
    for resp in responses:
        if resp.status >= 400:
            # The gateway's own answer, never an upstream's.
            assert resp.header("X-Upstream") is None, (case, resp.headers)
    if spec.get("close", True):
        assert closed, f"{case}: the connection stayed open"
    seen = _seen(corpus.ups, before)
    expected = spec["upstream"]
    assert len(seen) == len(expected), f"{case}: the upstreams saw {[(n, r.method, r.target) for n, r in seen]}"
    for (name, req), want_req in zip(seen, expected, strict=True):
        _check_request(name, req, want_req)
    if "access_log" in spec:
        entries = corpus.gw.access_log(logged + len(spec["access_log"]))[logged:]
        assert len(entries) == len(spec["access_log"]), f"{case}: access log {entries}"
        for entry, want_entry in zip(entries, spec["access_log"], strict=True):
            for key, want_value in want_entry.items():
                got_value = entry.get(key)
                if isinstance(want_value, dict) and "matching" in want_value:
                    ok = isinstance(got_value, str) and re.fullmatch(want_value["matching"], got_value) is not None
                elif isinstance(want_value, dict) and "upstream_header" in want_value:
                    index, header = want_value["upstream_header"]
                    ok = [got_value] == seen[index][1].header_all(header)
                else:
                    ok = got_value == want_value
                assert ok, f"{case}: access log {key}={got_value!r}, want {want_value!r}: {entry}"


def _settled_log_length(gw: Gateway) -> int:
    """Entries in the access log once the previous case's are written (a worker flushes every 0.1 s)."""
    time.sleep(0.3)
    return len(gw.access_log())
