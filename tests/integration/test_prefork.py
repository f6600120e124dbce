"""The prefork master with real processes: workers, respawn, reload, stop, and the CLI's exit codes.

Every gateway runs as ``python -m fsmfast run`` in its own session (``tests.support.procs.Gateway``), on a
free loopback port, with a hard timeout per test and a teardown that kills the whole process group. The
upstream is a stdlib threaded HTTP/1.1 server; ``/slow?s=X`` answers after X seconds.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml

from fsmfast import __version__
from fsmfast.errors import EXIT_BIND, EXIT_CONFIG, EXIT_OK, EXIT_USAGE, EXIT_WORKER_BOOT
from tests.support import manifests
from tests.support.procs import Gateway, child_env, free_port, wait_for

pytestmark = pytest.mark.slow

NS = "prefork"


# -- upstream ----------------------------------------------------------------------------------------


class _Echo(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Upstream

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        if url.path == "/slow":
            self.server.slow_started.set()
            time.sleep(float(parse_qs(url.query).get("s", ["1"])[0]))
        body = json.dumps({"path": self.path}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _Upstream(ThreadingHTTPServer):
    daemon_threads = True
    slow_started: threading.Event


@pytest.fixture
def upstream() -> Iterator[_Upstream]:
    server = _Upstream(("127.0.0.1", 0), _Echo)
    server.slow_started = threading.Event()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


# -- manifests ---------------------------------------------------------------------------------------


def write_config(
    path: Path, ports: list[int], upstream_port: int, prefixes: tuple[str, ...] = ("/",), invalid: bool = False
) -> Path:
    """A Gateway with one HTTP listener per port, an HTTPRoute sending ``prefixes`` to Service echo:80."""
    backend: dict[str, Any] = {"name": "echo"} if invalid else {"name": "echo", "port": 80}
    gateway = {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "Gateway",
        "metadata": {"name": "gw", "namespace": NS},
        "spec": {
            "gatewayClassName": manifests.GATEWAY_CLASS,
            "listeners": [{"name": f"http-{p}", "protocol": "HTTP", "port": p} for p in ports],
        },
    }
    route = {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": "echo", "namespace": NS},
        "spec": {
            "parentRefs": [{"name": "gw"}],
            "rules": [
                {"matches": [{"path": {"type": "PathPrefix", "value": p}}], "backendRefs": [backend]} for p in prefixes
            ],
        },
    }
    path.write_text(
        manifests.documents(
            yaml.safe_dump(gateway, sort_keys=False),
            yaml.safe_dump(route, sort_keys=False),
            manifests.service("echo", 80, upstream_port, namespace=NS),
            manifests.endpoint_slice("echo", upstream_port, namespace=NS),
        )
    )
    return path


# -- client helpers ----------------------------------------------------------------------------------


def get(port: int, path: str = "/", timeout: float = 5.0) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        conn.close()


def wait_status(port: int, path: str, status: int, timeout: float = 10.0) -> None:
    def ok() -> bool:
        try:
            return get(port, path, timeout=2.0) == status
        except OSError:
            return False

    wait_for(ok, timeout, f"GET {path} on port {port} -> {status}")


def keepalive_clients(port: int, clients: int, requests: int) -> list[int | str]:
    """``clients`` parallel keep-alive connections, ``requests`` GETs each; every status or error."""
    results: list[int | str] = []
    lock = threading.Lock()

    def one() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            for _ in range(requests):
                try:
                    conn.request("GET", "/")
                    resp = conn.getresponse()
                    resp.read()
                    outcome: int | str = resp.status
                except (OSError, http.client.HTTPException) as e:
                    outcome = f"{type(e).__name__}: {e}"
                with lock:
                    results.append(outcome)
        finally:
            conn.close()

    threads = [threading.Thread(target=one) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return results


def workers_where(gw: Gateway, ok: Callable[[list[int]], bool], timeout: float, what: str) -> list[int]:
    """The master's worker pids once ``ok(pids)`` holds."""

    def check() -> list[int] | None:
        pids = gw.worker_pids()
        return pids if ok(pids) else None

    return wait_for(check, timeout, what)


