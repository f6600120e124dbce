"""The binary wheel as a user gets it: ``pip install fsmfast-<ver>-<tag>.whl`` on a machine without a compiler.

``wheels/build_host.sh`` builds and repairs the wheel for the interpreter running this test; it is installed
into a fresh venv whose PATH holds only the venv's ``bin`` and a directory of tools made here (no ``cc``,
no ``gcc``); then the founding scenario runs through that venv's ``fsmfast`` command, never the checkout:
the blog's CA and server certificate, httpbin on gunicorn with TLS, the founding manifests, 502 without the
UpstreamTLSPolicy, then 200 with the client's Host after the policy is added and the gateway gets SIGHUP.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from fsmfast._compiled import COMPILED
from tests.support import manifests as m
from tests.support.pki import Pki
from tests.support.procs import Gunicorn, free_port, wait_for, wait_port
from tests.unit.test_proxy_compiled import DESCRIBED

REPO = Path(__file__).resolve().parents[2]
BUILD_HOST = REPO / "wheels" / "build_host.sh"
HOST = "foo.example.com"
# Tools the no-compiler environment may use besides the venv's bin. pip installs a wheel and fsmfast runs
# without any: the directory exists so that a future need is one name here, never the host's whole PATH.
TOOLS: tuple[str, ...] = ()

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="manylinux wheels are built on Linux"),
    pytest.mark.skipif(shutil.which("bash") is None, reason="wheels/build_host.sh needs bash"),
    # cibuildwheel copies only tests/ next to the wheel it tests: there is nothing to build from there.
    pytest.mark.skipif(not BUILD_HOST.exists(), reason="needs the checkout's wheels/build_host.sh"),
]


@dataclass(frozen=True)
class Installed:
    wheel: Path
    venv: Path
    env: dict[str, str]  # PATH = venv/bin + tools; nothing that would import the checkout
    cwd: Path  # an empty directory: the checkout is not on sys.path


def _no_compiler_env(venv: Path, tools: Path) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "FSMFAST_NO_EXTENSIONS", "CC", "CXX", "LDSHARED")
    }
    env["PATH"] = os.pathsep.join([str(venv / "bin"), str(tools)])
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _run(
    cmd: list[str | Path], timeout: float, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``cmd`` in its own session; on timeout kill the whole group (a build's gcc and pip included)."""
    args = [str(c) for c in cmd]
    with subprocess.Popen(
        args,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=cwd,
        start_new_session=True,
    ) as popen:
        try:
            out, err = popen.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(popen.pid, signal.SIGKILL)
            out, err = popen.communicate()
            raise AssertionError(f"{args} timed out after {timeout:g} s\n--- stderr ---\n{err}") from None
    assert popen.returncode == 0, f"{args} exited {popen.returncode}\n--- stdout ---\n{out}\n--- stderr ---\n{err}"
    return subprocess.CompletedProcess(args, popen.returncode, out, err)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    tmp = tmp_path_factory.mktemp("wheel")
    # The build: one wheel for this interpreter, sdist first and the wheel from it, repaired by auditwheel.
    started = time.monotonic()
    built = _run(["bash", BUILD_HOST, "--python", sys.executable, "--out", tmp / "dist"], timeout=150)
    wheel = Path(built.stdout.strip().splitlines()[-1])
    print(f"built {wheel.name} ({wheel.stat().st_size // 1024} KiB) in {time.monotonic() - started:.0f} s")
    assert wheel.is_file(), built.stdout

    tools = tmp / "tools"
    tools.mkdir()
    for name in TOOLS:
        found = shutil.which(name)
        assert found, f"{name} is needed by the no-compiler environment"
        (tools / name).symlink_to(found)
    venv = tmp / "venv"
    _run([sys.executable, "-m", "venv", venv], timeout=60)
    env = _no_compiler_env(venv, tools)
    cwd = tmp / "cwd"
    cwd.mkdir()

    # No compiler: neither from here nor from inside that environment.
    for compiler in ("cc", "gcc", "c99", "clang"):
        assert shutil.which(compiler, path=env["PATH"]) is None, compiler
    probe = "import shutil, sys; sys.exit(any(shutil.which(c) for c in ('cc', 'gcc', 'c99', 'clang')))"
    _run([venv / "bin" / "python", "-c", probe], timeout=30, env=env, cwd=cwd)

    started = time.monotonic()
    pip = [venv / "bin" / "python", "-m", "pip", "install", "-q", "--disable-pip-version-check", wheel]
    _run(pip, 120, env=env, cwd=cwd)
    print(f"installed into a venv without a compiler in {time.monotonic() - started:.0f} s")
    return Installed(wheel, venv, env, cwd)


