"""The admin listener's HTTP handling (fsmfast.admin.server + endpoints) on a real socket and selector."""

from __future__ import annotations

import http.client
import selectors
import socket
import threading
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from fsmfast.admin import endpoints
from fsmfast.admin.server import AdminServer, parse_head
from fsmfast.master.sockets import BindError


class View:
    def __init__(self) -> None:
        self.checks = [("config", True, ""), ("workers", True, "")]
        self.accepts: list[str | None] = []
        self.broken = False

    def readiness(self) -> list[tuple[str, bool, str]]:
        return self.checks

    def status(self) -> dict[str, Any]:
        return {"generation": 3, "workers": []}

    def config(self) -> dict[str, Any] | None:
        if self.broken:
            raise RuntimeError("a dump that fails")
        return {"generation": 3}

    def metrics(self, accept: str | None) -> tuple[str, bytes]:
        self.accepts.append(accept)
        return "text/plain; version=0.0.4; charset=utf-8", b"fsmfast_workers 2\n"


@pytest.fixture
def served() -> Iterator[tuple[AdminServer, View]]:
    view = View()
    sel = selectors.DefaultSelector()
    server = AdminServer(sel, "127.0.0.1", 0, endpoints.handler(view))
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            for key, _ in sel.select(0.05):
                key.data()

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield server, view
    finally:
        stop.set()
        thread.join(5)
        server.close()
        sel.close()


def get(
    server: AdminServer, path: str, method: str = "GET", headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", server.sock.getsockname()[1], timeout=5)
    try:
        conn.request(method, path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def test_healthz_and_unknown_paths(served: tuple[AdminServer, View]) -> None:
    server, _ = served
    assert get(server, "/healthz")[0] == 200
    status, headers, body = get(server, "/nope")
    assert status == 404 and b"/metrics" in body
    assert headers["connection"] == "close"


def test_readyz_follows_the_checks(served: tuple[AdminServer, View]) -> None:
    server, view = served
    assert get(server, "/readyz") == (200, get(server, "/readyz")[1], b"ready\n")
    view.checks = [("config", True, ""), ("not-stopping", False, "the gateway is stopping (draining)")]
    status, _, body = get(server, "/readyz")
    assert status == 503 and b"draining" in body
    status, _, body = get(server, "/readyz?verbose")
    assert status == 503
    assert b"[+]config ok" in body and b"[-]not-stopping failed" in body


def test_metrics_passes_the_accept_header(served: tuple[AdminServer, View]) -> None:
    server, view = served
    status, headers, body = get(server, "/metrics", headers={"Accept": "application/openmetrics-text"})
    assert status == 200 and body == b"fsmfast_workers 2\n"
    assert headers["content-type"].startswith("text/plain; version=0.0.4")
    assert view.accepts == ["application/openmetrics-text"]


def test_config_and_status_are_json(served: tuple[AdminServer, View]) -> None:
    server, _ = served
    status, headers, body = get(server, "/config")
    assert status == 200 and headers["content-type"] == "application/json" and orjson.loads(body) == {"generation": 3}
    assert orjson.loads(get(server, "/status")[2])["generation"] == 3


def test_only_get_and_head(served: tuple[AdminServer, View]) -> None:
    server, _ = served
    status, headers, _ = get(server, "/healthz", method="POST")
    assert status == 405 and headers["allow"] == "GET, HEAD"
    status, headers, body = get(server, "/status", method="HEAD")
    assert status == 200 and body == b"" and int(headers["content-length"]) > 0


def test_garbage_and_oversized_heads_get_400(served: tuple[AdminServer, View]) -> None:
    server, _ = served
    port = server.sock.getsockname()[1]
    for payload in (b"hello there\r\n\r\n", b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\n\r\n"):
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(payload)
            assert s.recv(100).startswith(b"HTTP/1.1 400 ")


def test_a_taken_port_names_the_holder() -> None:
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen(1)
    sel = selectors.DefaultSelector()
    try:
        with pytest.raises(BindError, match="Address already in use by pid"):
            AdminServer(sel, "127.0.0.1", holder.getsockname()[1], endpoints.handler(View()))
    finally:
        holder.close()
        sel.close()


def test_parse_head() -> None:
    req = parse_head(b"GET /readyz?verbose&x=1 HTTP/1.1\r\nHost: a\r\nAccept: text/plain")
    assert req is not None
    assert (req.method, req.path, req.headers["accept"]) == ("GET", "/readyz", "text/plain")
    assert req.query == {"verbose": [""], "x": ["1"]}
    assert parse_head(b"GET readyz HTTP/1.1") is None
    assert parse_head(b"GET / HTTP/1.1\r\nbad header") is None


def test_a_failing_page_is_500_and_the_server_lives_on(served: tuple[AdminServer, View]) -> None:
    server, view = served
    view.broken = True
    status, _, body = get(server, "/config")
    assert status == 500 and b"error log" in body
    assert get(server, "/healthz")[0] == 200
