"""Edge policies end to end (issue 20, the part applied so far): AccessControlPolicy at hostname and
route level, FaultInjectionPolicy's abort and delay, on a gateway with two workers and clients from
several loopback source addresses."""

from __future__ import annotations

import http.client
import math
import socket
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from fsmfast.compile import build
from fsmfast.demo.manifests import documents, endpoint_slice, service, to_yaml
from tests.support.procs import Gateway, free_port, wait_for
from tests.support.resilience import HOST, NS, metrics_with, samples, upstreams, write_config
from tests.support.tcp import Echo, tcp_roundtrip

pytestmark = pytest.mark.slow

TO_ROUTE = f"{{group: gateway.networking.k8s.io, kind: HTTPRoute, name: r, namespace: {NS}}}"


def edge_policy(kind: str, body: str) -> str:
    return (
        f"apiVersion: gateway.flomesh.io/v1alpha1\nkind: {kind}\n"
        f"metadata: {{name: {kind.lower()}, namespace: {NS}}}\n"
        f"spec:\n  targetRef: {TO_ROUTE}\n{body}"
    )


def get(port: int, path: str = "/echo", source: str = "127.0.0.1", headers: dict[str, str] | None = None):
    """(status, body, seconds) of one request from ``source``, on a connection of its own."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10, source_address=(source, 0))
    started = time.monotonic()
    conn.request("GET", path, headers={"Host": HOST, **(headers or {})})
    resp = conn.getresponse()
    body = resp.read()
    conn.close()
    return resp.status, body, time.monotonic() - started


def test_access_control_at_hostname_and_route_level(tmp_path: Path) -> None:
    hostname = edge_policy(
        "AccessControlPolicy",
        f"  hostnames: [{{hostname: {HOST}, config: {{blacklist: [127.0.0.3, 127.0.0.128/25], message: not you}}}}]\n",
    )
    port = free_port()
    with upstreams(1) as ups:
        config = write_config(tmp_path / "acl.yaml", port, [u.port for u in ups], hostname)
        assert not [w for w in build(str(config)).warnings if "not applied" in w]
        with Gateway(config, [port], workers=2) as gw:
            assert [get(port, source=s)[0] for s in ("127.0.0.1", "127.0.0.2", "127.0.0.4")] == [200] * 3
            for source in ("127.0.0.3", "127.0.0.200"):
                status, body, _ = get(port, source=source)
                assert (status, body) == (403, b"not you\n")
            assert all(r.target == "/echo" for r in ups[0].requests) and len(ups[0].requests) == 3
            denied = [e for e in gw.access_log(min_entries=5) if e["status"] == 403]
            assert {e["reason"] for e in denied} == {"access_denied"} and {e["client"] for e in denied} == {
                "127.0.0.3",
                "127.0.0.200",
            }

    # Route level, with a whitelist (the blacklist is then ignored, FSM's rule) and X-Forwarded-For
    # read only through one trusted hop: a client cannot whitelist itself by sending its own.
    route = edge_policy(
        "AccessControlPolicy",
        "  http:\n  - match: {path: {type: PathPrefix, value: /}}\n"
        "    config: {whitelist: [127.0.0.2, 10.9.0.0/16], blacklist: [127.0.0.2], enableXFF: true,"
        " trustedProxies: [127.0.0.5]}\n",
    )
    with upstreams(1) as ups:
        config = write_config(tmp_path / "acl2.yaml", port, [u.port for u in ups], route)
        with Gateway(config, [port], workers=2):
            assert get(port, source="127.0.0.2")[0] == 200
            assert get(port, source="127.0.0.3")[:2] == (403, b"access denied\n")  # no message: a line saying why
            spoof = {"X-Forwarded-For": "10.9.1.1"}
            assert get(port, source="127.0.0.3", headers=spoof)[0] == 403  # not a trusted proxy: XFF not read
            assert get(port, source="127.0.0.5", headers=spoof)[0] == 200  # through the trusted proxy
            assert get(port, source="127.0.0.5", headers={"X-Forwarded-For": "10.9.1.1, 10.1.1.1"})[0] == 403


def test_fault_injection_aborts_and_delays_the_share_asked_for(tmp_path: Path) -> None:
    faults = edge_policy(
        "FaultInjectionPolicy",
        "  http:\n"
        "  - match: {path: {type: PathPrefix, value: /abort}}\n"
        "    config: {abort: {percent: 100, statusCode: 503, message: injected}}\n"
        "  - match: {path: {type: PathPrefix, value: /slow}}\n"
        "    config: {delay: {percent: 100, fixed: 300}}\n"
        "  - match: {path: {type: PathPrefix, value: /half}}\n"
        "    config: {abort: {percent: 50, statusCode: 500}}\n"
        "  - match: {path: {type: PathPrefix, value: /never}}\n"
        "    config: {abort: {percent: 0, statusCode: 500}}\n"
        "  - match: {path: {type: PathPrefix, value: /both}}\n"
        "    config: {delay: {percent: 100, fixed: 200}, abort: {percent: 100, statusCode: 429, message: later}}\n",
    )
    rule = {
        "matches": [
            {"path": {"type": "PathPrefix", "value": p}} for p in ("/abort", "/slow", "/half", "/never", "/both")
        ]
    }
    port = free_port()
    with upstreams(1) as ups:
        config = write_config(tmp_path / "fi.yaml", port, [u.port for u in ups], faults, rule=rule)
        with Gateway(config, [port], workers=2) as gw:
            assert [get(port, "/abort")[:2] for _ in range(5)] == [(503, b"injected\n")] * 5
            assert not ups[0].requests_for("/abort")
            status, _, took = get(port, "/slow")
            assert status == 200 and took >= 0.3 and len(ups[0].requests_for("/slow")) == 1
            status, body, took = get(port, "/both")  # the delay first, then the abort (FSM's order)
            assert (status, body) == (429, b"later\n") and took >= 0.2
            assert Counter(get(port, "/never")[0] for _ in range(30)) == {200: 30}
            n = 300
            half = Counter(get(port, "/half")[0] for _ in range(n))
            # Binomial(300, 0.5): mean 150, sd 8.7; 5 sd either way.
            assert set(half) == {200, 500} and abs(half[500] - n / 2) <= 5 * math.sqrt(n / 4), half
            entries = gw.access_log(min_entries=5)
            assert {e["reason"] for e in entries if e["path"] == "/abort"} == {"fault_injected"}
            # A delayed request holds its connection's queue: a pipelined one behind it waits its turn.
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            started = time.monotonic()
            conn.request("GET", "/slow", headers={"Host": HOST})
            first = conn.getresponse()
            first.read()
            conn.request("GET", "/never", headers={"Host": HOST})
            second = conn.getresponse()
            second.read()
            conn.close()
            assert (first.status, second.status) == (200, 200) and time.monotonic() - started >= 0.3


def _burst(port: int, n: int, source: str = "127.0.0.1", threads: int = 10) -> list[tuple[int, dict[str, str], float]]:
    """``n`` requests sent at once from ``threads`` threads: (status, headers, seconds) each."""
    out: list[tuple[int, dict[str, str], float]] = []

    def one(_: int) -> tuple[int, dict[str, str], float]:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20, source_address=(source, 0))
        started = time.monotonic()
        conn.request("GET", "/echo", headers={"Host": HOST})
        resp = conn.getresponse()
        resp.read()
        conn.close()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, time.monotonic() - started

    with ThreadPoolExecutor(threads) as pool:
        out.extend(pool.map(one, range(n)))
    return out


def _rate_limit(config: str) -> str:
    return edge_policy(
        "RateLimitPolicy",
        f"  http:\n  - match: {{path: {{type: PathPrefix, value: /}}}}\n    config: {config}\n",
    )


def test_a_local_rate_limit_is_exact_across_two_workers(tmp_path: Path) -> None:
    # 20 per 60 s: a token every 3 s; the backlog lets one more wait for the next token.
    limit = _rate_limit(
        "{requests: 20, statTimeWindow: 60, backlog: 1, responseHeadersToAdd: [{name: X-Limited, value: 'yes'}]}"
    )
    port = free_port()
    with upstreams(1) as ups:
        config = write_config(tmp_path / "rl.yaml", port, [u.port for u in ups], limit)
        assert not [w for w in build(str(config)).warnings if "not applied" in w]
        with Gateway(config, [port], workers=2) as gw:
            answers = _burst(port, 100)
            statuses = Counter(status for status, _, _ in answers)
            assert statuses == {200: 21, 429: 79}, statuses
            waited = [took for status, _, took in answers if status == 200 and took >= 2.0]
            assert len(waited) == 1, "the one in the backlog got the next token, 3 s later"
            refused = [headers for status, headers, _ in answers if status == 429]
            assert all(h["ratelimit-limit"] == "20" and h["ratelimit-remaining"] == "0" for h in refused)
            assert all(1 <= int(h["retry-after"]) <= 60 and h["x-limited"] == "yes" for h in refused)
            assert len(ups[0].requests) == 21
            entries = gw.access_log(min_entries=100)
            assert len({e["pid"] for e in entries}) == 2, "both workers took from the one quota"
            assert Counter(e["reason"] for e in entries if e["status"] == 429) == {"rate_limited": 79}


def test_a_rate_limit_per_client_address(tmp_path: Path) -> None:
    limit = _rate_limit("{requests: 5, statTimeWindow: 5, backlog: 1, key: {type: ClientIP}}")
    port = free_port()
    with upstreams(1) as ups:
        config = write_config(tmp_path / "rl.yaml", port, [u.port for u in ups], limit)
        with Gateway(config, [port], workers=2):
            for source in ("127.0.0.2", "127.0.0.3"):  # each its own quota
                answers = _burst(port, 10, source)
                fast = sum(1 for status, _, took in answers if status == 200 and took < 0.5)
                slow = sum(1 for status, _, took in answers if status == 200 and took >= 0.5)
                assert (fast, slow, Counter(s for s, _, _ in answers)[429]) == (5, 1, 4), answers


def test_port_level_access_control_closes_a_denied_connection_before_reading(tmp_path: Path) -> None:
    port = free_port()
    acl = (
        "apiVersion: gateway.flomesh.io/v1alpha1\nkind: AccessControlPolicy\n"
        f"metadata: {{name: port-acl, namespace: {NS}}}\n"
        f"spec:\n  targetRef: {{group: gateway.networking.k8s.io, kind: Gateway, name: gw, namespace: {NS}}}\n"
        f"  ports: [{{port: {port}, config: {{whitelist: [127.0.0.2, 127.0.0.4]}}}}]\n"
    )
    with upstreams(1) as ups:
        config = write_config(tmp_path / "port-acl.yaml", port, [u.port for u in ups], acl)
        assert not [w for w in build(str(config)).warnings if "not applied" in w]
        with Gateway(config, [port], workers=2) as gw:
            assert get(port, source="127.0.0.2")[0] == 200 and get(port, source="127.0.0.4")[0] == 200
            for _ in range(4):  # both workers
                sock = socket.create_connection(("127.0.0.1", port), timeout=5, source_address=("127.0.0.3", 0))
                try:
                    sock.sendall(b"GET /echo HTTP/1.1\r\nHost: " + HOST.encode() + b"\r\n\r\n")
                except OSError:
                    pass  # reset already
                try:
                    answer = sock.recv(100)
                except ConnectionResetError:
                    answer = b""
                sock.close()
                assert answer == b"", "nothing is answered to a denied address"
            assert len(ups[0].requests) == 2
            assert all(e["client"] != "127.0.0.3" for e in gw.access_log(min_entries=2))
            series = f'fsmfast_downstream_connections_denied_total{{listener="{port}",reason="denied"}}'
            # Four, and the harness's readiness probes from 127.0.0.1; workers publish once a second.
            wait_for(lambda: samples(metrics_with(gw, series)).get(series, 0) >= 4, 10, "the denials counted")


def test_a_port_byte_rate_throttles_each_tcp_connection_both_ways(tmp_path: Path) -> None:
    port = free_port()
    bps = 64 * 1024
    config = tmp_path / "bps.yaml"
    with Echo("echo") as echo:
        config.write_text(
            documents(
                to_yaml(
                    {
                        "apiVersion": "gateway.networking.k8s.io/v1",
                        "kind": "Gateway",
                        "metadata": {"name": "gw", "namespace": NS},
                        "spec": {
                            "gatewayClassName": "fsmfast",
                            "listeners": [{"name": "tcp", "protocol": "TCP", "port": port}],
                        },
                    }
                ),
                service("echo", 7000, echo.port, namespace=NS),
                endpoint_slice("echo", echo.port, namespace=NS),
                "apiVersion: gateway.networking.k8s.io/v1alpha2\nkind: TCPRoute\n"
                f"metadata: {{name: tcp, namespace: {NS}}}\n"
                "spec: {parentRefs: [{name: gw}], rules: [{backendRefs: [{name: echo, port: 7000}]}]}\n",
                "apiVersion: gateway.flomesh.io/v1alpha1\nkind: RateLimitPolicy\n"
                f"metadata: {{name: bps, namespace: {NS}}}\n"
                f"spec:\n  targetRef: {{group: gateway.networking.k8s.io, kind: Gateway, name: gw}}\n"
                f"  ports: [{{port: {port}, bps: {bps}}}]\n",
            )
        )
        assert not [w for w in build(str(config)).warnings if "not applied" in w]
        with Gateway(config, [port], workers=1):
            payload = bytes(range(256)) * 1024  # 256 KiB each way: 4 s at 64 KiB/s, the first second free
            started = time.monotonic()
            name, echoed = tcp_roundtrip(port, payload)
            took = time.monotonic() - started
            assert name == "echo" and echoed == payload
            # Up: a burst of a second's worth, then 64 KiB/s; down follows up. About 3 s; 6 s at most.
            assert 2.5 <= took <= 6.0, took


def test_a_request_waiting_in_a_rate_limit_backlog_still_meets_the_fault_injection(tmp_path: Path) -> None:
    limit = _rate_limit("{requests: 1, statTimeWindow: 1, backlog: 5}")
    fault = edge_policy(
        "FaultInjectionPolicy",
        "  http:\n  - match: {path: {type: PathPrefix, value: /}}\n"
        "    config: {abort: {percent: 100, statusCode: 503, message: injected}}\n",
    )
    port = free_port()
    with upstreams(1) as ups:
        config = write_config(tmp_path / "both.yaml", port, [u.port for u in ups], limit, fault)
        with Gateway(config, [port], workers=1):
            first = get(port)
            second = get(port)  # no token for a second: it waits in the backlog, then the fault aborts it
            assert first[:2] == (503, b"injected\n") and first[2] < 0.5
            assert second[:2] == (503, b"injected\n") and second[2] >= 0.5
            assert not ups[0].requests