def two_workers(gw: Gateway) -> list[int]:
    return workers_where(gw, lambda pids: len(pids) == 2, 10, "two workers")


# -- serving and respawn -----------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_two_workers_both_serve(tmp_path: Path, upstream: _Upstream) -> None:
    port = free_port()
    cfg = write_config(tmp_path / "gw.yaml", [port], upstream.server_port)
    with Gateway(cfg, [port], workers=2) as gw:
        pids = two_workers(gw)
        results = keepalive_clients(port, clients=16, requests=5)
        assert results == [200] * 80
        # SO_REUSEPORT spreads 16 connections over both slots (all on one: p = 2**-15).
        served_by = {e["pid"] for e in gw.access_log(min_entries=80)}
        assert served_by == set(pids)
        assert f"listening on http://127.0.0.1:{port} (2 workers, SO_REUSEPORT)" in gw.stderr_text()


@pytest.mark.timeout(60)
def test_killed_worker_is_respawned_within_a_second(tmp_path: Path, upstream: _Upstream) -> None:
    port = free_port()
    cfg = write_config(tmp_path / "gw.yaml", [port], upstream.server_port)
    with Gateway(cfg, [port], workers=2) as gw:
        before = two_workers(gw)
        assert keepalive_clients(port, clients=4, requests=2) == [200] * 8
        victim = before[0]
        queued: list[int | str] = []
        # Connect at once: connections hashed to the dead worker's slot wait in its socket's queue
        # (the master keeps it open) and are answered by the replacement.
        clients = threading.Thread(target=lambda: queued.extend(keepalive_clients(port, clients=16, requests=1)))
        os.kill(victim, signal.SIGKILL)
        killed = time.monotonic()
        clients.start()
        after = workers_where(gw, lambda pids: len(pids) == 2 and victim not in pids, 1.0, "a replacement worker")
        assert time.monotonic() - killed < 1.0
        assert before[1] in after
        clients.join(20)
        assert queued == [200] * 16
        assert keepalive_clients(port, clients=8, requests=3) == [200] * 24
        assert f"(pid {victim}) was killed by SIGKILL; perhaps out of memory?" in gw.stderr_text()


# -- reload ------------------------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_sighup_serves_new_route_and_new_port(tmp_path: Path, upstream: _Upstream) -> None:
    port, extra = free_port(), free_port()
    cfg = write_config(tmp_path / "gw.yaml", [port], upstream.server_port, prefixes=("/a",))
    with Gateway(cfg, [port], workers=2) as gw:
        wait_status(port, "/a", 200)
        assert get(port, "/b") == 404
        write_config(cfg, [port, extra], upstream.server_port, prefixes=("/a", "/b"))
        line = gw.reload()
        assert "reloaded: generation 2" in line
        # Every worker acked before the master logged: all of them serve the new route now.
        assert all(status == 200 for status in (get(port, "/b") for _ in range(20)))
        assert all(status == 200 for status in (get(extra, "/a") for _ in range(20)))

        # Builds run in a short-lived child (fsmfast.master.forked_build): neither the master nor a
        # worker ever loads the YAML parser, before or after a reload.
        for pid in [gw.pid, *gw.worker_pids()]:
            assert "/yaml/" not in Path(f"/proc/{pid}/maps").read_text(), pid

        # Removing the port closes it everywhere once the workers switched.
        write_config(cfg, [port], upstream.server_port, prefixes=("/a",))
        assert "reloaded: generation 3" in gw.reload()
        assert get(port, "/b") == 404
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", extra), timeout=2).close()


@pytest.mark.timeout(60)
def test_sighup_with_invalid_config_keeps_serving(tmp_path: Path, upstream: _Upstream) -> None:
    port = free_port()
    cfg = write_config(tmp_path / "gw.yaml", [port], upstream.server_port, prefixes=("/a",))
    with Gateway(cfg, [port], workers=2) as gw:
        wait_status(port, "/a", 200)
        write_config(cfg, [port], upstream.server_port, prefixes=("/a", "/b"), invalid=True)
        assert "reload failed, keeping generation 1" in gw.reload(expect="reload failed")
        time.sleep(0.2)
        assert "backendRefs[0].port" in gw.stderr_text()
        assert [get(port, "/a") for _ in range(10)] == [200] * 10
        assert get(port, "/b") == 404
        assert len(gw.worker_pids()) == 2

        # The next good reload is generation 2: a refused one does not use up a number.
        write_config(cfg, [port], upstream.server_port, prefixes=("/a", "/b"))
        assert "reloaded: generation 2" in gw.reload()
        assert get(port, "/b") == 200


