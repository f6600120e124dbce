"""``fsmfast.io`` HTTPRoute annotations compiled into snapshot rules, and the limit flags of ``run``."""

from __future__ import annotations

from pathlib import Path

import pytest

from fsmfast.cli import make_parser, settings_from
from fsmfast.compile import build
from fsmfast.compile.route_knobs import parse_size
from fsmfast.errors import ConfigError
from fsmfast.settings import Settings

GATEWAY = """\
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: ns}
spec: {gatewayClassName: c, listeners: [{name: http, port: 8000, protocol: HTTP}]}
---
apiVersion: v1
kind: Service
metadata: {name: svc, namespace: ns}
spec: {ports: [{port: 80}]}
"""


def route(annotations: str) -> str:
    return f"""\
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: r
  namespace: ns
  annotations: {{{annotations}}}
spec:
  parentRefs: [{{name: gw}}]
  rules:
  - name: chat
    matches: [{{path: {{type: PathPrefix, value: /chat}}}}]
    backendRefs: [{{name: svc, port: 80}}]
  - matches: [{{path: {{type: PathPrefix, value: /}}}}, {{path: {{type: Exact, value: /x}}}}]
    backendRefs: [{{name: svc, port: 80}}]
"""


def rules(tmp_path: Path, annotations: str) -> dict[str, tuple[int | None, bool]]:
    (tmp_path / "all.yaml").write_text(GATEWAY + route(annotations))
    snap = build(str(tmp_path / "all.yaml")).snapshot
    return {
        r.name.split("/", 3)[3]: (r.max_body_size, r.websocket)
        for listener in snap.listeners
        for vhost in listener.vhosts
        for r in vhost.rules
    }


@pytest.mark.parametrize(
    ("text", "size"),
    [("1048576", 1048576), ("512Ki", 512 * 1024), ("10Mi", 10 * 2**20), ("1Gi", 2**30), ("500k", 500_000),
     ("2M", 2_000_000), (" 7 ", 7), ("0", None), ("-1", None), ("1.5Mi", None), ("10MB", None), ("Mi", None),
     ("0x10", None), ("", None)],
)  # fmt: skip
def test_parse_size(text: str, size: int | None) -> None:
    assert parse_size(text) == size


def test_no_annotations_no_knobs(tmp_path: Path) -> None:
    assert set(rules(tmp_path, "").values()) == {(None, False)}


def test_max_body_size_applies_to_every_rule(tmp_path: Path) -> None:
    found = rules(tmp_path, "fsmfast.io/max-body-size: 10Mi")
    assert len(found) == 3 and set(found.values()) == {(10 * 2**20, False)}


def test_websocket_true_and_rule_selection(tmp_path: Path) -> None:
    assert set(rules(tmp_path, 'fsmfast.io/websocket: "true"').values()) == {(None, True)}
    assert set(rules(tmp_path, 'fsmfast.io/websocket: "false"').values()) == {(None, False)}
    by_name = rules(tmp_path, "fsmfast.io/websocket: chat")
    assert by_name == {"rule/0/match/0": (None, True), "rule/1/match/0": (None, False), "rule/1/match/1": (None, False)}
    by_index = rules(tmp_path, 'fsmfast.io/websocket: "1"')
    assert by_index["rule/0/match/0"] == (None, False) and by_index["rule/1/match/1"] == (None, True)


@pytest.mark.parametrize(
    ("annotations", "message"),
    [
        ("fsmfast.io/max-body-size: lots", "expected a positive size"),
        ("fsmfast.io/websocket: nope", 'expected "true", "false" or rule names/indexes'),
        ('fsmfast.io/websocket: "7"', "got '7'"),
    ],
)
def test_invalid_annotations_are_errors(tmp_path: Path, annotations: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        rules(tmp_path, annotations)
    assert any(message in str(issue) for issue in err.value.issues), err.value.issues


def test_limit_flags_and_defaults() -> None:
    defaults = Settings(config_path="")
    assert defaults.keepalive_timeout > 60  # above a front load balancer's usual 60 s
    assert (defaults.max_request_line, defaults.max_field_size, defaults.max_header_count) == (8192, 8192, 100)
    assert defaults.max_header_bytes == 65536
    parser = make_parser()
    ns = parser.parse_args(
        ["run", "-c", "x", "--max-request-line", "100", "--max-field-size", "200", "--max-head-size", "300",
         "--max-header-count", "4", "--max-connections", "50", "--body-timeout", "2.5"]
    )  # fmt: skip
    got = settings_from(ns, parser)
    assert (got.max_request_line, got.max_field_size, got.max_header_bytes) == (100, 200, 300)
    assert (got.max_header_count, got.max_connections, got.body_timeout) == (4, 50, 2.5)
    with pytest.raises(SystemExit):
        parser.parse_args(["run", "-c", "x", "--max-field-size", "0"])
