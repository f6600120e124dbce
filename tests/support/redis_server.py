"""Debian's ``redis-server`` on a loopback port: the fleet-wide rate limits' tests and the bench's S9 start it.

One process in its own session (stopped with a ``killpg`` of its group, like every helper in
:mod:`fsmfast.demo.procs`), nothing written to disk (no RDB snapshot, no append-only file), its log in a file.
``wrapper`` goes before the command line: the bench pins Redis to the harness's CPU with ``taskset``.
A few commands can be sent without a client library (:meth:`RedisServer.call`), so a caller can see
what Redis did (``INFO commandstats``) without depending on redis-py.
"""

from __future__ import annotations

import socket
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

from fsmfast.demo import SetupError
from fsmfast.demo.procs import ChildProcess, free_port, stop_group, tail, wait_for


class RedisServer(ChildProcess):
    """``redis-server --port PORT --bind 127.0.0.1`` as a context manager (or :meth:`start`, :meth:`stop`)."""

    def __init__(
        self,
        logdir: Path | None = None,
        wrapper: Sequence[str] = (),
        binary: str = "redis-server",
        start_timeout: float = 10.0,
    ) -> None:
        self.port = free_port()
        self.logdir = logdir
        self.wrapper = list(wrapper)
        self.binary = binary
        self.start_timeout = start_timeout
        self.proc: subprocess.Popen[bytes] | None = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self.log = Path()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int:
        assert self.proc is not None, "redis-server not started"
        return self.proc.pid

    def start(self) -> RedisServer:
        if self.logdir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="fsmfast-redis-")
            self.logdir = Path(self._tmp.name)
        self.log = self.logdir / "redis.log"
        # --dir: where a SAVE would write, should anything ask for one; never the caller's working directory.
        argv = [
            *self.wrapper, self.binary, "--port", str(self.port), "--bind", "127.0.0.1",
            "--save", "", "--appendonly", "no", "--dir", str(self.logdir),
        ]  # fmt: skip
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        try:
            wait_for(self._pong, self.start_timeout, f"redis-server to answer PING on port {self.port}")
        except (TimeoutError, SetupError) as exc:
            self.stop()
            raise SetupError(f"redis-server did not start: {exc}\n{tail(self.log)}") from exc
        return self

    def _pong(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise SetupError(f"redis-server exited with {self.proc.returncode}")
        try:
            return self.call("PING") == b"PONG"
        except OSError:
            return False

    def call(self, *args: str) -> bytes:
        """One command, its reply: a status or bulk string (bytes), an integer (its digits); OSError if
        Redis is not there, RuntimeError for an error reply. Enough for PING and INFO, not a client."""
        request = f"*{len(args)}\r\n" + "".join(f"${len(a.encode())}\r\n{a}\r\n" for a in args)
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as sock:
            sock.sendall(request.encode())
            data = b""
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    raise ConnectionError(f"redis-server closed the connection after {data[:80]!r}")
                data += chunk
                head, sep, rest = data.partition(b"\r\n")
                if not sep:
                    continue
                kind, value = head[:1], head[1:]
                if kind == b"-":
                    raise RuntimeError(f"redis-server: {value.decode(errors='replace')}")
                if kind in (b"+", b":"):
                    return value
                if kind == b"$":
                    size = int(value)
                    if size < 0:
                        return b""
                    if len(rest) >= size + 2:
                        return rest[:size]
                    continue
                raise RuntimeError(f"unexpected reply from redis-server: {data[:80]!r}")

    def calls(self, *commands: str) -> int:
        """How many times Redis ran these commands since it started (``INFO commandstats``), e.g.
        ``calls("evalsha", "eval")`` for Lua scripts."""
        total = 0
        for line in self.call("INFO", "commandstats").decode().splitlines():
            name, _, stats = line.partition(":")
            if name.removeprefix("cmdstat_") in commands:
                total += int(dict(x.split("=", 1) for x in stats.split(","))["calls"])
        return total

    def stop(self) -> None:
        """Stop the server (its whole group) and remove a temporary log directory. Idempotent."""
        stop_group(self.proc)
        self.proc = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None
            self.logdir = None

    def close(self) -> None:
        self.stop()

    def logs(self) -> dict[str, Path]:
        return {"redis-server log": self.log}