@pytest.mark.timeout(90)
def test_reloads_under_load_fail_no_request(tmp_path: Path, upstream: _Upstream) -> None:
    port = free_port()
    cfg = write_config(tmp_path / "gw.yaml", [port], upstream.server_port, prefixes=("/",))
    with Gateway(cfg, [port], workers=2) as gw:
        wait_status(port, "/", 200)
        two_workers(gw)
        stop = threading.Event()
        ok = [0] * 4
        failures: list[str] = []

        def load(i: int) -> None:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            try:
                while not stop.is_set():
                    try:
                        conn.request("GET", "/load")
                        resp = conn.getresponse()
                        resp.read()
                        if resp.status == 200:
                            ok[i] += 1
                        else:
                            failures.append(f"status {resp.status}")
                    except (OSError, http.client.HTTPException) as e:
                        failures.append(f"{type(e).__name__}: {e}")
                        conn.close()
                        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            finally:
                conn.close()

        threads = [threading.Thread(target=load, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        try:
            deadline = time.monotonic() + 2.5
            for generation in range(2, 7):
                prefixes = ("/", "/b") if generation % 2 else ("/",)
                write_config(cfg, [port], upstream.server_port, prefixes=prefixes)
                assert f"reloaded: generation {generation}" in gw.reload()
            time.sleep(max(0.0, deadline - time.monotonic()))
        finally:
            stop.set()
            for t in threads:
                t.join(15)
        assert failures == []
        assert all(n > 0 for n in ok), ok
        assert "did not ack" not in gw.stderr_text()


# -- stopping ----------------------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_sigterm_lets_in_flight_request_finish(tmp_path: Path, upstream: _Upstream) -> None:
    port = free_port()
    pidfile = tmp_path / "run" / "fsmfast.pid"
    pidfile.parent.mkdir()
    cfg = write_config(tmp_path / "gw.yaml", [port], upstream.server_port)
    with Gateway(cfg, [port], workers=2, args=["--pid-file", str(pidfile), "--graceful-timeout", "10"]) as gw:
        wait_status(port, "/", 200)
        assert pidfile.read_text().strip() == str(gw.pid)
        outcome: list[int | str] = []

        def slow() -> None:
            try:
                outcome.append(get(port, "/slow?s=2", timeout=15))
            except (OSError, http.client.HTTPException) as e:
                outcome.append(f"{type(e).__name__}: {e}")

        client = threading.Thread(target=slow)
        client.start()
        assert upstream.slow_started.wait(10), "the slow request never reached the upstream"
        started = time.monotonic()
        assert gw.stop(signal.SIGTERM, timeout=25) == EXIT_OK
        client.join(5)
        assert outcome == [200]
        # The master waited for the drain rather than killing the worker.
        assert time.monotonic() - started > 1.0
        assert not pidfile.exists()
        assert "killing" not in gw.stderr_text()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGQUIT])
def test_fast_stop(tmp_path: Path, upstream: _Upstream, sig: signal.Signals) -> None:
    port = free_port()
    pidfile = tmp_path / "fsmfast.pid"
    cfg = write_config(tmp_path / "gw.yaml", [port], upstream.server_port)
    with Gateway(cfg, [port], workers=2, args=["--pid-file", str(pidfile)]) as gw:
        wait_status(port, "/", 200)
        workers = two_workers(gw)
        started = time.monotonic()
        assert gw.stop(sig, timeout=15) == EXIT_OK
        assert time.monotonic() - started < 5.0
        assert not pidfile.exists()
        # The master reaped its workers before exiting.
        assert not any(os.path.exists(f"/proc/{pid}") for pid in workers)


# -- start-up failures -------------------------------------------------------------------------------


