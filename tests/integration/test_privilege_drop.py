"""``--user``/``--group``: the master stays root and binds a port below 1024; the workers serve as nobody.

The TLS listener checks that a worker, no longer root, still loads the certificates it is handed
(through its private temporary files), at start and after a reload.
"""

from __future__ import annotations

import grp
import os
import pwd
import socket
import ssl
import subprocess
import sys
from pathlib import Path

import pytest

from fsmfast.demo.procs import port_is_free, wait_tls
from tests.support import manifests as m
from tests.support.pki import blog_pki
from tests.support.procs import Gateway, child_env, free_port
from tests.support.upstreams import Upstream

pytestmark = [pytest.mark.slow, pytest.mark.skipif(os.geteuid() != 0, reason="dropping privileges needs root")]

NOBODY = pwd.getpwnam("nobody")
NOGROUP = grp.getgrnam("nogroup")


def low_port() -> int:
    for port in range(600, 1000):
        if port_is_free(port):
            return port
    pytest.skip("no free port in 600-999")


def ids(pid: int) -> tuple[list[int], list[int]]:
    """Real, effective, saved and filesystem uids and gids from /proc/<pid>/status."""
    found: dict[str, list[int]] = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("Uid", "Gid"):
                found[key] = [int(v) for v in value.split()]
    return found["Uid"], found["Gid"]


def config(path: Path, http: int, https: int, upstream: int, pki_dir: Path) -> Path:
    pki = blog_pki(pki_dir)
    gateway = (
        "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\n"
        f"metadata: {{name: gw, namespace: {m.NAMESPACE}}}\n"
        "spec:\n  gatewayClassName: fsmfast\n  listeners:\n"
        f"  - {{name: http, protocol: HTTP, port: {http}}}\n"
        f"  - {{name: https, protocol: HTTPS, port: {https}, tls: {{certificateRefs: [{{name: cert}}]}}}}\n"
    )
    route = (
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\n"
        f"metadata: {{name: r, namespace: {m.NAMESPACE}}}\n"
        "spec: {parentRefs: [{name: gw}], rules: [{backendRefs: [{name: svc, port: 80}]}]}\n"
    )
    path.write_text(
        m.documents(
            gateway,
            m.tls_secret("cert", pki.server_cert, pki.server_key),
            m.service("svc", 80, upstream),
            m.endpoint_slice("svc", upstream),
            route,
        )
    )
    return path


def get(port: int, tls: bool = False) -> bytes:
    raw = socket.create_connection(("127.0.0.1", port), timeout=5)
    if tls:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        raw = ctx.wrap_socket(raw, server_hostname="foo.example.com")
    with raw:
        raw.sendall(b"GET /who HTTP/1.1\r\nHost: foo.example.com\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := raw.recv(65536):
            data += chunk
    return data


def test_workers_run_as_nobody(tmp_path: Path) -> None:
    http, https = low_port(), free_port()
    with Upstream("up", echo_all=True) as up:
        cfg = config(tmp_path / "gw.yaml", http, https, up.port, tmp_path / "pki")
        args = ["--user", "nobody", "--group", "nogroup"]
        with Gateway(cfg, [http], workers=2, args=args) as gw:
            wait_tls(https, 20, gw.proc)
            workers = gw.worker_pids()
            assert len(workers) == 2
            for pid in workers:
                assert ids(pid) == ([NOBODY.pw_uid] * 4, [NOGROUP.gr_gid] * 4)
                # Dumpable again after the switch: /proc/<pid> belongs to the worker's user.
                assert os.stat(f"/proc/{pid}").st_uid == NOBODY.pw_uid
            assert ids(gw.pid) == ([0] * 4, [0] * 4)
            assert get(http).startswith(b"HTTP/1.1 200")
            assert get(https, tls=True).startswith(b"HTTP/1.1 200")

            # A reload after the drop: the master reads the (new) key and hands it over.
            gw.reload()
            assert get(https, tls=True).startswith(b"HTTP/1.1 200")
            assert get(http).startswith(b"HTTP/1.1 200")
            assert sorted(gw.worker_pids()) == sorted(workers)
            assert "failed" not in gw.stderr_text().lower()


def run_fails(args: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fsmfast", "run", "-c", "/nonexistent.yaml", "--admin-address", "", *args],
        capture_output=True,
        text=True,
        timeout=30,
        env=child_env(),
        **kw,  # type: ignore[arg-type]
    )


def test_unknown_user_or_group_stops_the_start() -> None:
    done = run_fails(["--user", "no-such-user-fsmfast"])
    assert done.returncode == 2, done.stderr
    assert "--user no-such-user-fsmfast: no such user" in done.stderr
    done = run_fails(["--user", "nobody", "--group", "no-such-group-fsmfast"])
    assert done.returncode == 2, done.stderr
    assert "--group no-such-group-fsmfast: no such group" in done.stderr


def test_user_refused_when_not_root() -> None:
    as_nobody = {"user": NOBODY.pw_uid, "group": NOGROUP.gr_gid, "extra_groups": [], "cwd": "/"}
    try:
        subprocess.run([sys.executable, "-c", "import fsmfast"], env=child_env(), timeout=30, check=True, **as_nobody)
    except (PermissionError, subprocess.CalledProcessError):
        pytest.skip("this interpreter or checkout is not readable by nobody (the unit test covers the refusal)")
    done = run_fails(["--user", "root"], **as_nobody)
    assert done.returncode == 2, done.stderr
    assert "only a master started as root" in done.stderr
