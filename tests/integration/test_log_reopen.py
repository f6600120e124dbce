"""``--access-log``/``--error-log`` and SIGUSR1: rotated under load, every request's line is in exactly one
file, whole; the workers write to the new files afterwards (their fds say so in /proc); logrotate with
the shipped configuration does the same.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from tests.support import manifests
from tests.support.clients import ClientThreads
from tests.support.procs import Gateway, free_port, wait_for
from tests.support.upstreams import Upstream

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


class Load(ClientThreads):
    """Clients sending numbered requests until stopped; keeps the numbers answered 200."""

    def __init__(self, port: int, clients: int = 4) -> None:
        super().__init__(port, clients)
        self.done: list[str] = []
        self.errors: list[str] = []

    def _run(self, client: int) -> None:
        n = 0
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        while not self.stopping.is_set():
            n += 1
            tag = f"{client}-{n}"
            try:
                conn.request("GET", f"/req/{tag}")
                resp = conn.getresponse()
                resp.read()
                if resp.status == 200:
                    self.done.append(tag)
                else:
                    self.errors.append(f"{tag}: {resp.status}")
            except (OSError, http.client.HTTPException) as exc:
                self.errors.append(f"{tag}: {exc!r}")
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
            if n % 50 == 0:  # new connections too, landing on either worker
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        conn.close()


def fd_targets(pid: int) -> set[str]:
    out = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            out.add(os.readlink(f"/proc/{pid}/fd/{fd}"))
        except OSError:
            pass
    return out


def access_tags(files: list[Path]) -> list[str]:
    tags = []
    for path in files:
        data = path.read_bytes()
        assert not data or data.endswith(b"\n"), f"{path.name} ends inside a line"
        for line in data.splitlines():
            entry = json.loads(line)  # every line whole and valid
            if entry.get("path", "").startswith("/req/"):
                tags.append(entry["path"].removeprefix("/req/"))
    return tags


def adopted(pid: int, access: Path) -> bool:
    """The worker writes to the file now at ``access``, and to none of the renamed ones."""
    targets = fd_targets(pid)
    return str(access) in targets and not [t for t in targets if t.startswith(f"{access}.")]


def test_sigusr1_under_load_loses_and_tears_nothing(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    access, error = logs / "access.log", logs / "error.log"
    port = free_port()
    with Upstream("up", echo_all=True) as up:
        cfg = manifests.one_route(tmp_path / "gw.yaml", port, up.port)
        args = ["--access-log", str(access), "--error-log", str(error)]
        with Gateway(cfg, [port], workers=2, args=args) as gw:
            assert gw.stdout_path.read_text() == ""
            workers = gw.worker_pids()
            with Load(port) as load:
                for k in range(1, 6):
                    wait_for(lambda k=k: len(load.done) >= 150 * k, 20, "requests before the rotation")
                    # The workers write their lines a little after answering: on a loaded machine a whole
                    # window's lines could otherwise all land after the reopen, in the next file.
                    wait_for(lambda: b"/req/" in access.read_bytes(), 10, "lines in the current access log")
                    os.rename(access, f"{access}.{k}")
                    os.rename(error, f"{error}.{k}")
                    os.kill(gw.pid, signal.SIGUSR1)
                    wait_for(lambda: error.exists() and "reopened" in error.read_text(), 10, "the reopen")
                    # ...and every worker took the new files before the next rotation: a worker that took two
                    # reopens in one read would rightly write nothing to the file between them.
                    wait_for(lambda: all(adopted(pid, access) for pid in workers) or None, 10, "the workers' reopen")
                wait_for(lambda: len(load.done) >= 900, 20, "requests after the last rotation")
            assert not load.errors, load.errors[:5]

            # The workers now hold the new files only (the renamed ones show as access.log.5 in /proc).
            for pid in workers:
                targets = fd_targets(pid)
                assert str(access) in targets and str(error) in targets, targets
                assert not [t for t in targets if t.startswith(f"{access}.") or t.startswith(f"{error}.")], targets

            assert gw.stop(signal.SIGTERM) == 0  # workers write out what they hold
            files = sorted(logs.glob("access.log*"))
            assert len(files) == 6
            tags = access_tags(files)
            assert sorted(tags) == sorted(load.done)  # each answered request exactly once
            assert len(set(tags)) == len(tags)
            # Lines did go to the new files as well as the old.
            assert all(access_tags([f]) for f in files[1:]), [f.name for f in files]

            # The error log: the master's reopen notice starts each new file; its stop is in the last.
            last = error.read_text()
            assert "reopened the access and error logs" in last and "master stopped" in last
            assert "reopened" not in Path(f"{error}.1").read_text()
            assert "master started" in Path(f"{error}.1").read_text()


@pytest.mark.skipif(shutil.which("logrotate") is None, reason="logrotate is not installed")
def test_shipped_logrotate_config(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    pid_file = tmp_path / "fsmfast.pid"
    conf = (ROOT / "contrib" / "logrotate" / "fsmfast").read_text()
    conf = conf.replace("/var/log/fsmfast", str(logs)).replace("/run/fsmfast/fsmfast.pid", str(pid_file))
    conf = conf.replace("create 0640 fsmfast fsmfast", "create 0640 root root")
    (tmp_path / "logrotate.conf").write_text(conf)
    port = free_port()
    with Upstream("up", echo_all=True) as up:
        cfg = manifests.one_route(tmp_path / "gw.yaml", port, up.port)
        args = ["--access-log", str(logs / "access.log"), "--error-log", str(logs / "error.log"), "-p", str(pid_file)]
        with Gateway(cfg, [port], workers=1, args=args) as gw:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", "/req/before")
            conn.getresponse().read()
            wait_for(lambda: "/req/before" in (logs / "access.log").read_text(), 5, "the first line")
            done = subprocess.run(
                ["logrotate", "-f", "-s", str(tmp_path / "state"), str(tmp_path / "logrotate.conf")],
                capture_output=True,
                text=True,
                timeout=30,
            )
            assert done.returncode == 0, done.stderr
            wait_for(lambda: "reopened" in (logs / "error.log").read_text(), 10, "the reopen after logrotate")
            conn.request("GET", "/req/after")
            conn.getresponse().read()
            conn.close()
            wait_for(lambda: "/req/after" in (logs / "access.log").read_text(), 5, "a line in the new file")
            old = (logs / "access.log.1").read_text()
            assert "/req/before" in old and "/req/after" not in old
            assert (logs / "access.log").stat().st_mode & 0o777 == 0o640
            assert gw.stop(signal.SIGTERM) == 0
