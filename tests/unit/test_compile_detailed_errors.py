"""``fsmfast.io/detailed-errors`` on a Gateway: compiled per port into ``Listener.detailed_errors``."""

from __future__ import annotations

from pathlib import Path

import pytest

from fsmfast.compile import DETAILED_ERRORS
from fsmfast.errors import ConfigError
from fsmfast.snapshot import decode, encode
from tests.unit.test_compile import compile_docs, endpoint_slice, route, service

ROUTE = """\
parentRefs: [{name: a}, {name: b}, {name: c}]
rules: [{backendRefs: [{name: svc, port: 80}]}]
"""


@pytest.fixture
def cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


def gateway(name: str, port: int, value: str | None) -> str:
    meta = f"{{name: {name}, namespace: ns" + (f", annotations: {{{DETAILED_ERRORS}: '{value}'}}}}" if value else "}")
    return (
        f"apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {meta}\n"
        f"spec:\n gatewayClassName: any\n listeners:\n  - {{name: http, port: {port}, protocol: HTTP}}\n"
    )


def test_the_annotated_gateways_ports_get_detailed_errors(cwd: Path) -> None:
    result = compile_docs(
        gateway("a", 8000, "true"),
        gateway("b", 8001, None),
        gateway("c", 8002, "False"),
        route("r", ROUTE),
        service(),
        endpoint_slice(),
    )
    by_port = {listener.port: listener.detailed_errors for listener in result.snapshot.listeners}
    assert by_port == {8000: True, 8001: False, 8002: False}
    # It reaches the workers: the snapshot they decode carries it.
    assert [lst.detailed_errors for lst in decode(encode(result.snapshot)).listeners] == [True, False, False]
    assert not any(DETAILED_ERRORS in w for w in result.warnings), result.warnings


def test_a_port_shared_with_an_annotated_gateway_is_detailed_with_a_warning(cwd: Path) -> None:
    result = compile_docs(gateway("a", 8000, "true"), gateway("b", 8000, None), route("r", ROUTE), service())
    assert [lst.detailed_errors for lst in result.snapshot.listeners] == [True]
    warned = [w for w in result.warnings if DETAILED_ERRORS in w]
    assert len(warned) == 1 and "Gateway ns/b" in warned[0] and "port 8000" in warned[0], result.warnings


@pytest.mark.parametrize("value", ["yes", "1", "on"])
def test_any_other_value_is_an_error_naming_the_field(cwd: Path, value: str) -> None:
    with pytest.raises(ConfigError) as info:
        compile_docs(gateway("a", 8000, value), route("r", ROUTE), service())
    text = str(info.value)
    assert f"Gateway ns/a: metadata.annotations[{DETAILED_ERRORS}]" in text, text
    assert repr(value) in text, text