def run_fsmfast(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fsmfast", *args],
        capture_output=True,
        text=True,
        timeout=30,
        env=child_env(env),
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )


@pytest.mark.timeout(60)
def test_bind_failure_exits_4(tmp_path: Path, upstream: _Upstream) -> None:
    port = free_port()
    cfg = write_config(tmp_path / "gw.yaml", [port], upstream.server_port)
    # A plain listener without SO_REUSEPORT: the kernel refuses to share the port.
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", port))
        blocker.listen()
        done = run_fsmfast("run", "-c", str(cfg), "--workers", "2", "--listen-address", "127.0.0.1")
    assert done.returncode == EXIT_BIND
    assert f"cannot listen on 127.0.0.1:{port}: Address already in use" in done.stderr


@pytest.mark.timeout(60)
def test_worker_boot_failure_halts_the_master(tmp_path: Path, upstream: _Upstream) -> None:
    port = free_port()
    cfg = write_config(tmp_path / "gw.yaml", [port], upstream.server_port)
    # Break worker_main inside the child interpreter before the master imports it.
    code = (
        "import sys, fsmfast.worker.main as m\n"
        "def broken(boot):\n"
        "    raise RuntimeError('injected boot failure')\n"
        "m.worker_main = broken\n"
        "from fsmfast.cli import main\n"
        f"sys.exit(main(['run', '-c', {str(cfg)!r}, '--workers', '2', '--listen-address', '127.0.0.1']))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=30,
        env=child_env(),
        start_new_session=True,
    )
    assert done.returncode == EXIT_WORKER_BOOT
    assert "injected boot failure" in done.stderr
    assert "failed to boot; stopping the master instead of respawning" in done.stderr
    assert done.stderr.count("booted worker") == 2  # the first two, and no respawn


@pytest.mark.timeout(60)
def test_run_with_invalid_config_exits_1(tmp_path: Path, upstream: _Upstream) -> None:
    cfg = write_config(tmp_path / "gw.yaml", [free_port()], upstream.server_port, invalid=True)
    done = run_fsmfast("run", "-c", str(cfg), "--workers", "1", "--listen-address", "127.0.0.1")
    assert done.returncode == EXIT_CONFIG
    assert "backendRefs[0].port" in done.stderr
    assert "booted worker" not in done.stderr


# -- the CLI -----------------------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_check_valid(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "gw.yaml", [8000], 9999)
    done = run_fsmfast("check", "-c", str(cfg))
    assert done.returncode == EXIT_OK, done.stderr
    assert len(done.stdout.splitlines()) == 1
    assert "invalid" not in done.stderr


@pytest.mark.timeout(60)
def test_check_invalid(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "gw.yaml", [8000], 9999, prefixes=("/a", "/b"), invalid=True)
    done = run_fsmfast("check", "-c", str(cfg))
    assert done.returncode == EXIT_CONFIG
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert lines[0] == "fsmfast: configuration is invalid (2 errors):"
    assert "spec.rules[0].backendRefs[0].port" in lines[1]
    assert "spec.rules[1].backendRefs[0].port" in lines[2]


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    "args",
    [
        [],
        ["run"],
        ["run", "-c", "x", "--workers", "0"],
        ["run", "-c", "x", "--workers", "+2"],
        ["run", "-c", "x", "--listen-address", "localhost"],
        ["run", "-c", "x", "--graceful-timeout", "-1"],
        ["check"],
        ["frobnicate"],
    ],
)
def test_usage_errors_exit_2(args: list[str]) -> None:
    done = run_fsmfast(*args)
    assert done.returncode == EXIT_USAGE
    assert "usage: fsmfast" in done.stderr


@pytest.mark.timeout(60)
def test_bad_workers_env_is_a_usage_error(tmp_path: Path) -> None:
    done = run_fsmfast("run", "-c", str(tmp_path), env={"FSMFAST_WORKERS": "many"})
    assert done.returncode == EXIT_USAGE
    assert "$FSMFAST_WORKERS must be a positive integer" in done.stderr


@pytest.mark.timeout(60)
def test_version() -> None:
    done = run_fsmfast("--version")
    assert done.returncode == EXIT_OK
    assert done.stdout.strip() == f"fsmfast {__version__}"
