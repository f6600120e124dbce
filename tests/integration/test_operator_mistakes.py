"""Operator mistakes, with real gateways: a second instance on a taken port, a stop that must close
the door at once, a pidfile left behind by a crash.

nginx is the reference: a second nginx on a taken port exits with "Address already in use", and
a graceful quit refuses new connections at once while in-flight requests finish.
"""

from __future__ import annotations

import errno
import http.client
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fsmfast.errors import EXIT_BIND, EXIT_OK
from tests.integration.test_prefork import get
from tests.support import manifests
from tests.support.procs import Gateway, child_env, free_port, wait_for
from tests.support.upstreams import Upstream

pytestmark = pytest.mark.slow

NS = "mistakes"


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    with Upstream("origin") as up:
        yield up


def write_config(path: Path, ports: list[int], upstream_port: int) -> Path:
    """A Gateway with one HTTP listener per port, every path routed to ``upstream_port``."""
    listeners = "".join(f"    - {{name: http-{p}, protocol: HTTP, port: {p}}}\n" for p in ports)
    gateway = (
        "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\n"
        f"metadata: {{name: gw, namespace: {NS}}}\n"
        f"spec:\n  gatewayClassName: {manifests.GATEWAY_CLASS}\n  listeners:\n{listeners}"
    )
    route = (
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\n"
        f"metadata: {{name: r, namespace: {NS}}}\n"
        "spec:\n  parentRefs: [{name: gw}]\n"
        "  rules: [{backendRefs: [{name: origin, port: 80}]}]\n"
    )
    path.write_text(
        manifests.documents(
            gateway,
            route,
            manifests.service("origin", 80, upstream_port, namespace=NS),
            manifests.endpoint_slice("origin", upstream_port, namespace=NS),
        )
    )
    return path


def start_run(*args: str) -> subprocess.Popen[str]:
    """``python -m fsmfast run ARGS`` on loopback, output captured; the caller kills its group."""
    cmd = [sys.executable, "-m", "fsmfast", "run", "--listen-address", "127.0.0.1", *args]
    return subprocess.Popen(
        cmd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=child_env(),
        start_new_session=True,
    )


def finish(proc: subprocess.Popen[str], timeout: float) -> tuple[int | None, str]:
    """Its exit code, or None (then it is killed) when it still runs after ``timeout``; and its stderr."""
    try:
        _, err = proc.communicate(timeout=timeout)
        return proc.returncode, err
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        _, err = proc.communicate(timeout=10)
        return None, err


# -- a second instance --------------------------------------------------------------------------------


@pytest.mark.timeout(90)
def test_second_instance_on_the_same_port_is_refused(tmp_path: Path, upstream: Upstream) -> None:
    port = free_port()
    first_cfg = write_config(tmp_path / "first.yaml", [port], upstream.port)
    # The second one routes nowhere: any request it took would fail with a 5xx.
    second_cfg = write_config(tmp_path / "second.yaml", [port], free_port())
    with Gateway(first_cfg, [port], workers=2) as gw:
        assert get(port, "/echo") == 200
        second = start_run("-c", str(second_cfg), "--workers", "2")
        try:
            # Requests run while the second instance exists (exiting, or serving if it was let in).
            time.sleep(1.0)
            statuses = [get(port, "/echo") for _ in range(50)]
        finally:
            code, err = finish(second, timeout=15)
        assert statuses == [200] * 50, err
        assert code == EXIT_BIND, err
        assert f"cannot listen on 127.0.0.1:{port}: Address already in use by pid {gw.pid} (" in err
        assert "-m fsmfast run -c " + str(first_cfg) in err
        assert "booted worker" not in err
        assert len(gw.access_log(min_entries=51)) == 51  # every request reached the first instance


@pytest.mark.timeout(90)
def test_reload_adding_a_port_taken_by_another_instance_fails(tmp_path: Path, upstream: Upstream) -> None:
    ours, theirs = free_port(), free_port()
    cfg = write_config(tmp_path / "ours.yaml", [ours], upstream.port)
    other_cfg = write_config(tmp_path / "theirs.yaml", [theirs], upstream.port)
    with Gateway(other_cfg, [theirs], workers=1) as other, Gateway(cfg, [ours], workers=2) as gw:
        assert get(ours, "/echo") == 200
        write_config(cfg, [ours, theirs], upstream.port)
        line = gw.reload(expect="reload failed")
        assert "keeping generation 1" in line
        assert f"cannot listen on 127.0.0.1:{theirs}: Address already in use by pid {other.pid} (" in line
        # The old generation serves on; the other instance keeps its port to itself.
        assert [get(ours, "/echo") for _ in range(20)] == [200] * 20
        assert [get(theirs, "/echo") for _ in range(20)] == [200] * 20
        assert len(other.access_log(min_entries=20)) == 20
        assert len(gw.access_log(min_entries=21)) == 21
        # All or nothing: no worker was pushed anything, and the next good reload is generation 2.
        write_config(cfg, [ours], upstream.port)
        assert "reloaded: generation 2" in gw.reload()


