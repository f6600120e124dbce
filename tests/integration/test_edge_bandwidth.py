"""A port's byte rate (RateLimitPolicy ``ports[].bps``, issue 20) on HTTP and HTTPS ports, end to end:
FSM's own example (an 8 KiB POST on an HTTP port of 2048 B/s), the response direction over HTTP and
over TLS, a WebSocket tunnel after its upgrade, and the port's access control in front of the throttle;
then a TCP port whose client sends while the upstream cannot be reached yet: those bytes count too.

One gateway serves five listeners: ``slow`` (HTTP, 2048 B/s), ``plain`` (HTTP, no policy), ``wide``
(HTTP, 32 KiB/s, and a port-level whitelist of 127.0.0.1), ``tls`` (HTTPS, 32 KiB/s) and ``ws``
(HTTP, 32 KiB/s, a WebSocket route). A connection's first second's worth goes at once, then ``bps`` a
second, so each bound below is the transfer's size over the rate, less that first second.
"""

from __future__ import annotations

import hashlib
import os
import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from fsmfast.demo.manifests import documents, endpoint_slice, service, to_yaml
from fsmfast.demo.procs import connection
from tests.integration.test_websocket import WsUpstream, handshake, read_exactly
from tests.support.manifests import tls_secret
from tests.support.pki import san_pki
from tests.support.procs import Gateway, free_port, wait_for
from tests.support.resilience import HOST, NS
from tests.support.upstreams import Client, Upstream, build_request, pattern_sha256

pytestmark = pytest.mark.slow

WS_HOST = "ws.example"
SLOW_BPS = 2048
WIDE_BPS = 32 * 1024


@dataclass
class Env:
    ports: dict[str, int]
    up: Upstream


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    tmp = tmp_path_factory.mktemp("bandwidth")
    pki = san_pki(tmp / "pki", None, HOST)
    ports = {name: free_port() for name in ("slow", "plain", "wide", "tls", "ws")}
    listeners = [
        {"name": name, "protocol": "HTTP", "port": ports[name]} for name in ("slow", "plain", "wide", "ws")
    ] + [{"name": "tls", "protocol": "HTTPS", "port": ports["tls"], "tls": {"certificateRefs": [{"name": "cert"}]}}]
    to_gw = "{group: gateway.networking.k8s.io, kind: Gateway, name: gw}"
    with Upstream("u", echo_all=True) as up, WsUpstream() as ws:
        config = tmp / "gw.yaml"
        config.write_text(
            documents(
                to_yaml(
                    {
                        "apiVersion": "gateway.networking.k8s.io/v1",
                        "kind": "Gateway",
                        "metadata": {"name": "gw", "namespace": NS},
                        "spec": {"gatewayClassName": "fsmfast", "listeners": listeners},
                    }
                ),
                tls_secret("cert", pki.server_cert, pki.server_key, namespace=NS),
                service("svc", 80, up.port, namespace=NS),
                endpoint_slice("svc", up.port, namespace=NS),
                service("ws", 80, ws.port, namespace=NS),
                endpoint_slice("ws", ws.port, namespace=NS),
                route("r", HOST, "svc"),
                route("ws", WS_HOST, "ws", {"fsmfast.io/websocket": "true"}),
                "apiVersion: gateway.flomesh.io/v1alpha1\nkind: RateLimitPolicy\n"
                f"metadata: {{name: bps, namespace: {NS}}}\n"
                f"spec:\n  targetRef: {to_gw}\n  bps: {WIDE_BPS}\n"
                f"  ports: [{{port: {ports['slow']}, bps: {SLOW_BPS}}}, {{port: {ports['wide']}}},"
                f" {{port: {ports['tls']}}}, {{port: {ports['ws']}}}]\n",
                "apiVersion: gateway.flomesh.io/v1alpha1\nkind: AccessControlPolicy\n"
                f"metadata: {{name: acl, namespace: {NS}}}\n"
                f"spec:\n  targetRef: {to_gw}\n"
                f"  ports: [{{port: {ports['wide']}, config: {{whitelist: [127.0.0.1]}}}}]\n",
            )
        )
        with Gateway(config, list(ports.values()), workers=1):
            yield Env(ports, up)


