"""systemd: the shipped unit passes ``systemd-analyze``, and the master speaks sd_notify to a socket the
test owns, as systemd would provide it with ``Type=notify``.

``systemd-analyze verify`` checks that ExecStart's program exists, so it reads a copy of the unit
whose /usr/bin/fsmfast is this checkout's ``fsmfast`` script (or /bin/true where there is none).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import manifests
from tests.support.procs import Gateway, free_port
from tests.support.upstreams import Upstream

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "contrib" / "systemd" / "fsmfast.service"

needs_analyze = pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")


def unit_copy(tmp_path: Path) -> Path:
    script = Path(sys.executable).with_name("fsmfast")
    program = script if os.access(script, os.X_OK) else Path("/bin/true")
    copy = tmp_path / "fsmfast.service"
    copy.write_text(UNIT.read_text().replace("/usr/bin/fsmfast", str(program)))
    return copy


@needs_analyze
def test_unit_verifies(tmp_path: Path) -> None:
    unit = unit_copy(tmp_path)
    done = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)
    # verify exits 0 even for an unknown key or a value it cannot parse; it says so on stderr.
    assert done.returncode == 0 and done.stderr.strip() == "", done.stderr


@needs_analyze
def test_unit_hardening_score(tmp_path: Path) -> None:
    unit = unit_copy(tmp_path)
    # --threshold counts in tenths: at most 3.0 ("OK"); the unit is at 2.8, nginx's Debian unit at 9.6.
    done = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", "--threshold=30", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr


def test_unit_is_the_one_documented() -> None:
    text = UNIT.read_text()
    for line in (
        "Type=notify",
        "NotifyAccess=main",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "KillMode=mixed",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "PrivateTmp=yes",
    ):
        assert f"\n{line}\n" in text, line
    assert "ExecStartPre=/usr/bin/fsmfast check -c /etc/fsmfast\n" in text
    assert "CAP_NET_BIND_SERVICE" in text.split("\nCapabilityBoundingSet=")[1].splitlines()[0]


class Listener:
    """The test's NOTIFY_SOCKET: a datagram socket, read message by message."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))

    def next(self, timeout: float) -> dict[str, str]:
        self.sock.settimeout(timeout)
        data = self.sock.recv(4096).decode()
        return dict(line.split("=", 1) for line in data.splitlines() if line)

    def until(self, key: str, timeout: float = 20.0) -> list[dict[str, str]]:
        """Messages up to and including the first with ``key``; TimeoutError if none comes."""
        seen: list[dict[str, str]] = []
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no {key} within {timeout:g}s; got {seen}")
            try:
                msg = self.next(remaining)
            except TimeoutError:
                continue
            seen.append(msg)
            if key in msg:
                return seen


@pytest.fixture
def notify(tmp_path: Path) -> Iterator[Listener]:
    listener = Listener(tmp_path / "notify.sock")
    yield listener
    listener.sock.close()


def environ(pid: int) -> list[str]:
    with open(f"/proc/{pid}/environ", "rb") as f:
        return [e.decode(errors="replace") for e in f.read().split(b"\0") if e]


def test_notify_ready_reload_stop(tmp_path: Path, notify: Listener) -> None:
    port = free_port()
    with Upstream("up", echo_all=True) as up:
        config = manifests.one_route(tmp_path / "gw.yaml", port, up.port)
        # No ports to wait for: READY=1 is what says the gateway serves.
        gw = Gateway(config, [], workers=2, env={"NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": "4000000"})
        with gw:
            ready = notify.until("READY")[-1]
            # Sent once every worker serves generation 1: /readyz agrees, and a request is answered at once.
            assert gw.admin("/readyz")[0] == 200
            with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
                s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                assert s.recv(12).startswith(b"HTTP/1.1 200")
            assert "STATUS" in ready

            workers = gw.worker_pids()
            assert len(workers) == 2
            assert any(e.startswith("NOTIFY_SOCKET=") for e in environ(gw.pid))
            for pid in workers:
                leaked = [e for e in environ(pid) if e.startswith(("NOTIFY_SOCKET=", "WATCHDOG_"))]
                assert not leaked, (pid, leaked)

            # WatchdogSec=4 (WATCHDOG_USEC): pings at least every 2 s from the master's loop.
            pings = notify.until("WATCHDOG", timeout=5)
            assert pings[-1]["WATCHDOG"] == "1"

            os.kill(gw.pid, signal.SIGHUP)
            before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
            msgs = [m for m in notify.until("RELOADING") if "WATCHDOG" not in m]
            reloading = msgs[-1]
            assert reloading["RELOADING"] == "1"
            assert abs(int(reloading["MONOTONIC_USEC"]) - before) < 5_000_000
            after = [m for m in notify.until("READY") if "WATCHDOG" not in m]
            assert "RELOADING" not in after[-1] and after[-1]["READY"] == "1"
            assert "generation 2" in after[-1].get("STATUS", "") or "generation 2" in json.dumps(after)

            gw.proc.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
            assert notify.until("STOPPING")[-1]["STOPPING"] == "1"
            assert gw.proc.wait(timeout=30) == 0  # type: ignore[union-attr]
