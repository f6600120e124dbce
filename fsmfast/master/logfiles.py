"""``--access-log PATH`` and ``--error-log PATH``, and reopening both on SIGUSR1 (logrotate).

The master opens the files (``O_APPEND``: every whole-line write of every process lands at the
end, never over another's, and a truncation leaves no hole), creates them 0640 and, with
``--user``, chowns them to the worker user. The error log goes onto fd 2, so the master's and the
workers' log lines and any traceback Python prints all go there. The access log gets an fd of its
own in the master (:func:`access_fd`; the master's stdout stays what it was), and a forked worker
moves it onto its fd 1 (:func:`in_worker`), where its ``AccessLog`` writes as it always did.
Without a path both stay stdout and stderr as before.

Rotation is nginx's: logrotate renames the file and sends SIGUSR1; the master opens the path
again (a new file), puts it in place of its own fd with ``dup2`` and hands the new file to every
worker over the control channel (``channel.Reopen``). A worker writes out the lines it holds,
into the renamed file, then puts the received file onto the fd it writes to, in one ``dup2``:
no line is written twice or lost, and a line is never split between the files. The workers never
open the path themselves, so a directory or file only root may write is fine (gunicorn's
workers failed there). A path that cannot be opened again keeps the old file and says why.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import TYPE_CHECKING

from fsmfast.logs import LOGGER, SinkHandler

if TYPE_CHECKING:
    from fsmfast.proxy.accesslog import AccessLog
    from fsmfast.worker.privileges import Ids

log = logging.getLogger("fsmfast.master")

ACCESS = "access"
ERROR = "error"
MODE = 0o640
FLAGS = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOCTTY | os.O_CLOEXEC

# The access log's fd: stdout, or the file the master opened (set before any fork, inherited with the fd).
_access_fd = 1


class LogFileError(Exception):
    """A log file that cannot be opened; the message names it and says why."""


def access_fd() -> int:
    """The fd the access log is on in this process."""
    return _access_fd


def in_worker() -> None:
    """In a worker child, before its ``AccessLog`` exists: the access log file becomes its stdout."""
    global _access_fd
    if _access_fd != 1:
        os.dup2(_access_fd, 1)
        os.close(_access_fd)
        _access_fd = 1


class LogFiles:
    """The master's side: open at start, reopen on SIGUSR1."""

    def __init__(self, access_path: str | None, error_path: str | None, owner: Ids | None = None) -> None:
        self.paths = {kind: path for kind, path in ((ACCESS, access_path), (ERROR, error_path)) if path}
        self.owner = owner
        self.fds: dict[str, int] = {}  # kind -> the fd its lines are written to (the error log's is 2)

    def open(self) -> None:
        """Open the files and put them in place; raises LogFileError (nothing swapped yet then)."""
        global _access_fd
        opened: dict[str, int] = {}
        try:
            for kind, path in self.paths.items():
                opened[kind] = self._open(path)
        except LogFileError:
            for fd in opened.values():
                os.close(fd)
            raise
        if ACCESS in opened:
            self.fds[ACCESS] = _access_fd = opened[ACCESS]
        if ERROR in opened:
            swap_stderr(opened[ERROR])
            self.fds[ERROR] = 2

    def reopen(self) -> tuple[list[str], list[int]]:
        """SIGUSR1: open every path again and swap it in; the kinds swapped and the fds to hand to the
        workers (the master's own; the channel passes copies)."""
        kinds: list[str] = []
        for kind, path in self.paths.items():
            try:
                new = self._open(path)
            except LogFileError as exc:
                log.error("cannot reopen the %s log, still writing to the old file: %s", kind, exc)
                continue
            if kind == ERROR:
                swap_stderr(new)
            else:
                os.dup2(new, self.fds[kind], inheritable=False)
                os.close(new)
            kinds.append(kind)
        if kinds:
            log.info("reopened the %s log%s", " and ".join(kinds), "s" if len(kinds) > 1 else "")
        return kinds, [self.fds[kind] for kind in kinds]

    def _open(self, path: str) -> int:
        try:
            fd = os.open(path, FLAGS, MODE)
        except OSError as exc:
            raise LogFileError(f"{path}: {exc.strerror}") from None
        if self.owner is not None:
            try:
                os.fchown(fd, self.owner.uid, self.owner.gid)
            except OSError as exc:
                os.close(fd)
                raise LogFileError(f"{path}: cannot give it to user {self.owner.user}: {exc.strerror}") from None
        return fd


def swap_stderr(new: int) -> None:
    """Put the open file ``new`` onto fd 2 (and close ``new``), after writing out what the error log
    holds; the error-log sink then writes to the new file."""
    handlers = [h for h in logging.getLogger(LOGGER).handlers if isinstance(h, SinkHandler)]
    for handler in handlers:
        handler.acquire()
    try:
        try:
            sys.stderr.flush()
        except (OSError, ValueError):
            pass
        for handler in handlers:
            handler.sink.flush()
        os.dup2(new, 2)
        os.close(new)
        for handler in handlers:
            handler.sink.reset()
    finally:
        for handler in handlers:
            handler.release()


def adopt(kinds: list[str], fds: list[int], access_log: AccessLog) -> None:
    """In a worker, on ``channel.Reopen``: put each received file where its log is written."""
    for kind, fd in zip(kinds, fds, strict=False):
        if kind == ACCESS:
            access_log.reopen(fd)
        elif kind == ERROR:
            swap_stderr(fd)
        else:
            os.close(fd)
    for fd in fds[len(kinds) :]:
        os.close(fd)