@pytest.mark.timeout(170)
def test_wheel_is_manylinux_and_carries_only_what_runs(installed: Installed) -> None:
    name = installed.wheel.name
    assert "-manylinux" in name or ".manylinux" in name, name
    assert "manylinux_2_17" in name, f"expected the most compatible tag the symbols allow (2_17): {name}"
    names = zipfile.ZipFile(installed.wheel).namelist()
    assert [n for n in names if n.startswith("fsmfast/_parser.") and n.endswith(".so")], names
    assert [n for n in names if n.startswith("fsmfast/tls/_records.") and n.endswith(".so")], names
    assert [n for n in names if n.startswith("fsmfast/shared/_atomic.") and n.endswith(".so")], names
    assert "fsmfast/_parser.pyi" in names and "fsmfast/py.typed" in names, names
    for core in (name.removeprefix("fsmfast.").replace(".", "/") for name in COMPILED):
        # Compiled, and its source kept: the .py is the pure-Python twin FSMFAST_NO_EXTENSIONS=1 runs.
        assert [n for n in names if n.startswith(f"fsmfast/{core}.") and n.endswith(".so")], names
        assert f"fsmfast/{core}.py" in names, names
    assert not [n for n in names if n.endswith((".c", ".pyx", ".pxd", ".html"))], names


@pytest.mark.timeout(170)
def test_installed_package_uses_its_compiled_parser(installed: Installed) -> None:
    code = (
        "import json, sys, fsmfast, fsmfast._compiled, fsmfast._parser, fsmfast.codec; "
        "print(json.dumps([fsmfast.__file__, fsmfast._parser.__file__, fsmfast.codec.USING_EXTENSION,"
        " fsmfast._compiled.describe()]))"
    )
    out = _run([installed.venv / "bin" / "python", "-c", code], 60, env=installed.env, cwd=installed.cwd)
    package, parser, using, described = json.loads(out.stdout)
    # The same words the checkout's own test expects (tests/unit/test_proxy_compiled.py): every native
    # piece, the codec, the record layer and each compiled module, runs compiled from the wheel.
    assert described == DESCRIBED
    assert Path(package).is_relative_to(installed.venv), package
    assert parser.endswith(".so") and Path(parser).is_relative_to(installed.venv), parser
    assert using is True


class InstalledGateway:
    """``<venv>/bin/fsmfast run`` in its own session, logs in files; procs.Gateway always runs the checkout."""

    def __init__(self, installed: Installed, config: Path, port: int, logs: Path) -> None:
        self.installed, self.config, self.port = installed, config, port
        self.stdout_path, self.stderr_path = logs / "access.log", logs / "gateway.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> InstalledGateway:
        cmd = [str(self.installed.venv / "bin" / "fsmfast"), "run", "-c", str(self.config)]
        cmd += ["--workers", "1", "--listen-address", "127.0.0.1"]
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                env=self.installed.env,
                cwd=self.installed.cwd,
                start_new_session=True,
            )
        try:
            wait_port("127.0.0.1", self.port, 30, proc=self.proc)
        except (TimeoutError, RuntimeError) as exc:
            self.__exit__(None, None, None)
            raise RuntimeError(f"installed gateway did not start: {exc}\n{self.stderr()}") from exc
        return self

    def __exit__(self, *exc: object) -> None:
        if exc and exc[0] is not None:
            print(f"--- gateway stderr ---\n{self.stderr()}")
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=10)

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace") if self.stderr_path.exists() else ""

    def reload(self) -> str:
        """SIGHUP, then the first new stderr line that says ``reloaded``."""
        assert self.proc is not None
        before = len(self.stderr())
        os.kill(self.proc.pid, signal.SIGHUP)

        def reloaded() -> str | None:
            assert self.proc is not None and self.proc.poll() is None, self.stderr()
            return next((ln for ln in self.stderr()[before:].splitlines() if "reloaded" in ln), None)

        return wait_for(reloaded, 15, "'reloaded' on the gateway's stderr after SIGHUP")


def get(port: int, path: str) -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    try:
        conn.request("GET", path, headers={"Host": HOST})
        resp = conn.getresponse()
        return resp.status, resp.read().decode(errors="replace")
    finally:
        conn.close()


@pytest.fixture
def logs(tmp_path: Path) -> Path:
    d = tmp_path / "logs"
    d.mkdir()
    return d


@pytest.mark.timeout(170)
def test_founding_scenario_through_the_installed_command(
    installed: Installed, pki: Pki, httpbin_tls: Gunicorn, config_dir: Path, logs: Path
) -> None:
    port = free_port()
    m.write_founding(config_dir, port, httpbin_tls.port)
    ok = _run([installed.venv / "bin" / "fsmfast", "check", "-c", config_dir], 60, env=installed.env)
    assert ok.stdout.startswith("ok:"), ok.stdout

    with InstalledGateway(installed, config_dir, port, logs) as gw:
        status, body = get(port, "/headers")
        assert status == 502, body

        m.write_founding(config_dir, port, httpbin_tls.port, with_policy=True, ca_pem=pki.ca_cert)
        assert "generation" in gw.reload()

        status, body = get(port, "/headers")
        assert status == 200, body
        assert '"Host": "foo.example.com"' in body, body
        assert json.loads(body)["headers"]["Host"] == HOST