def route(name: str, hostname: str, backend: str, annotations: dict[str, str] | None = None) -> str:
    return to_yaml(
        {
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "HTTPRoute",
            "metadata": {"name": name, "namespace": NS, "annotations": annotations or {}},
            "spec": {
                "parentRefs": [{"name": "gw"}],
                "hostnames": [hostname],
                "rules": [{"backendRefs": [{"name": backend, "port": 80}]}],
            },
        }
    )


def timed(port: int, method: str, path: str, body: bytes | None = None, tls: bool = False) -> tuple[int, bytes, float]:
    """(status, body, seconds) of one request on a connection of its own, the connection (and over TLS
    its handshake) included in the time."""
    started = time.monotonic()
    conn = connection(port, tls)
    conn.request(method, path, body=body, headers={"Host": HOST})
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    return resp.status, data, time.monotonic() - started


def test_fsm_example_an_8_kib_post_on_an_http_port_of_2048_bytes_a_second(env: Env) -> None:
    body = os.urandom(8192)
    digest = hashlib.sha256(body).hexdigest()
    status, answer, fast = timed(env.ports["plain"], "POST", "/upload", body)
    assert status == 200 and digest in answer.decode() and fast < 1.0, fast
    # 2 KiB at once, then 2 KiB a second: the body (and its head) reaches the upstream after 3 s.
    status, answer, slow = timed(env.ports["slow"], "POST", "/upload", body)
    assert status == 200 and digest in answer.decode()
    assert 2.5 <= slow < 6.0, slow


def test_a_large_response_is_throttled_over_http(env: Env) -> None:
    size = 2 * WIDE_BPS
    status, data, fast = timed(env.ports["plain"], "GET", f"/bytes/{size}")
    assert status == 200 and len(data) == size and fast < 1.0, fast
    # 32 KiB at once, then the other 32 KiB (and the head) a second later.
    status, data, slow = timed(env.ports["wide"], "GET", f"/bytes/{size}")
    assert status == 200 and hashlib.sha256(data).hexdigest() == pattern_sha256(size)
    assert 0.9 <= slow < 4.0, slow


def test_pipelined_requests_on_one_connection_share_its_rate(env: Env) -> None:
    """One bucket per connection, not per request: the second response, answered while the first one's
    bytes are still held, gets no second burst; both arrive whole."""
    size = 2 * WIDE_BPS
    get = build_request("GET", f"/bytes/{size}", [("Host", HOST)])
    with Client(env.ports["wide"], timeout=20) as c:
        started = time.monotonic()
        c.send(get + get)
        bodies = [c.read_response().body, c.read_response().body]
        took = time.monotonic() - started
    assert [hashlib.sha256(b).hexdigest() for b in bodies] == [pattern_sha256(size)] * 2
    # 128 KiB and two heads: 32 KiB at once, then 32 KiB a second.
    assert 2.9 <= took < 6.0, took


def test_the_port_access_control_still_comes_first(env: Env) -> None:
    sock = socket.create_connection(("127.0.0.1", env.ports["wide"]), timeout=5, source_address=("127.0.0.2", 0))
    with sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: " + HOST.encode() + b"\r\n\r\n")
        try:
            got = sock.recv(100)
        except ConnectionResetError:
            got = b""
    assert got == b""  # refused before a byte was read, nothing answered


def test_both_directions_are_throttled_over_https_counting_the_encrypted_bytes(env: Env) -> None:
    size = 2 * WIDE_BPS
    status, data, took = timed(env.ports["tls"], "GET", f"/bytes/{size}", tls=True)
    assert status == 200 and hashlib.sha256(data).hexdigest() == pattern_sha256(size)
    assert 0.9 <= took < 4.0, took
    body = os.urandom(size)
    status, answer, took = timed(env.ports["tls"], "POST", "/upload", body, tls=True)
    assert status == 200 and hashlib.sha256(body).hexdigest() in answer.decode()
    assert 0.9 <= took < 4.0, took


