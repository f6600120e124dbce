"""fsmfast.master.notify: the sd_notify datagrams, read from a socket the test owns."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fsmfast.master.notify import Notifier, strip_env


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(2.0)
    yield sock, path
    sock.close()


def fields(sock: socket.socket) -> dict[str, str]:
    data = sock.recv(4096).decode()
    assert data.endswith("\n")
    return dict(line.split("=", 1) for line in data.splitlines())


def test_messages(listener: tuple[socket.socket, str]) -> None:
    sock, path = listener
    n = Notifier.from_env({"NOTIFY_SOCKET": path})
    assert n.enabled
    assert n.ready("generation 1, 2/2 workers")
    assert fields(sock) == {"READY": "1", "STATUS": "generation 1, 2/2 workers"}
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert n.reloading()
    got = fields(sock)
    assert got["RELOADING"] == "1"
    assert before <= int(got["MONOTONIC_USEC"]) <= time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert n.stopping()
    assert fields(sock) == {"STOPPING": "1"}
    assert n.status("draining")
    assert fields(sock) == {"STATUS": "draining"}
    assert n.watchdog()
    assert fields(sock) == {"WATCHDOG": "1"}
    n.close()


def test_abstract_socket() -> None:
    name = f"fsmfast-test-{os.getpid()}-{time.monotonic_ns()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(2.0)
        n = Notifier.from_env({"NOTIFY_SOCKET": "@" + name})
        assert n.ready()
        assert fields(sock) == {"READY": "1"}
        n.close()


def test_no_socket_is_a_no_op() -> None:
    n = Notifier.from_env({})
    assert not n.enabled
    assert not n.ready() and not n.reloading() and not n.stopping() and not n.watchdog()
    assert n.watchdog_interval() is None


def test_gone_listener_does_not_raise(tmp_path: Path) -> None:
    n = Notifier.from_env({"NOTIFY_SOCKET": str(tmp_path / "nobody-listens")})
    assert n.enabled and not n.ready()


def test_watchdog_interval() -> None:
    env = {"NOTIFY_SOCKET": "/run/x", "WATCHDOG_USEC": "30000000"}
    assert Notifier.from_env(env).watchdog_interval() == 15.0
    assert Notifier.from_env({**env, "WATCHDOG_PID": str(os.getpid())}).watchdog_interval() == 15.0
    # Meant for another process (the variables leaked from a parent).
    assert Notifier.from_env({**env, "WATCHDOG_PID": "1"}).watchdog_interval() is None
    assert Notifier.from_env({**env, "WATCHDOG_USEC": "junk"}).watchdog_interval() is None


def test_strip_env() -> None:
    env = {"NOTIFY_SOCKET": "/run/x", "WATCHDOG_USEC": "1", "WATCHDOG_PID": "2", "PATH": "/bin"}
    strip_env(env)
    assert env == {"PATH": "/bin"}


def test_strip_env_hides_the_variables_from_proc() -> None:
    """A forked worker shows the master's starting environment in /proc/<pid>/environ: zeroed there too."""
    script = """
import ctypes, json, os
from fsmfast.master.notify import strip_env
strip_env()
libc = ctypes.CDLL(None)
libc.getenv.restype = ctypes.c_char_p
with open("/proc/self/environ", "rb") as f:
    shown = [e.decode() for e in f.read().split(b"\\0") if e]
print(json.dumps({
    "shown": shown,
    "getenv": [libc.getenv(n) is not None for n in (b"NOTIFY_SOCKET", b"WATCHDOG_USEC", b"KEEP_ME")],
    "keep": os.environ.get("KEEP_ME"),
}))
"""
    env = {
        **os.environ,
        "NOTIFY_SOCKET": "/run/systemd/notify",
        "WATCHDOG_USEC": "30000000",
        "KEEP_ME": "yes",
        "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
    }
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True)
    got = json.loads(out.stdout)
    assert not [e for e in got["shown"] if e.startswith(("NOTIFY_SOCKET=", "WATCHDOG_"))], got["shown"]
    assert "KEEP_ME=yes" in got["shown"]
    assert got["getenv"] == [False, False, True]
    assert got["keep"] == "yes"
