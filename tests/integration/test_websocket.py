"""WebSocket through the gateway: the 101 handshake, then an unparsed byte stream both ways
with back-pressure, only on routes whose HTTPRoute says ``fsmfast.io/websocket: "true"``.

The upstream here answers the handshake (RFC 6455 §4.2.2) and then works on raw bytes: it
echoes them, or floods the client, which is all a tunnel test needs (frames are the
endpoints' business; the gateway never looks inside them).
"""

from __future__ import annotations

import base64
import hashlib
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support import manifests
from tests.support.procs import Gateway, free_port, wait_for
from tests.support.upstreams import Client, build_request

NS = manifests.NAMESPACE
GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
KEY = base64.b64encode(b"sixteen byte key").decode()


def accept_key(key: str) -> str:
    return base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()


class WsUpstream:
    """Handshakes on any path but ``/refuse`` (403), then echoes; ``/flood?mb=N`` sends N MiB."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.heads: list[str] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._accept, daemon=True)

    def __enter__(self) -> WsUpstream:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(2)
        self.sock.close()

    def _accept(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        conn.settimeout(30)
        buf = b""
        try:
            while True:
                while b"\r\n\r\n" not in buf:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buf += data
                head, _, buf = buf.partition(b"\r\n\r\n")
                text = head.decode("latin-1")
                self.heads.append(text)
                target = text.split(" ", 2)[1]
                headers = {
                    k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in text.split("\r\n")[1:])
                }
                if target == "/refuse" or headers.get("upgrade", "").lower() != "websocket":
                    conn.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
                    continue  # keep reading: anything else that arrives is recorded as a request
                accept = accept_key(headers["sec-websocket-key"])
                conn.sendall(
                    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                    b"Sec-WebSocket-Accept: " + accept.encode() + b"\r\n\r\n"
                )
                if target.startswith("/flood"):
                    mb = int(target.split("mb=")[1])
                    chunk = b"f" * 65536
                    for _ in range(mb * 16):
                        conn.sendall(chunk)
                    conn.shutdown(socket.SHUT_WR)
                if buf:
                    conn.sendall(buf)
                while True:
                    data = conn.recv(65536)
                    if not data:
                        return
                    conn.sendall(data)
        except OSError:
            return
        finally:
            conn.close()


def _doc(d: dict[str, Any]) -> str:
    return yaml.safe_dump(d, sort_keys=False)


@dataclass
class Env:
    gw: Gateway
    port: int
    up: WsUpstream


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    tmp = tmp_path_factory.mktemp("websocket")
    with ExitStack() as stack:
        up = stack.enter_context(WsUpstream())
        port = free_port()

        def route(name: str, host: str, annotations: dict[str, str]) -> str:
            return _doc(
                {
                    "apiVersion": "gateway.networking.k8s.io/v1",
                    "kind": "HTTPRoute",
                    "metadata": {"name": name, "namespace": NS, "annotations": annotations},
                    "spec": {
                        "parentRefs": [{"name": "gw"}],
                        "hostnames": [host],
                        "rules": [
                            {"name": "chat", "matches": [{"path": {"type": "PathPrefix", "value": "/chat"}}],
                             "backendRefs": [{"name": "svc-ws", "port": 80}]},
                            {"backendRefs": [{"name": "svc-ws", "port": 80}]},
                        ],
                    },
                }
            )  # fmt: skip

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
            ),
            manifests.service("svc-ws", 80, up.port),
            manifests.endpoint_slice("svc-ws", up.port),
            route("ws", "ws.test", {"fsmfast.io/websocket": "true"}),
            route("plain", "plain.test", {}),
            route("some", "some.test", {"fsmfast.io/websocket": "chat"}),
            _doc(
                {
                    "apiVersion": "gateway.networking.k8s.io/v1",
                    "kind": "HTTPRoute",
                    "metadata": {"name": "mod", "namespace": NS, "annotations": {"fsmfast.io/websocket": "true"}},
                    "spec": {
                        "parentRefs": [{"name": "gw"}],
                        "hostnames": ["mod.test"],
                        "rules": [
                            {
                                "backendRefs": [{"name": "svc-ws", "port": 80}],
                                "filters": [
                                    {
                                        "type": "RequestHeaderModifier",
                                        "requestHeaderModifier": {"add": [{"name": "X-Via-Gateway", "value": "ws"}]},
                                    },
                                    {
                                        "type": "ResponseHeaderModifier",
                                        "responseHeaderModifier": {"set": [{"name": "X-Tunnel", "value": "fsmfast"}]},
                                    },
                                ],
                            }
                        ],
                    },
                }
            ),
        ]
        config = tmp / "gw.yaml"
        config.write_text(manifests.documents(*docs))
        gw = stack.enter_context(Gateway(config, [port], args=("--response-timeout", "2")))
        yield Env(gw, port, up)


def handshake(host: str, path: str = "/chat") -> bytes:
    return build_request(
        "GET",
        path,
        [
            ("Host", host),
            ("Connection", "Upgrade"),
            ("Upgrade", "websocket"),
            ("Sec-WebSocket-Key", KEY),
            ("Sec-WebSocket-Version", "13"),
        ],
    )


def read_exactly(c: Client, n: int) -> bytes:
    out = bytearray(c.reader.buf)
    c.reader.buf.clear()
    while len(out) < n:
        data = c.sock.recv(min(1 << 20, n - len(out)))
        if not data:
            break
        out += data
    return bytes(out)


@pytest.mark.timeout(30)
def test_handshake_and_echo_both_ways(env: Env) -> None:
    with Client(env.port) as c:
        # The first bytes go right behind the handshake, before the 101: they are held, not lost.
        c.send(handshake("ws.test") + b"early bytes|")
        resp = c.read_head()
        assert resp.status == 101, resp
        assert resp.header("Sec-WebSocket-Accept") == accept_key(KEY)
        assert "upgrade" in resp.tokens("connection") and resp.tokens("upgrade") == ["websocket"]
        assert read_exactly(c, 12) == b"early bytes|"
        for size in (1, 1000, 300_000):
            payload = os.urandom(size)
            c.send(payload)
            assert read_exactly(c, size) == payload
    head = env.up.heads[-1]
    assert "Upgrade: websocket" in head and "Connection: upgrade" in head
    assert f"Sec-WebSocket-Key: {KEY}" in head


@pytest.mark.timeout(30)
def test_header_modifiers_apply_to_the_handshake(env: Env) -> None:
    # Both filters of the route apply to the upgrade like to any request: the 101 is a response.
    with Client(env.port) as c:
        c.send(handshake("mod.test"))
        resp = c.read_head()
        assert resp.status == 101, resp
        assert resp.header_all("X-Tunnel") == ["fsmfast"]
        assert resp.header("Sec-WebSocket-Accept") == accept_key(KEY)
        assert "upgrade" in resp.tokens("connection") and resp.tokens("upgrade") == ["websocket"]
        c.send(b"after the modified 101")
        assert read_exactly(c, 22) == b"after the modified 101"
    assert "X-Via-Gateway: ws" in env.up.heads[-1]


@pytest.mark.timeout(60)
def test_large_transfer_with_a_slow_reader_is_back_pressured(env: Env) -> None:
    mb = 64
    pids = env.gw.worker_pids()
    before = sum(_rss(pid) for pid in pids)
    with Client(env.port, rcvbuf=64 * 1024) as c:
        c.send(handshake("ws.test", f"/flood?mb={mb}"))
        assert c.read_head().status == 101
        time.sleep(1.5)  # not reading: the gateway must stop reading the upstream, not buffer it all
        grown = sum(_rss(pid) for pid in pids) - before
        total = len(read_exactly(c, mb * 1024 * 1024))
        assert total == mb * 1024 * 1024
    assert grown < 24 * 1024 * 1024, f"worker RSS grew {grown >> 20} MiB while {mb} MiB waited upstream"


def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


@pytest.mark.timeout(30)
def test_route_without_the_annotation_strips_the_upgrade(env: Env) -> None:
    before = len(env.up.heads)
    with Client(env.port) as c:
        c.send(handshake("plain.test") + b"GET /smuggled HTTP/1.1\r\nHost: plain.test\r\n\r\n")
        resp = c.read_response()
        assert resp.status == 403  # the upstream's answer to a plain GET: no Upgrade reached it
        assert c.closed_by_peer(3)
    heads = env.up.heads[before:]
    assert len(heads) == 1 and "Upgrade" not in heads[0], heads


@pytest.mark.timeout(30)
def test_rule_level_annotation(env: Env) -> None:
    with Client(env.port) as c:
        c.send(handshake("some.test", "/chat"))
        assert c.read_head().status == 101
    before = len(env.up.heads)
    with Client(env.port) as c:
        c.send(handshake("some.test", "/other"))
        assert c.read_response().status == 403
    assert "Upgrade" not in env.up.heads[before]


@pytest.mark.timeout(30)
def test_refused_upgrade_never_forwards_the_held_bytes(env: Env) -> None:
    before = len(env.up.heads)
    with Client(env.port) as c:
        c.send(handshake("ws.test", "/refuse") + b"GET /smuggled HTTP/1.1\r\nHost: ws.test\r\n\r\n")
        resp = c.read_response()
        assert resp.status == 403
        assert "close" in resp.tokens("connection")
        assert c.closed_by_peer(3)
    time.sleep(0.3)
    assert [h.split("\r\n")[0] for h in env.up.heads[before:]] == ["GET /refuse HTTP/1.1"]


@pytest.mark.timeout(30)
def test_idle_tunnel_is_closed_and_logged(env: Env) -> None:
    with Client(env.port) as c:
        c.send(handshake("ws.test", "/chat?idle"))
        assert c.read_head().status == 101
        t0 = time.monotonic()
        assert c.closed_by_peer(8)
        assert 1.5 < time.monotonic() - t0 < 6
    entry = wait_for(
        lambda: next((e for e in env.gw.access_log() if e.get("path") == "/chat?idle"), None), 5, "the tunnel's log"
    )
    assert entry["status"] == 101 and entry["reason"] == "tunnel_idle_timeout"
    # The tunnel's line carries the request id its handshake took to the upstream.
    head = next(h for h in env.up.heads if h.startswith("GET /chat?idle "))
    assert f"\r\nX-Request-Id: {entry['request_id']}\r\n" in head + "\r\n", head
