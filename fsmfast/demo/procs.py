"""Real processes on loopback: free ports, process groups, waiting for a (TLS) port, ``fsmfast run`` as a child.

Rules every helper here keeps, so a failure never hangs the demo, a test or a benchmark, nor leaks a process:
- each process starts in its own session (``start_new_session=True``), so its whole tree is one process
  group and teardown is a ``killpg`` on that group, done whatever happened;
- every wait has a hard timeout and, on timeout, raises with the process's own stderr, so the message says
  why the gateway or the upstream did not come up;
- output goes to files in a temporary directory, never to pipes that could fill up and block the child.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import random
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import fsmfast
from fsmfast.demo import SetupError
from fsmfast.master.procinfo import stat_fields

T = TypeVar("T")

# The directory holding the fsmfast package this process imported: a child must run the same code (a
# checkout with its in-place extensions, or the installed wheel), whatever its working directory.
_PACKAGE_ROOT = str(Path(fsmfast.__file__).resolve().parent.parent)

_handed_out: set[int] = set()


def _ephemeral_low() -> int:
    """The lowest port the kernel gives outgoing connections (and bind to port 0)."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default


def _binds(host: str, port: int, reuse_addr: bool) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        if reuse_addr:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """True when a listener could bind ``host:port`` now (connections in TIME_WAIT do not count, as for
    any server that sets SO_REUSEADDR)."""
    return _binds(host, port, reuse_addr=True)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now, chosen below the kernel's ephemeral range.

    The kernel's own pick (bind to port 0) comes from the range outgoing connections take their source
    ports from, so a client or proxy connection could take it before the gateway binds it ("Address
    already in use"). Below that range only listeners bind, and this process never hands out a port twice.
    """
    low = _ephemeral_low()
    if low > 12000:
        for _ in range(500):
            port = random.randrange(10000, low)
            if port in _handed_out or not _binds(host, port, reuse_addr=False):
                continue
            _handed_out.add(port)
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def wait_for(predicate: Callable[[], T | None], timeout: float, what: str, interval: float = 0.05) -> T:
    """Poll ``predicate`` until it returns something truthy, and return that; TimeoutError after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


def wait_port(host: str, port: int, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    """Wait until ``host:port`` accepts a TCP connection; TimeoutError after ``timeout`` seconds.

    With ``proc``, give up as soon as that process exits (RuntimeError), instead of waiting out the timeout.
    """
    deadline = time.monotonic() + timeout
    while True:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process {proc.pid} exited with {proc.returncode} before {host}:{port} accepted")
        try:
            with socket.create_connection((host, port), timeout=1.0):
                return
        except OSError:
            pass
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{host}:{port} did not accept a connection within {timeout:g}s")
        time.sleep(0.05)


def connection(port: int, tls: bool = False, timeout: float = 20.0) -> http.client.HTTPConnection:
    """An HTTP(S) connection to a local gateway port, as the demo's, the tests' and the bench's clients
    make it: over TLS without verifying the listener's certificate (made for the run, or self-signed)."""
    if not tls:
        return http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return http.client.HTTPSConnection("127.0.0.1", port, timeout=timeout, context=ctx)


def tls_ready(port: int, host: str = "127.0.0.1") -> bool:
    """True once ``host:port`` completes a TLS handshake and answers a request, or refuses ours with a TLS
    alert (an mTLS server: it is up and speaking TLS). The request makes sure a worker, not only a listening
    socket, is there."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        with socket.create_connection((host, port), timeout=5.0) as raw, ctx.wrap_socket(raw) as tls:
            tls.sendall(b"GET /status/200 HTTP/1.1\r\nHost: probe\r\nConnection: close\r\n\r\n")
            tls.recv(1)
        return True
    except ssl.SSLError:
        return True
    except OSError:
        return False


def wait_tls(port: int, timeout: float, proc: subprocess.Popen[bytes] | None = None, host: str = "127.0.0.1") -> None:
    """Wait until :func:`tls_ready`; TimeoutError after ``timeout``, RuntimeError as soon as ``proc`` exits."""

    def ready() -> bool:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process {proc.pid} exited with {proc.returncode} before TLS on {host}:{port}")
        return tls_ready(port, host)

    wait_for(ready, timeout, f"TLS on {host}:{port}", interval=0.1)


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This process's environment for a child that must run the same fsmfast, with unbuffered output."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (_PACKAGE_ROOT, env.get("PYTHONPATH", "")) if p)
    # Log lines must reach the files at once: the tests and the demo read them while the process runs.
    env["PYTHONUNBUFFERED"] = "1"
    if extra:
        env.update(extra)
    return env


def stop_group(proc: subprocess.Popen[Any] | None, sig: int = signal.SIGTERM, grace: float = 10.0) -> None:
    """Signal the child's whole process group, wait ``grace`` seconds, then SIGKILL what is left. Idempotent.

    The final SIGKILL goes to the group even when the child itself has exited: workers may outlive a master.
    """
    if proc is None:
        return
    # start_new_session made the child a group leader: its pid is the group id.
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=grace)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5)


def tail(path: Path, lines: int = 40) -> str:
    """The last ``lines`` lines of a log file, or "" when it cannot be read."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


C = TypeVar("C", bound="ChildProcess")


class ChildProcess:
    """A child process group as a context manager: entering runs :meth:`start`, leaving always runs
    :meth:`close`; if the block raised, the tails of :meth:`logs` are printed first (pytest shows a failed
    test's stdout, so the report carries the child's side of the failure)."""

    def start(self: C) -> C:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def logs(self) -> dict[str, Path]:
        """The child's log files by name."""
        return {}

    def __enter__(self: C) -> C:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is not None:
            for name, path in self.logs().items():
                print(f"--- {name} (tail) ---\n{tail(path)}")
        self.close()


class Gateway(ChildProcess):
    """``python -m fsmfast run -c CONFIG --workers N --listen-address 127.0.0.1 [ARGS]`` as a context manager.

    ``ports`` are the listener ports the caller expects; entering the context waits (up to ``start_timeout``)
    until every one accepts connections. stdout (the JSON access log) and stderr (the gateway's log) are
    written to files read by :meth:`access_log` and :meth:`stderr_text`. Leaving the context always
    kills the whole process group; if the block raised, the tail of stderr is printed so a test report
    shows the gateway's side. Without the context: :meth:`start`, then :meth:`close` (a graceful signal first).
    """

    def __init__(
        self,
        config: Path,
        ports: list[int],
        workers: int = 1,
        args: Sequence[str] = (),
        env: dict[str, str] | None = None,
        start_timeout: float = 30.0,
        stdout: int | None = None,
        stderr: int | None = None,
    ) -> None:
        self.config = Path(config)
        # File descriptors (a pipe's write end, say) for the gateway's stdout and stderr instead of
        # the files access_log() and stderr_text() read.
        self.stdout_fd = stdout
        self.stderr_fd = stderr
        self.ports = list(ports)
        self.workers = workers
        self.args = list(args)
        self.env = env
        self.start_timeout = start_timeout
        self.proc: subprocess.Popen[bytes] | None = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self.stdout_path = Path(os.devnull)
        self.stderr_path = Path(os.devnull)
        self.admin_port = 0  # the admin listener's port, when start() chose it

    # -- lifecycle -------------------------------------------------------------------------------------

    def start(self) -> Gateway:
        self._tmp = tempfile.TemporaryDirectory(prefix="fsmfast-gateway-")
        tmp = Path(self._tmp.name)
        self.stdout_path = tmp / "stdout.log"
        self.stderr_path = tmp / "stderr.log"
        cmd = [sys.executable, "-m", "fsmfast", "run", "-c", str(self.config), "--workers", str(self.workers)]
        if "--listen-address" not in self.args:
            # Loopback only: free_port() checked 127.0.0.1, and tests should not open ports to the network.
            cmd += ["--listen-address", "127.0.0.1"]
        if not any(a.startswith("--admin-address") for a in self.args):
            # Every gateway its own admin port: the default (9901) would be shared by gateways started side by side.
            self.admin_port = free_port()
            cmd += ["--admin-address", f"127.0.0.1:{self.admin_port}"]
        cmd += self.args
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=out if self.stdout_fd is None else self.stdout_fd,
                stderr=err if self.stderr_fd is None else self.stderr_fd,
                start_new_session=True,
                env=child_env(self.env),
            )
        try:
            for port in self.ports:
                wait_port("127.0.0.1", port, self.start_timeout, proc=self.proc)
        except (TimeoutError, RuntimeError) as exc:
            self.kill_tree()
            raise SetupError(f"gateway did not start: {exc}\n--- gateway stderr ---\n{self.stderr_text()}") from exc
        return self

    def logs(self) -> dict[str, Path]:
        return {"gateway stderr": self.stderr_path, "gateway stdout": self.stdout_path}

    def close(self, sig: int = signal.SIGKILL, grace: float = 10.0) -> None:
        """Send ``sig`` to the whole group, SIGKILL what is left after ``grace`` seconds, and remove the log
        files. Idempotent."""
        stop_group(self.proc, sig, grace)
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    @property
    def pid(self) -> int:
        """The master's pid."""
        assert self.proc is not None, "gateway not started"
        return self.proc.pid

    def admin(self, path: str, timeout: float = 5.0) -> tuple[int, bytes]:
        """GET ``path`` from the admin listener on a connection of its own: (status, body). Any status is
        returned, not raised (a 503 from /readyz is an answer); OSError when nothing answers."""
        assert self.admin_port, "no admin listener chosen by start()"
        conn = http.client.HTTPConnection("127.0.0.1", self.admin_port, timeout=timeout)
        try:
            conn.request("GET", path)
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()

    def reload(self, expect: str = "reloaded", timeout: float = 10.0) -> str:
        """Send SIGHUP to the master and wait until stderr gains a new line containing ``expect``.

        Returns that line. Lines written before the signal never count, so a reload can't be mistaken for
        an earlier one. Use ``expect="reload failed"`` (or whatever the master logs) to wait for a refusal.
        """
        assert self.proc is not None, "gateway not started"
        offset = self._stderr_size()
        os.kill(self.proc.pid, signal.SIGHUP)

        def new_line() -> str | None:
            if self.proc is not None and self.proc.poll() is not None:
                raise SetupError(f"gateway exited with {self.proc.returncode} during reload:\n{self.stderr_text()}")
            fresh = self._stderr_bytes(offset).decode(errors="replace")
            # Only complete lines: a half-written line could match a prefix of `expect`'s context.
            for line in fresh.splitlines(keepends=True):
                if line.endswith("\n") and expect in line:
                    return line.rstrip("\n")
            return None

        try:
            return wait_for(new_line, timeout, f"a stderr line containing {expect!r} after SIGHUP")
        except TimeoutError as exc:
            new = self._stderr_bytes(offset).decode(errors="replace")
            raise TimeoutError(f"{exc}; stderr since SIGHUP:\n{new}") from None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        """Send ``sig`` to the master and return its exit status; kill the tree if it outlives ``timeout``."""
        assert self.proc is not None, "gateway not started"
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill_tree()
            raise TimeoutError(f"gateway did not exit within {timeout:g}s of signal {sig}") from None

    def kill_tree(self) -> None:
        """SIGKILL the master and every process in its group (workers included). Idempotent."""
        stop_group(self.proc, signal.SIGKILL)

    # -- observation -----------------------------------------------------------------------------------

    def _stderr_size(self) -> int:
        try:
            return self.stderr_path.stat().st_size
        except OSError:
            return 0

    def _stderr_bytes(self, offset: int = 0) -> bytes:
        try:
            with open(self.stderr_path, "rb") as f:
                f.seek(offset)
                return f.read()
        except OSError:
            return b""

    def stderr_text(self) -> str:
        """Everything the gateway wrote to stderr so far (its log)."""
        return self._stderr_bytes().decode(errors="replace")

    def access_log(self, min_entries: int = 0, timeout: float = 5.0) -> list[dict[str, Any]]:
        """The JSON access-log lines written to stdout so far, parsed; non-JSON lines are skipped.

        With ``min_entries``, wait (up to ``timeout``) until at least that many entries are there: a
        worker may write the line just after the client has read the response.
        """

        def entries() -> list[dict[str, Any]]:
            try:
                text = self.stdout_path.read_text(errors="replace")
            except OSError:
                return []
            out = []
            for line in text.splitlines():
                line = line.strip()
                if not line.startswith("{"):
                    continue
                try:
                    out.append(json.loads(line))
                except ValueError:
                    continue  # a line still being written
            return out

        if min_entries <= 0:
            return entries()

        def enough() -> list[dict[str, Any]] | None:
            found = entries()
            return found if len(found) >= min_entries else None

        return wait_for(enough, timeout, f"{min_entries} access-log entries")

    def worker_pids(self) -> list[int]:
        """Pids of the master's live child processes (its workers), read from /proc."""
        assert self.proc is not None, "gateway not started"
        return children_of(self.proc.pid)


def children_of(pid: int) -> list[int]:
    """Pids whose parent is ``pid`` (zombies excluded), from /proc/<pid>/stat."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fields = stat_fields(int(entry))
        if fields is not None and len(fields) >= 2 and fields[1] == str(pid) and fields[0] != "Z":
            found.append(int(entry))
    return sorted(found)