# -- a graceful stop closes the door --------------------------------------------------------------------


def connect_outcome(port: int) -> str:
    """``refused``, or ``accepted`` when the kernel completed the handshake."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2.0):
            return "accepted"
    except ConnectionRefusedError:
        return "refused"
    except OSError as e:
        return errno.errorcode.get(e.errno or 0, str(e))


@pytest.mark.timeout(60)
def test_sigterm_refuses_new_connections_while_in_flight_finish(tmp_path: Path, upstream: Upstream) -> None:
    port = free_port()
    cfg = write_config(tmp_path / "gw.yaml", [port], upstream.port)
    with Gateway(cfg, [port], workers=2, args=["--graceful-timeout", "10"]) as gw:
        assert get(port, "/echo") == 200
        outcome: list[int | str] = []

        def slow() -> None:
            try:
                outcome.append(get(port, "/slow?s=3", timeout=15))
            except (OSError, http.client.HTTPException) as e:
                outcome.append(f"{type(e).__name__}: {e}")

        client = threading.Thread(target=slow)
        client.start()
        wait_for(lambda: upstream.requests_for("/slow"), 10, "the slow request at the upstream")
        os.kill(gw.pid, signal.SIGTERM)
        signalled = time.monotonic()
        # Every process closes its listening fds as it learns of the stop: within a blink, not
        # at the end of the drain.
        wait_for(lambda: connect_outcome(port) == "refused", 1.0, "new connections to be refused", interval=0.02)
        refused_after = time.monotonic() - signalled
        assert [connect_outcome(port) for _ in range(10)] == ["refused"] * 10
        assert gw.proc is not None and gw.proc.poll() is None, "the master must still be draining"
        client.join(15)
        assert outcome == [200]
        assert gw.stop(signal.SIGTERM, timeout=20) == EXIT_OK
        assert refused_after < 1.0
        assert "killing" not in gw.stderr_text()


# -- the pidfile --------------------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_stale_pidfile_naming_pid_1_does_not_stop_a_start(tmp_path: Path, upstream: Upstream) -> None:
    port = free_port()
    cfg = write_config(tmp_path / "gw.yaml", [port], upstream.port)
    pidfile = tmp_path / "fsmfast.pid"
    pidfile.write_text("1\n")  # pid 1 is alive and is no fsmfast master (the test would be moot otherwise)
    assert "fsmfast" not in Path("/proc/1/cmdline").read_bytes().decode(errors="replace")
    with Gateway(cfg, [port], workers=1, args=["--pid-file", str(pidfile)]) as gw:
        assert get(port, "/echo") == 200
        assert pidfile.read_text() == f"{gw.pid}\n"
        assert f"pidfile {pidfile} names pid 1 (" in gw.stderr_text()
        assert "which is not fsmfast; the file is stale, overwriting it" in gw.stderr_text()
        assert gw.stop(signal.SIGTERM, timeout=20) == EXIT_OK
    assert not pidfile.exists()


@pytest.mark.timeout(60)
def test_pidfile_of_a_running_master_refuses_to_start(tmp_path: Path, upstream: Upstream) -> None:
    port, other_port = free_port(), free_port()
    cfg = write_config(tmp_path / "gw.yaml", [port], upstream.port)
    other_cfg = write_config(tmp_path / "other.yaml", [other_port], upstream.port)
    pidfile = tmp_path / "fsmfast.pid"
    with Gateway(cfg, [port], workers=1, args=["--pid-file", str(pidfile)]) as gw:
        # Another port, so only the pidfile stands in the way.
        code, err = finish(start_run("-c", str(other_cfg), "--workers", "1", "--pid-file", str(pidfile)), 30)
        assert code == EXIT_BIND, err
        assert f"pidfile {pidfile} names running process pid {gw.pid} (" in err
        assert "-m fsmfast run" in err and "is fsmfast already running?" in err
        assert pidfile.read_text() == f"{gw.pid}\n"
        assert get(port, "/echo") == 200
