"""``fsmfast demo`` runs the founding scenario by itself: 502 before the policy, httpbin's JSON after."""

from __future__ import annotations

import os
import re
import signal
import ssl
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fsmfast.demo import pki
from tests.support.procs import child_env, children_of, free_port, wait_for


def start_demo(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "fsmfast", "demo", *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        env=child_env(),
    )


def kill_group(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@pytest.mark.timeout(120)
@pytest.mark.parametrize("upstream", ["auto", "builtin"])
def test_demo_shows_502_then_httpbin_json(upstream: str) -> None:
    proc = start_demo("--no-keep-running", "--port", str(free_port()), "--upstream", upstream)
    try:
        out, _ = proc.communicate(timeout=100)
    finally:
        kill_group(proc)
    assert proc.returncode == 0, out
    assert "HTTP 502" in out, out
    assert '"Host": "foo.example.com"' in out, out
    assert "reloaded" in out, out


@pytest.mark.timeout(120)
def test_demo_keeps_running_until_sigterm_and_cleans_up() -> None:
    port = free_port()
    proc = start_demo("--port", str(port))
    try:
        assert proc.stdout is not None
        seen: list[str] = []
        # Read until the demo says it is waiting; then the gateway and the upstream are its children's groups.
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            seen.append(line)
            if line.startswith("Running until Ctrl-C"):
                break
        out = "".join(seen)
        assert "Running until Ctrl-C" in out, out
        tmp = re.search(r"-c (\S+fsmfast-demo-\S+)/config", out)
        assert tmp, out
        children = children_of(proc.pid)
        assert children, "the demo should have the gateway (and gunicorn) as children"

        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)
        assert proc.returncode == 0
        assert not Path(tmp.group(1)).exists(), "the demo left its temporary directory"
        wait_for(lambda: not any(os.path.exists(f"/proc/{pid}") for pid in children), 10, "the demo's children to exit")
    finally:
        kill_group(proc)


def test_cryptography_fallback_makes_blog_like_certificates(tmp_path: Path) -> None:
    pytest.importorskip("cryptography")
    pki.blog_pki_with_cryptography(tmp_path)
    # The server certificate verifies against the CA by chain alone (no SAN, like the blog's).
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_flags &= ~getattr(ssl, "VERIFY_X509_STRICT", 0)
    ctx.load_verify_locations(tmp_path / "ca-cert.pem")
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(tmp_path / "server-cert.pem", tmp_path / "server-key.pem")
    c_in, c_out, s_in, s_out = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
    client = ctx.wrap_bio(c_in, c_out)
    srv = server.wrap_bio(s_in, s_out, server_side=True)
    for _ in range(10):  # drive both ends of an in-memory handshake
        for end in (client, srv):
            try:
                end.do_handshake()
            except ssl.SSLWantReadError:
                pass
        s_in.write(c_out.read())
        c_in.write(s_out.read())
    cert = client.getpeercert()
    assert cert, "handshake did not complete"
    assert dict(x[0] for x in cert["subject"])["commonName"] == "foo.example.com"
