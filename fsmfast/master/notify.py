"""systemd's readiness protocol (``sd_notify``) with the standard library only.

One datagram of ``KEY=VALUE`` lines to the Unix socket named by ``$NOTIFY_SOCKET`` (a leading
``@`` names an abstract socket). Without the variable every call does nothing, so the master
calls these unconditionally. The master is the unit's main process (``NotifyAccess=main``):

- ``ready()`` once every worker serves the first generation (``Type=notify`` waits for it);
- ``reloading()`` when a reload starts and ``ready()`` when it ended, whatever its result: systemd
  needs the pair to finish ``systemctl reload`` (``MONOTONIC_USEC`` is what ``Type=notify-reload``
  of systemd 253+ requires beside ``RELOADING=1``);
- ``stopping()`` on SIGTERM/SIGINT/SIGQUIT;
- ``watchdog()`` every ``watchdog_interval()`` seconds when the unit sets ``WatchdogSec=``.

Workers must not speak for the service: ``strip_env()`` removes the variables in a worker child,
so nothing it runs can find the socket (the master's own socket object stays the master's). A
forked worker shares no exec with the master, so what ``/proc/<pid>/environ`` (and ``ps e``) shows
is still the master's environment as it started: the removed entries are zeroed there too, as
nginx's setproctitle reuses that memory. Nothing points at them any more once ``unsetenv`` ran.

A datagram that cannot be sent (no listener any more, a full queue) is dropped: readiness
reporting must never block or stop the gateway.
"""

from __future__ import annotations

import ctypes
import os
import socket
import time
from collections.abc import MutableMapping

from fsmfast.master.procinfo import stat_fields

ENV = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")


class Notifier:
    def __init__(self, address: str | None, watchdog_usec: int | None = None) -> None:
        self.address = _sockaddr(address) if address else None
        self.watchdog_usec = watchdog_usec
        self._sock: socket.socket | None = None

    @classmethod
    def from_env(cls, environ: MutableMapping[str, str] | None = None) -> Notifier:
        env = os.environ if environ is None else environ
        usec: int | None = None
        # WATCHDOG_PID names the process the watchdog is for; another's (a parent's) is not ours.
        pid = env.get("WATCHDOG_PID")
        if not pid or pid == str(os.getpid()):
            try:
                usec = int(env.get("WATCHDOG_USEC", "")) or None
            except ValueError:
                usec = None
        return cls(env.get("NOTIFY_SOCKET") or None, usec)

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def ready(self, status: str | None = None) -> bool:
        return self.send("READY=1", *([f"STATUS={status}"] if status else []))

    def reloading(self, status: str | None = None) -> bool:
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.send("RELOADING=1", f"MONOTONIC_USEC={usec}", *([f"STATUS={status}"] if status else []))

    def stopping(self, status: str | None = None) -> bool:
        return self.send("STOPPING=1", *([f"STATUS={status}"] if status else []))

    def status(self, text: str) -> bool:
        return self.send(f"STATUS={text}")

    def watchdog(self) -> bool:
        return self.send("WATCHDOG=1")

    def watchdog_interval(self) -> float | None:
        """Seconds between ``watchdog()`` pings: half of ``WatchdogSec=``, as sd_watchdog_enabled(3)
        advises; None when the unit has no watchdog."""
        if self.watchdog_usec is None or self.address is None:
            return None
        return self.watchdog_usec / 2 / 1_000_000

    def send(self, *lines: str) -> bool:
        """One datagram of ``lines``; False when there is no socket or it was not taken."""
        if self.address is None:
            return False
        data = ("\n".join(lines) + "\n").encode()
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self._sock.sendto(data, socket.MSG_DONTWAIT, self.address)
        except OSError:
            return False
        return True

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _sockaddr(address: str) -> str | None:
    if address.startswith("@"):
        return "\0" + address[1:]  # the abstract namespace
    if address.startswith("/"):
        return address
    return None  # vsock: and other schemes are not supported: stay silent


def strip_env(environ: MutableMapping[str, str] | None = None) -> None:
    """In a worker child: forget the service manager's variables (NOTIFY_SOCKET, WATCHDOG_*)."""
    env = os.environ if environ is None else environ
    for name in ENV:
        env.pop(name, None)  # os.environ: unsetenv too
    if environ is None:
        _scrub_initial_environ(ENV)


# /proc/<pid>/stat fields env_start and env_end (proc(5) numbers 50 and 51; stat_fields starts at 3).
_ENV_START, _ENV_END = 50 - 3, 51 - 3


def _scrub_initial_environ(names: tuple[str, ...]) -> None:
    """Zero the ``NAME=value`` strings of ``names`` in the environment block the process was started
    with, the memory /proc/<pid>/environ shows. Call only after they were unset."""
    fields = stat_fields(os.getpid()) or []
    try:
        start, end = int(fields[_ENV_START]), int(fields[_ENV_END])
    except (IndexError, ValueError):
        return
    if not 0 < start < end:
        return  # hidden from us (0), or no environment
    block = ctypes.string_at(start, end - start)
    prefixes = tuple(f"{name}=".encode() for name in names)
    offset = 0
    for entry in block.split(b"\0"):
        if entry.startswith(prefixes):
            ctypes.memset(start + offset, 0, len(entry))
        offset += len(entry) + 1