def test_a_websocket_tunnel_keeps_the_throttle_after_its_upgrade(env: Env) -> None:
    with Client(env.ports["ws"], timeout=20) as c:
        c.send(handshake(WS_HOST))
        assert c.read_head().status == 101
        payload = os.urandom(2 * WIDE_BPS)
        started = time.monotonic()
        c.send(payload)
        assert read_exactly(c, len(payload)) == payload
        took = time.monotonic() - started
    # Up: what is left of the first second's worth after the handshake, then 32 KiB a second; the echo
    # comes back as it goes up.
    assert 0.9 <= took < 4.0, took


def listen_overflows() -> int:
    """The kernel's count of connection attempts dropped on a full accept queue (this network namespace)."""
    lines = Path("/proc/net/netstat").read_text().splitlines()
    for names, values in zip(lines[::2], lines[1::2], strict=True):
        if names.startswith("TcpExt:"):
            return int(dict(zip(names.split()[1:], values.split()[1:], strict=True))["ListenOverflows"])
    raise AssertionError("no TcpExt ListenOverflows in /proc/net/netstat")


def test_bytes_a_tcp_client_sends_before_the_upstream_is_reached_are_throttled_too(tmp_path: Path) -> None:
    """The upstream listens with an accept queue of one, kept full: the gateway's SYN is dropped and the
    kernel sends it again a second later, once the queue is emptied. Meanwhile the client has sent 256 KiB;
    at 64 KiB/s the tunnel has read only about a second's worth more than the first second's by then, so
    the rest reaches the upstream over the next seconds, not in one burst at the connect."""
    bps, size = 64 * 1024, 256 * 1024
    port = free_port()
    with socket.socket() as upstream:
        # Bound, not listening yet: the tunnels of the gateway's readiness probes are refused, not queued.
        upstream.bind(("127.0.0.1", 0))
        target = upstream.getsockname()[1]
        config = tmp_path / "tcp.yaml"
        gateway = {
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "Gateway",
            "metadata": {"name": "gw", "namespace": NS},
            "spec": {"gatewayClassName": "fsmfast", "listeners": [{"name": "tcp", "protocol": "TCP", "port": port}]},
        }
        config.write_text(
            documents(
                to_yaml(gateway),
                service("late", 7000, target, namespace=NS),
                endpoint_slice("late", target, namespace=NS),
                "apiVersion: gateway.networking.k8s.io/v1alpha2\nkind: TCPRoute\n"
                f"metadata: {{name: tcp, namespace: {NS}}}\n"
                "spec: {parentRefs: [{name: gw}], rules: [{backendRefs: [{name: late, port: 7000}]}]}\n",
                "apiVersion: gateway.flomesh.io/v1alpha1\nkind: RateLimitPolicy\n"
                f"metadata: {{name: bps, namespace: {NS}}}\n"
                "spec:\n  targetRef: {group: gateway.networking.k8s.io, kind: Gateway, name: gw}\n"
                f"  ports: [{{port: {port}, bps: {bps}}}]\n",
            )
        )
        with Gateway(config, [port], workers=1):
            # The readiness probes' tunnels must be over (refused) before the upstream listens: a
            # connection of ours, accepted after theirs, is closed once its own connect is refused.
            with socket.create_connection(("127.0.0.1", port), timeout=5) as probe:
                assert probe.recv(1) == b""
            upstream.listen(0)
            # Fill the accept queue: connect until an attempt is dropped.
            fillers: list[socket.socket] = []
            while True:
                filler = socket.socket()
                filler.settimeout(0.3)
                try:
                    filler.connect(("127.0.0.1", target))
                except TimeoutError:
                    filler.close()
                    break
                fillers.append(filler)
            dropped = listen_overflows()
            client = socket.create_connection(("127.0.0.1", port), timeout=20)
            started = time.monotonic()
            sender = ThreadPoolExecutor(1).submit(client.sendall, os.urandom(size))
            wait_for(lambda: listen_overflows() > dropped, 5, "the gateway's connect to the upstream dropped")
            upstream.setblocking(False)
            while True:  # empty the queue: the gateway's next SYN gets in
                try:
                    upstream.accept()[0].close()
                except BlockingIOError:
                    break
            upstream.setblocking(True)
            upstream.settimeout(10)
            conn, _ = upstream.accept()
            connected = time.monotonic() - started
            arrived: list[tuple[float, int]] = []
            got = 0
            with conn:
                conn.settimeout(20)
                while got < size:
                    data = conn.recv(1 << 20)
                    assert data, f"only {got} of {size} bytes arrived"
                    got += len(data)
                    arrived.append((time.monotonic() - started, got))
            sender.result(10)
            client.close()
            for filler in fillers:
                filler.close()
    assert connected >= 0.8, f"the upstream was reached after {connected:.2f}s: the test did not hold it off"
    # By the connect, the tunnel had read at most the first second's worth and bps a second since (what
    # comes within a tenth of a second of the connect is that burst); then bps a second.
    burst = max(n for t, n in arrived if t < connected + 0.1)
    assert burst <= bps * (connected + 0.1 + 1) + 64 * 1024, (connected, burst)
    last = arrived[-1][0]
    assert 2.5 <= last < 6.0, (connected, last)


