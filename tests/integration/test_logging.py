"""The gateway's logs under abuse, against real gateways whose stdout and stderr are pipes.

- a pipe nobody reads as stdout (the access log), or as stdout and stderr both, pre-filled: every
  request is still answered; what was written is whole lines only, and once the pipe is drained
  each worker says how many lines it dropped, so written + dropped = requests;
- a flood of failed TLS handshakes: a bounded number of error-log lines, then one summary line
  per worker counting the rest; bytes that are not TLS at all are not logged at the default level;
- a 414 for a 60 KB request-target: the access-log line is cut to fit one atomic write.
"""

from __future__ import annotations

import json
import os
import re
import select
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support import manifests as m
from tests.support.pki import Pki
from tests.support.procs import Gateway, free_port, wait_for
from tests.support.upstreams import Client, Upstream, raw_exchange

NS = m.NAMESPACE
HOST = [("Host", "h.test")]
REQUESTS = 5000
# Long enough that 5,000 lines overflow both the pipe and the workers' buffers (1 MiB each).
LONG = "/echo?" + "q" * 1500
ERROR_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \[(master|worker \d+) \d+\] [A-Z]+ ")
SUMMARY = re.compile(r"\.\.\. and ([\d,]+) more like '(.*)' in the last (\d+) s$")


def _config(path: Path, up: Upstream, http: int, https: int | None = None, pki: Pki | None = None) -> Path:
    listeners = [{"name": "http", "protocol": "HTTP", "port": http}]
    docs = [m.service("svc", 80, up.port), m.endpoint_slice("svc", up.port)]
    if https is not None:
        assert pki is not None
        listeners.append(
            {"name": "https", "protocol": "HTTPS", "port": https, "tls": {"certificateRefs": [{"name": "cert"}]}}
        )
        docs.append(m.tls_secret("cert", pki.server_cert, pki.server_key))
    gateway = {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "Gateway",
        "metadata": {"name": "gw", "namespace": NS},
        "spec": {"gatewayClassName": "fsmfast", "listeners": listeners},
    }
    route = (
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\n"
        f"metadata: {{name: r, namespace: {NS}}}\n"
        "spec: {parentRefs: [{name: gw}], rules: [{backendRefs: [{name: svc, port: 80}]}]}\n"
    )
    path.write_text(m.documents(json.dumps(gateway), route, *docs))
    return path


@pytest.fixture(scope="module")
def upstream() -> Iterator[Upstream]:
    with Upstream("logs") as up:
        yield up


