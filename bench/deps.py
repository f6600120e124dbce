"""What the harness needs from outside the venv, installed only when absent.

- nginx (the upstream, and a system under test), haproxy and wrk, and redis-server (S9's fleet-wide quota):
  Debian packages, one ``apt-get update`` and one ``apt-get install -y --no-install-recommends`` for everything
  missing;
- matplotlib (the chart): pip into the running interpreter's environment (the project's ``.venv``).

Debian starts a package's service from its maintainer script. The harness wants no system-wide nginx,
haproxy or Redis listening on ports 80/443/6379, so unless the machine already has ``/usr/sbin/policy-rc.d``
(Docker-style images do), one that forbids service starts exists only for the duration of the install.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator

# Debian installs daemons into sbin, which a non-root PATH may lack.
_SEARCH_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/local/sbin", "/usr/sbin", "/sbin"])

# command -> Debian package
TOOLS = {"nginx": "nginx", "haproxy": "haproxy", "wrk": "wrk", "valgrind": "valgrind", "redis-server": "redis-server"}

_POLICY_RC = "/usr/sbin/policy-rc.d"


class MissingTool(RuntimeError):
    pass


def which(command: str) -> str | None:
    return shutil.which(command, path=_SEARCH_PATH)


def tool(command: str) -> str:
    path = which(command)
    if path is None:
        raise MissingTool(f"{command} is not installed (Debian package {TOOLS.get(command, command)})")
    return path


def _log(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def _no_service_starts() -> Iterator[None]:
    """Forbid invoke-rc.d from starting services while packages install (unless a policy already exists)."""
    if os.path.exists(_POLICY_RC) or os.geteuid() != 0:
        yield
        return
    with open(_POLICY_RC, "w") as f:
        f.write("#!/bin/sh\n# temporary: written by fsmfast's bench harness during apt-get install\nexit 101\n")
    os.chmod(_POLICY_RC, 0o755)
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            os.unlink(_POLICY_RC)


def ensure_debian(commands: list[str]) -> None:
    """Install the Debian packages of the ``commands`` that are missing (apt-get update once, then install)."""
    missing = sorted({TOOLS[c] for c in commands if which(c) is None})
    if not missing:
        return
    if shutil.which("apt-get") is None:
        raise MissingTool(f"missing {', '.join(missing)} and no apt-get here: install them yourself")
    prefix: list[str] = []
    if os.geteuid() != 0:
        if shutil.which("sudo") is None:
            raise MissingTool(f"missing {', '.join(missing)}; not root and no sudo: install them yourself")
        prefix = ["sudo"]
    _log(f"installing Debian packages: {' '.join(missing)}")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    with _no_service_starts():
        subprocess.run([*prefix, "apt-get", "update", "-q"], check=True, env=env, stdout=sys.stderr)
        subprocess.run(
            [*prefix, "apt-get", "install", "-y", "-q", "--no-install-recommends", *missing],
            check=True,
            env=env,
            stdout=sys.stderr,
        )
    still = [c for c in commands if which(c) is None]
    if still:
        raise MissingTool(f"still missing after apt-get install: {', '.join(still)}")


def have_matplotlib() -> bool:
    return importlib.util.find_spec("matplotlib") is not None


def ensure_matplotlib() -> bool:
    """pip-install matplotlib into this interpreter's environment when absent; False if that failed."""
    if have_matplotlib():
        return True
    _log("installing matplotlib into this environment (pip)")
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input", "install", "-q", "matplotlib"],
        stdout=sys.stderr,
        check=False,
    )
    importlib.invalidate_caches()
    if proc.returncode != 0 or not have_matplotlib():
        _log("matplotlib could not be installed: no chart this run")
        return False
    return True