def test_a_reader_behind_the_rate_is_not_an_upstream_timeout_and_a_stuck_one_is_cut(tmp_path: Path) -> None:
    """The response timeout counts upstream silence, but the upstream is not read while the client is
    behind (its writes paused, here by the port's rate): a response whose one upstream read takes longer
    than the timeout to go out at the rate still arrives whole, while a client that takes nothing at all
    is cut once the timeout passes, with its own reason, not the upstream's."""
    throttled, plain = free_port(), free_port()
    size = 256 * 1024
    with Upstream("u", echo_all=True) as up:
        config = tmp_path / "gw.yaml"
        gateway = {
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "Gateway",
            "metadata": {"name": "gw", "namespace": NS},
            "spec": {
                "gatewayClassName": "fsmfast",
                "listeners": [{"name": n, "protocol": "HTTP", "port": p} for n, p in (("t", throttled), ("p", plain))],
            },
        }
        config.write_text(
            documents(
                to_yaml(gateway),
                service("svc", 80, up.port, namespace=NS),
                endpoint_slice("svc", up.port, namespace=NS),
                route("r", HOST, "svc"),
                "apiVersion: gateway.flomesh.io/v1alpha1\nkind: RateLimitPolicy\n"
                f"metadata: {{name: bps, namespace: {NS}}}\n"
                "spec:\n  targetRef: {group: gateway.networking.k8s.io, kind: Gateway, name: gw}\n"
                f"  ports: [{{port: {throttled}, bps: {WIDE_BPS * 2}}}]\n",
            )
        )
        with Gateway(config, [throttled, plain], workers=1, args=["--response-timeout", "1"]) as gw:
            # 64 KiB at once, then 64 KiB a second: about 3 s for what may be one upstream read.
            status, data, took = timed(throttled, "GET", f"/bytes/{size}")
            assert status == 200 and hashlib.sha256(data).hexdigest() == pattern_sha256(size)
            assert took >= 2.5, took
            # A client that asks for 64 MiB and reads nothing: cut after about the response timeout.
            path = f"/bytes/{64 * 1024 * 1024}"
            sock = socket.create_connection(("127.0.0.1", plain), timeout=10)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            with sock:
                sock.sendall(build_request("GET", path, [("Host", HOST)]))

                def cut() -> dict[str, object] | None:
                    return next((e for e in gw.access_log() if e.get("path") == path), None)

                entry = wait_for(cut, 15, "the stuck client's access-log entry")
            assert entry["reason"] == "downstream_send_timeout", entry
            logged = [e for e in gw.access_log() if e.get("path") == f"/bytes/{size}"]
            assert [e["status"] for e in logged] == [200] and not logged[0].get("reason"), logged