def _load(port: int, n: int, target: str, connections: int = 4) -> tuple[list[int], float]:
    """``n`` keep-alive GETs over ``connections`` parallel connections: every status, and the time."""
    statuses: list[list[int]] = [[] for _ in range(connections)]
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            with Client(port, timeout=10) as client:
                for _ in range(n // connections):
                    statuses[i].append(client.request("GET", target, HOST).status)
        except BaseException as exc:  # reported by the caller
            errors.append(exc)

    t0 = time.monotonic()
    threads = [threading.Thread(target=run, args=(i,)) for i in range(connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors[0]
    return [s for per in statuses for s in per], time.monotonic() - t0


def _drain(fd: int, done: Callable[[list[bytes]], bool], timeout: float) -> bytes:
    """Reads ``fd`` until ``done(whole lines so far)`` or ``timeout``; everything read."""
    data = bytearray()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                break
            data += chunk
        elif done(bytes(data).split(b"\n")[:-1]):
            break
    return bytes(data)


def _requests_and_drops(lines: list[bytes]) -> tuple[int, list[dict[str, Any]]]:
    """Access-log lines for requests, and the lines saying how many were dropped."""
    entries = [json.loads(x) for x in lines if x.startswith(b"{")]
    return sum(1 for e in entries if "status" in e), [e for e in entries if "dropped" in e]


def _accounted(lines: list[bytes]) -> bool:
    logged, notices = _requests_and_drops(lines)
    return logged + sum(n["dropped"] for n in notices) >= REQUESTS


def _unread_pipe() -> tuple[int, int]:
    r, w = os.pipe()
    os.set_blocking(r, False)
    return r, w


def _fill(w: int) -> int:
    """Fills the pipe with whole lines until a write would block; the bytes written."""
    os.set_blocking(w, False)
    line = b"#" * 1023 + b"\n"
    total = 0
    try:
        while True:
            total += os.write(w, line)
    except BlockingIOError:
        pass
    os.set_blocking(w, True)
    return total


@pytest.mark.timeout(180)
def test_unread_stdout_costs_log_lines_not_requests(upstream: Upstream, tmp_path: Path) -> None:
    port = free_port()
    r, w = _unread_pipe()
    with ExitStack() as stack:
        stack.callback(os.close, r)
        gw = stack.enter_context(Gateway(_config(tmp_path / "gw.yaml", upstream, port), [port], workers=2, stdout=w))
        os.close(w)
        statuses, elapsed = _load(port, REQUESTS, LONG)
        assert statuses == [200] * REQUESTS
        assert elapsed < 60, f"{REQUESTS} requests took {elapsed:.1f}s"
        data = _drain(r, _accounted, 30)
        assert gw.proc is not None and gw.proc.poll() is None
    assert data.endswith(b"\n"), data[-200:]
    lines = data.split(b"\n")[:-1]
    for line in lines:
        json.loads(line)  # whole lines only: two workers' writes never interleave within one
    logged, notices = _requests_and_drops(lines)
    dropped = sum(n["dropped"] for n in notices)
    assert notices, "no line says how many lines were dropped"
    assert logged + dropped == REQUESTS, (logged, dropped)
    # More than the pipe holds (some 35 lines): a worker's buffer kept lines until it drained.
    assert logged >= 500, logged
    for notice in notices:
        assert notice["message"] == f"{notice['dropped']} access-log lines dropped: stdout not writable"


@pytest.mark.timeout(180)
def test_full_pipe_as_stdout_and_stderr_stalls_nothing(upstream: Upstream, tmp_path: Path) -> None:
    """Both logs on one pipe (``2>&1 | a stuck reader``), full before the gateway starts: the master
    logs its start-up lines into it, and without non-blocking writes would never fork a worker."""
    port = free_port()
    r, w = _unread_pipe()
    filled = _fill(w)
    with ExitStack() as stack:
        stack.callback(os.close, r)
        gw = stack.enter_context(
            Gateway(_config(tmp_path / "gw.yaml", upstream, port), [port], workers=2, stdout=w, stderr=w)
        )
        os.close(w)
        statuses, elapsed = _load(port, REQUESTS, LONG)
        assert statuses == [200] * REQUESTS
        assert elapsed < 60, f"{REQUESTS} requests took {elapsed:.1f}s"
        data = _drain(r, _accounted, 30)
        assert gw.proc is not None and gw.proc.poll() is None
    assert data.startswith(b"#" * 1023 + b"\n") and data.endswith(b"\n")
    lines = data[filled:].split(b"\n")[:-1]
    text = [x.decode() for x in lines if not x.startswith(b"{")]
    for line in lines:
        if line.startswith(b"{"):
            json.loads(line)
    for line in text:
        assert ERROR_LINE.match(line), f"not a whole error-log line: {line!r}"
    assert any("master started" in x for x in text), text
    assert any("booted worker 1" in x for x in text), text
    logged, notices = _requests_and_drops(lines)
    assert notices and logged + sum(n["dropped"] for n in notices) == REQUESTS


def _client_hello_tls10() -> bytes:
    """A TLS 1.0 ClientHello (one cipher, no extensions): the gateway wants TLS 1.2 at least, so
    the handshake fails with ``unsupported protocol``, a failure of a real TLS client, logged."""
    body = b"\x03\x01" + bytes(32) + b"\x00" + b"\x00\x02\x00\x2f" + b"\x01\x00"
    handshake = b"\x01" + len(body).to_bytes(3, "big") + body
    return b"\x16\x03\x01" + struct.pack(">H", len(handshake)) + handshake


def _hammer(port: int, payload: bytes, n: int) -> None:
    for _ in range(n):
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.sendall(payload)
            try:
                while sock.recv(4096):
                    pass
            except OSError:
                pass


@dataclass
class Flood:
    gw: Gateway
    http: int
    https: int


@pytest.fixture(scope="module")
def flood(upstream: Upstream, pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Flood]:
    http, https = free_port(), free_port()
    config = _config(tmp_path_factory.mktemp("flood") / "gw.yaml", upstream, http, https, pki)
    with Gateway(config, [http, https], workers=2) as gw:
        # The ports accept before the workers are forked: wait for the master's last start-up line, so the
        # tests below count only the lines their own traffic causes.
        wait_for(lambda: "serving: generation 1" in gw.stderr_text() or None, 15, "every worker serving")
        yield Flood(gw, http, https)


@pytest.mark.timeout(90)
def test_a_flood_of_failed_handshakes_is_summarized(flood: Flood) -> None:
    n = 2000
    before = flood.gw.stderr_text().count("\n")
    _hammer(flood.https, _client_hello_tls10(), n)
    template = "TLS handshake with %s%s failed: %s"

    def summarized() -> tuple[list[str], list[int]] | None:
        lines = flood.gw.stderr_text().splitlines()[before:]
        passed = [x for x in lines if "failed: unsupported protocol" in x]
        counts = [
            int(match.group(1).replace(",", ""))
            for x in lines
            if (match := SUMMARY.search(x)) is not None and match.group(2) == template
        ]
        return (passed, counts) if len(passed) + sum(counts) >= n else None

    deadline = time.monotonic() + 30  # the summary comes when the 10 s interval ends
    while (found := summarized()) is None and time.monotonic() < deadline:
        time.sleep(0.25)
    assert found is not None, flood.gw.stderr_text()[-3000:]
    passed, counts = found
    assert len(passed) <= 2 * 5  # five of a kind per worker per interval
    assert len(passed) + sum(counts) == n
    assert len(flood.gw.stderr_text().splitlines()[before:]) <= 2 * 5 + 2 * 2


@pytest.mark.timeout(60)
def test_bytes_that_are_not_tls_are_not_logged_by_default(flood: Flood) -> None:
    """Like nginx, whose info-level handshake errors its default error_log level hides."""
    before = len(flood.gw.stderr_text())
    _hammer(flood.https, b"GET / HTTP/1.1\r\nHost: h.test\r\n\r\n", 500)
    _hammer(flood.https, b"\x16\x03\x01\xff\xff" + os.urandom(200), 500)
    time.sleep(0.5)
    assert flood.gw.stderr_text()[before:] == ""


@pytest.mark.timeout(60)
def test_a_60kb_target_is_cut_in_the_access_log(flood: Flood) -> None:
    target = "/" + "a" * 60000
    raw, _ = raw_exchange(flood.http, f"GET {target} HTTP/1.1\r\nHost: h.test\r\n\r\n".encode(), timeout=5)
    assert raw.startswith(b"HTTP/1.1 414 ")
    entry = next(e for e in reversed(flood.gw.access_log(1)) if e["status"] == 414)
    assert entry["path"] == "/" + "a" * 2047 + f"...[cut from {len(target)}]"
    assert entry["method"] == "GET"
    assert max(len(x) for x in flood.gw.stdout_path.read_bytes().splitlines()) < 4096
