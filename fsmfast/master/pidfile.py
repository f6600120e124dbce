"""The master's pidfile: written atomically, refused when another master is alive, removed on exit.

A pid in the file only counts when that process is an fsmfast master (``fsmfast run`` or
``fsmfast demo``, per /proc/<pid>/cmdline): after a crash or a reboot the old pid is often
reused by something else (pid 1 in a container, a shell), and that must not stop a start. A
second master on the same ports is refused by the listeners themselves (``sockets``), so a
pidfile that misjudges can at worst leave two masters on different ports.
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from collections.abc import Callable

from fsmfast.master import procinfo


class PidfileError(Exception):
    """The pidfile names a live process, or cannot be written."""


def read_pid(path: str) -> int | None:
    """The pid in ``path``, or None when the file is missing or holds no usable pid."""
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            text = f.read(64).strip()
    except FileNotFoundError:
        return None
    # isdecimal, not int() alone: int() accepts "+12", "1_2" and surrounding junk.
    if not text.isdecimal():
        return None
    pid = int(text)
    return pid if pid > 0 else None


def is_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        # The process exists but belongs to someone else: still alive.
        return True
    return True


def is_master(pid: int) -> bool | None:
    """Whether live ``pid`` runs an fsmfast master; None when its command line is hidden from us."""
    argv = procinfo.cmdline(pid)
    if argv is None:
        return None
    return procinfo.is_fsmfast_master(argv)


class Pidfile:
    def __init__(self, path: str, warn: Callable[[str], None] | None = None) -> None:
        self.path = path
        self.pid: int | None = None
        self.warn = warn

    def validate(self) -> int | None:
        """The pid of the live fsmfast master the file points at, or None when absent or stale."""
        pid = read_pid(self.path)
        if pid is None or pid == os.getpid():
            # Our own pid can only be stale: a previous container run with the same pid 1.
            return None
        if not is_alive(pid):
            return None
        master = is_master(pid)
        if master is False:
            if self.warn is not None:
                self.warn(
                    f"pidfile {self.path} names {procinfo.describe(pid)}, which is not fsmfast; "
                    "the file is stale, overwriting it"
                )
            return None
        # A master, or a process we may not inspect (hidepid=, another user): refuse rather
        # than risk two masters writing one pidfile.
        return pid

    def create(self, pid: int) -> None:
        """Write ``pid`` atomically, refusing when the file points at a live fsmfast master."""
        other = self.validate()
        if other is not None:
            raise PidfileError(
                f"pidfile {self.path} names running process {procinfo.describe(other)}; is fsmfast already running?"
            )
        directory = os.path.dirname(os.path.abspath(self.path))
        try:
            # Same directory as the target, so the rename is atomic: readers see the old
            # content or the new one, never a half-written file.
            fd, tmp = tempfile.mkstemp(prefix=".fsmfast-pid-", dir=directory)
        except OSError as e:
            raise PidfileError(f"cannot write pidfile {self.path}: {e.strerror}") from e
        try:
            with os.fdopen(fd, "w", encoding="ascii") as f:
                f.write(f"{pid}\n")
            os.chmod(tmp, 0o644)
            os.rename(tmp, self.path)
        except OSError as e:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise PidfileError(f"cannot write pidfile {self.path}: {e.strerror}") from e
        self.pid = pid

    def unlink(self) -> None:
        """Remove the file if it still holds our pid (a newer master may have replaced it)."""
        if self.pid is None:
            return
        if read_pid(self.path) == self.pid:
            try:
                os.unlink(self.path)
            except OSError as e:
                if e.errno != errno.ENOENT:
                    raise
        self.pid = None
