"""The master's pidfile: written atomically, refused when another master is alive, removed on exit.

The pidfile is also the guard against a second instance: with SO_REUSEPORT a second master
under the same uid would bind the same ports without error and silently take half the traffic.
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile


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


class Pidfile:
    def __init__(self, path: str) -> None:
        self.path = path
        self.pid: int | None = None

    def validate(self) -> int | None:
        """The pid of a live process the file points at, or None when the file is absent or stale."""
        pid = read_pid(self.path)
        if pid is None or pid == os.getpid():
            # Our own pid can only be stale: a previous container run with the same pid 1.
            return None
        return pid if is_alive(pid) else None

    def create(self, pid: int) -> None:
        """Write ``pid`` atomically, refusing when the file points at a live process."""
        other = self.validate()
        if other is not None:
            raise PidfileError(f"pidfile {self.path} names running process {other}; is fsmfast already running?")
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
