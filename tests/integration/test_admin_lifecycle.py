"""The master's admin listener over the gateway's life, and the hung-worker watchdog, with real processes.

/healthz and /readyz through start and a graceful stop, /status after a reload, the admin port's own bind
errors, and a SIGSTOPped worker found by the watchdog and replaced. (/config and ``fsmfast status`` are in
test_admin.py; /metrics sums in test_metrics.py and test_prometheus.py.)
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from fsmfast.errors import EXIT_BIND
from tests.integration.test_prefork import get
from tests.support import manifests
from tests.support.procs import Gateway, child_env, free_port, wait_for

pytestmark = pytest.mark.slow


class _Slow(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        query = parse_qs(urlsplit(self.path).query)
        time.sleep(float(query.get("s", ["0"])[0]))
        body = b"ok\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def upstream() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Slow)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def status_json(gw: Gateway) -> dict[str, Any]:
    code, body = gw.admin("/status")
    assert code == 200
    result: dict[str, Any] = json.loads(body)
    return result


def test_health_and_readiness_through_start_reload_and_graceful_stop(tmp_path: Path, upstream: int) -> None:
    port = free_port()
    config = manifests.one_route(tmp_path / "gw.yaml", port, upstream)
    gw = Gateway(config, [port], workers=2, args=["--graceful-timeout", "10"]).start()
    try:
        assert gw.admin("/healthz") == (200, b"ok\n")
        wait_for(lambda: gw.admin("/readyz")[0] == 200 or None, 10, "readyz 200 once both workers serve")
        status = status_json(gw)
        assert status["state"] == "serving" and status["generation"] == 1 and status["last_reload"] is None
        assert sorted(w["slot"] for w in status["workers"]) == [0, 1]
        assert all(w["ready"] and w["rss_bytes"] > 1_000_000 for w in status["workers"])
        assert sorted(w["pid"] for w in status["workers"]) == sorted(gw.worker_pids())

        gw.reload()
        wait_for(lambda: gw.admin("/readyz")[0] == 200 or None, 10, "readyz 200 on generation 2")
        status = status_json(gw)
        assert status["generation"] == 2
        assert status["last_reload"]["result"] == "success" and status["last_reload"]["trigger"] == "signal"
        assert {w["generation"] for w in status["workers"]} == {2}

        # A request in flight keeps the workers draining after SIGTERM; meanwhile /readyz says so.
        done: list[int] = []
        slow = threading.Thread(target=lambda: done.append(get(port, "/slow?s=2", timeout=10)), daemon=True)
        slow.start()
        time.sleep(0.5)
        os.kill(gw.pid, signal.SIGTERM)
        _code, body = wait_for(lambda: ((r := gw.admin("/readyz"))[0] == 503 and r) or None, 5, "readyz 503")
        assert b"stopping" in body
        assert gw.admin("/healthz")[0] == 200  # the master itself is fine
        assert json.loads(gw.admin("/status")[1])["state"] == "draining"
        slow.join(10)
        assert done == [200]
        assert gw.proc is not None and gw.proc.wait(15) == 0
    finally:
        gw.close()


def test_a_failed_reload_is_in_status(tmp_path: Path, upstream: int) -> None:
    port = free_port()
    config = manifests.one_route(tmp_path / "gw.yaml", port, upstream)
    with Gateway(config, [port]) as gw:
        wait_for(lambda: gw.admin("/readyz")[0] == 200 or None, 10, "readyz 200")
        text = config.read_text()
        assert "{name: svc, port: 80}" in text
        config.write_text(text.replace("{name: svc, port: 80}", "{name: svc}"))
        gw.reload(expect="reload failed")
        status = status_json(gw)
        assert status["generation"] == 1
        reload = status["last_reload"]
        assert reload["result"] == "failure" and reload["generation"] == 1 and "port" in reload["error"]
        assert get(port, "/") == 200  # the old generation serves


def test_the_watchdog_replaces_a_hung_worker(tmp_path: Path, upstream: int) -> None:
    port = free_port()
    config = manifests.one_route(tmp_path / "gw.yaml", port, upstream)
    with Gateway(config, [port], workers=2, args=["--worker-timeout", "1"]) as gw:
        wait_for(lambda: gw.admin("/readyz")[0] == 200 or None, 10, "readyz 200")
        # Twice the timeout and more, beating: nobody is replaced.
        before = sorted(gw.worker_pids())
        time.sleep(2.5)
        assert sorted(gw.worker_pids()) == before
        hung = before[0]
        os.kill(hung, signal.SIGSTOP)
        wait_for(lambda: (hung not in gw.worker_pids() and len(gw.worker_pids()) == 2) or None, 15, "a replacement")
        text = gw.stderr_text()
        assert f"(pid {hung}) has not answered for" in text and "aborting it" in text
        wait_for(lambda: gw.admin("/readyz")[0] == 200 or None, 10, "readyz 200 again")
        _, body = gw.admin("/metrics")
        assert 'fsmfast_worker_restarts_total{reason="watchdog"} 1' in body.decode()
        assert get(port, "/") == 200


def test_admin_port_taken_or_off(tmp_path: Path, upstream: int) -> None:
    port = free_port()
    config = manifests.one_route(tmp_path / "gw.yaml", port, upstream)
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen(1)
    try:
        taken = f"127.0.0.1:{holder.getsockname()[1]}"
        cmd = [sys.executable, "-m", "fsmfast", "run", "-c", str(config), "-w", "1", "--listen-address", "127.0.0.1"]
        proc = subprocess.run(
            [*cmd, "--admin-address", taken], capture_output=True, text=True, timeout=30, env=child_env()
        )
        assert proc.returncode == EXIT_BIND
        assert f"cannot listen on {taken}: Address already in use by pid {os.getpid()}" in proc.stderr
        assert not port_open(port)  # nothing was left serving
    finally:
        holder.close()
    with Gateway(config, [port], args=["--admin-address", ""]) as gw:
        assert get(port, "/") == 200
        assert "admin listener" not in gw.stderr_text()
        assert listening_ports(gw.pid) == {port}
    with Gateway(config, [port]) as gw:
        assert listening_ports(gw.pid) == {port, gw.admin_port}
        # The workers do not hold the admin port: it would outlive a master that died.
        assert all(listening_ports(pid) == {port} for pid in gw.worker_pids())


def listening_ports(pid: int) -> set[int]:
    """The TCP ports ``pid`` holds a listening socket on (/proc/net/tcp, state 0A)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if link.startswith("socket:["):
            inodes.add(link[8:-1])
    ports = set()
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0
