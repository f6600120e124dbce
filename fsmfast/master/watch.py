"""Reload on file change (``fsmfast run --watch``): inotify on the config's directories, debounced.

Why directories and not the files: an editor saves by writing a temporary file and renaming it
over the old one, which removes the inode a file watch was on (its later writes are never seen),
and a Kubernetes ConfigMap volume swaps a ``..data`` symlink so that no event ever names the
file itself. A directory watch sees both: ``MOVED_TO gw.yaml``, or ``CREATE ..2024_x``,
``MOVED_TO ..data``, ``DELETE ..2024_w``. So every event on a watched directory only marks the
configuration dirty, whatever its name; once no event came for ``SETTLE`` seconds the inputs
are hashed (what the loader reads: ``fsmfast.config.files.find_files``, followed through
symlinks), and only a hash that differs from the one last handed out as due asks for a reload.
A ``touch``, a save of the same bytes, or the editor's swap file changes nothing and reloads
nothing; a burst of writes reloads once.

The kernel drops events when its queue overflows (``IN_Q_OVERFLOW``), and a watch goes away with
its directory (``IN_IGNORED``, say when the ConfigMap's old timestamped directory is deleted):
both re-add the watches and mark dirty. Whatever inotify misses (a file on a network filesystem,
a config directory that is itself a symlink swapped to another target) the rehash every
``POLL`` seconds still finds. ``subPath`` ConfigMap mounts never change at all: Kubernetes does
not update them.

The manifests reference no other files (Secrets are manifests too), so the loader's files are all
the inputs. The master owns the watcher: ``fileno()`` goes into its selector, ``on_readable()``
drains the events, ``due(now)`` says when to reload, ``timeout(now)`` how long it may sleep.
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import logging
import os
import struct
import time
from collections.abc import Callable

from fsmfast.config.files import find_files
from fsmfast.config.issues import Issues

log = logging.getLogger("fsmfast.master")

# <sys/inotify.h>
IN_ATTRIB = 0x00000004
IN_CLOSE_WRITE = 0x00000008
IN_MOVED_FROM = 0x00000040
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_DELETE = 0x00000200
IN_DELETE_SELF = 0x00000400
IN_MOVE_SELF = 0x00000800
IN_Q_OVERFLOW = 0x00004000
IN_IGNORED = 0x00008000
IN_ONLYDIR = 0x01000000
IN_ISDIR = 0x40000000
IN_NONBLOCK = os.O_NONBLOCK
IN_CLOEXEC = os.O_CLOEXEC

MASK = IN_CLOSE_WRITE | IN_MOVED_TO | IN_MOVED_FROM | IN_CREATE | IN_DELETE | IN_DELETE_SELF | IN_MOVE_SELF | IN_ATTRIB
# Events after which the set of directories may have changed: look at the tree again.
_RESYNC = IN_Q_OVERFLOW | IN_IGNORED | IN_DELETE_SELF | IN_MOVE_SELF
_EVENT = struct.Struct("iIII")  # wd, mask, cookie, len; then len bytes of NUL-padded name

# Quiet time after the last event before the inputs are hashed.
SETTLE = 0.25
# Rehash this often even without events.
POLL = 30.0
# A config directory with more subdirectories than this is a mistake (-c /): watch the first ones only.
MAX_DIRS = 1000


class Watcher:
    """inotify watches on the config path's directories; see the module docstring."""

    def __init__(
        self,
        path: str,
        settle: float = SETTLE,
        poll: float = POLL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = os.path.abspath(path)
        self.settle = settle
        self.poll = poll
        self.clock = clock
        self._libc = ctypes.CDLL(None, use_errno=True)
        fd = self._libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if fd < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"inotify_init1: {os.strerror(err)}")
        self._fd: int = fd
        self._wds: dict[int, str] = {}  # watch descriptor -> directory
        self._dirty_at: float | None = None  # time of the last event while a change is unsettled
        self._warned: set[str] = set()
        self._sync()
        # What the master serves now (it built from these files just before): only a change from
        # this is a reason to reload.
        self.served = self.digest()
        self._poll_at = clock() + poll

    def fileno(self) -> int:
        return self._fd

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        self._wds.clear()

    # -- events ----------------------------------------------------------------------------

    def on_readable(self) -> None:
        """Drain the inotify queue; any event marks the configuration dirty."""
        resync = False
        seen = False
        while True:
            try:
                data = os.read(self._fd, 64 * 1024)
            except (BlockingIOError, InterruptedError):
                break
            if not data:
                break
            pos = 0
            while pos + _EVENT.size <= len(data):
                wd, mask, _cookie, length = _EVENT.unpack_from(data, pos)
                pos += _EVENT.size + length
                seen = True
                if mask & IN_IGNORED:
                    self._wds.pop(wd, None)
                if mask & _RESYNC or (mask & IN_ISDIR and mask & (IN_CREATE | IN_MOVED_TO)):
                    resync = True
        if resync:
            self._sync()
        if seen:
            self._dirty_at = self.clock()

    def due(self, now: float) -> bool:
        """True, once, when the inputs settled on content other than what was last due."""
        if now >= self._poll_at:
            self._poll_at = now + self.poll
            if not self._wds:
                self._sync()  # the config directory may be back after it was removed
            if self._dirty_at is None:
                self._dirty_at = now - self.settle  # rehash now
        if self._dirty_at is None or now - self._dirty_at < self.settle:
            return False
        self._dirty_at = None
        digest = self.digest()
        if digest == self.served:
            return False
        self.served = digest
        return True

    def reloaded(self) -> None:
        """The master reloaded for another reason (SIGHUP): what it read is now what is served, so the
        same change does not make a second reload once it settles."""
        self.served = self.digest()

    def timeout(self, now: float) -> float:
        """How long the master may sleep before ``due`` needs calling again."""
        if self._dirty_at is not None:
            return max(0.0, self._dirty_at + self.settle - now)
        return max(0.0, self._poll_at - now)

    # -- inputs ----------------------------------------------------------------------------

    def inputs(self) -> list[str]:
        """The files the loader would read now."""
        return find_files(self.path, Issues())

    def digest(self) -> str:
        """A hash of every input's name and bytes (an unreadable one hashes as such)."""
        h = hashlib.sha256()
        for file in self.inputs():
            h.update(file.encode("utf-8", "surrogateescape") + b"\0")
            try:
                with open(file, "rb") as fh:
                    data = fh.read()
            except OSError as exc:
                data = f"\0unreadable: {exc.errno}".encode()
            h.update(len(data).to_bytes(8, "big"))
            h.update(data)
        return h.hexdigest()

    # -- watches ---------------------------------------------------------------------------

    def directories(self) -> list[str]:
        """The config directory and its subdirectories (or a file's directory), and the directory of
        every input's symlink target."""
        dirs: list[str] = []
        if os.path.isdir(self.path):
            for root, subdirs, _files in os.walk(self.path):
                dirs.append(root)
                if len(dirs) >= MAX_DIRS:
                    break
                subdirs.sort()
        else:
            dirs.append(os.path.dirname(self.path))
        for file in self.inputs():
            target = os.path.dirname(os.path.realpath(file))
            if target not in dirs:
                dirs.append(target)
        return dirs

    def _sync(self) -> None:
        """Watch every directory of ``directories()``; forget the watches of the others."""
        wanted: dict[int, str] = {}
        for directory in self.directories():
            wd = self._libc.inotify_add_watch(self._fd, os.fsencode(directory), MASK | IN_ONLYDIR)
            if wd >= 0:
                wanted[wd] = directory
                continue
            err = ctypes.get_errno()
            # ENOENT: gone meanwhile (its parent's event brings us back). ENOSPC: the user's
            # inotify watch limit; the poll still rehashes.
            if err != errno.ENOENT and directory not in self._warned:
                self._warned.add(directory)
                log.warning(
                    "cannot watch %s for changes: %s; it is rehashed every %gs", directory, os.strerror(err), self.poll
                )
        for wd in set(self._wds) - set(wanted):
            self._libc.inotify_rm_watch(self._fd, wd)
        self._wds = wanted
