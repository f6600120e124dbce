"""fsmfast.master.logfiles: opening, chowning and reopening the log files, and the worker's swap.

Whatever touches fd 2 runs in a forked child, so pytest's own stderr is never replaced.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import pwd
import re
import stat
import sys
import traceback
from collections.abc import Callable
from pathlib import Path

import pytest

from fsmfast import logs
from fsmfast.logsink import LineSink
from fsmfast.master import logfiles
from fsmfast.master.logfiles import LogFileError, LogFiles
from fsmfast.proxy.accesslog import AccessLog
from fsmfast.worker.privileges import Ids


def in_child(body: Callable[[], object]) -> object:
    """Run ``body`` in a forked child; return what it returned (JSON), or raise with its traceback."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(read)
            out = {"ok": body()}
        except BaseException:
            out = {"error": traceback.format_exc()}
        os.write(write, json.dumps(out).encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as fh:
        data = json.loads(fh.read())
    os.waitpid(pid, 0)
    if "error" in data:
        raise AssertionError(data["error"])
    return data["ok"]


def test_open_and_reopen_after_rename(tmp_path: Path) -> None:
    access, error = tmp_path / "access.log", tmp_path / "error.log"

    def body() -> object:
        sys.stderr = sys.__stderr__  # fd 2, not pytest's capture
        logs.setup("master", rate_limit=False)
        files = LogFiles(str(access), str(error))
        files.open()
        fd = logfiles.access_fd()
        assert fd not in (1, 2)
        os.write(fd, b"access 1\n")
        logs.get_logger("master").warning("error 1")
        os.write(2, b"raw stderr 1\n")  # what a traceback does
        os.rename(access, str(access) + ".1")
        os.rename(error, str(error) + ".1")
        kinds, fds = files.reopen()
        assert kinds == ["access", "error"] and fds == [fd, 2]
        assert logfiles.access_fd() == fd  # same number, new file
        os.write(fd, b"access 2\n")
        logs.get_logger("master").warning("error 2")
        return None

    in_child(body)
    assert Path(str(access) + ".1").read_text() == "access 1\n"
    assert access.read_text() == "access 2\n"
    old, new = Path(str(error) + ".1").read_text(), error.read_text()
    assert "error 1" in old and "raw stderr 1" in old and "error 2" not in old
    # The master says it reopened, in the new file.
    assert "reopened the access and error logs" in new and "error 2" in new and "error 1" not in new
    for path in (access, error):
        assert stat.S_IMODE(path.stat().st_mode) & ~0o640 == 0
        assert os.stat(path).st_mode & stat.S_IFREG


def test_unopenable_path_fails_clearly(tmp_path: Path) -> None:
    files = LogFiles(str(tmp_path / "access.log"), str(tmp_path / "missing-dir" / "error.log"))
    with pytest.raises(LogFileError, match=re.escape("missing-dir/error.log: No such file or directory")):
        files.open()
    assert logfiles.access_fd() == 1  # nothing swapped


def test_reopen_failure_keeps_the_old_file(tmp_path: Path) -> None:
    sub = tmp_path / "logs"
    sub.mkdir()

    def body() -> object:
        files = LogFiles(str(sub / "access.log"), None)
        files.open()
        os.write(logfiles.access_fd(), b"one\n")
        os.rename(sub, tmp_path / "moved")  # the path's directory is gone
        assert files.reopen() == ([], [])
        os.write(logfiles.access_fd(), b"two\n")
        return None

    in_child(body)
    assert (tmp_path / "moved" / "access.log").read_text() == "one\ntwo\n"


@pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")
def test_files_belong_to_the_worker_user(tmp_path: Path) -> None:
    nobody = pwd.getpwnam("nobody")
    owner = Ids("nobody", nobody.pw_uid, "nogroup", nobody.pw_gid)
    files = LogFiles(str(tmp_path / "access.log"), None, owner)

    def body() -> object:
        files.open()
        os.rename(tmp_path / "access.log", tmp_path / "access.log.1")
        files.reopen()
        return None

    in_child(body)
    for name in ("access.log", "access.log.1"):
        st = (tmp_path / name).stat()
        assert (st.st_uid, st.st_gid) == (nobody.pw_uid, nobody.pw_gid)


def test_worker_adopts_the_new_files(tmp_path: Path) -> None:
    """Lines held when the Reopen arrives go to the old file, later ones to the new; none twice."""
    old_path, new_path = tmp_path / "old.log", tmp_path / "new.log"
    fd = os.open(old_path, logfiles.FLAGS, 0o640)
    loop = asyncio.new_event_loop()
    try:
        log = AccessLog(loop, fd=fd)
        log.write({"n": 1})
        log.write({"n": 2})  # buffered, not written yet
        assert old_path.read_text() == ""
        new = os.open(new_path, logfiles.FLAGS, 0o640)
        logfiles.adopt(["access"], [new], log)
        with pytest.raises(OSError):
            os.fstat(new)  # the received fd was closed
        log.write({"n": 3})
        log.flush()
    finally:
        loop.close()
        os.close(fd)
    assert [json.loads(line)["n"] for line in old_path.read_text().splitlines()] == [1, 2]
    assert [json.loads(line)["n"] for line in new_path.read_text().splitlines()] == [3]


def test_worker_adopts_the_error_log(tmp_path: Path) -> None:
    def body() -> object:
        sys.stderr = sys.__stderr__
        logs.setup("worker 0")
        logs.get_logger("worker").warning("before")
        new = os.open(tmp_path / "error.log", logfiles.FLAGS, 0o640)
        logfiles.adopt(["error"], [new], AccessLog(asyncio.new_event_loop()))
        logs.get_logger("worker").warning("after")
        logging.getLogger("fsmfast").handlers[0].flush()
        return None

    in_child(body)
    text = (tmp_path / "error.log").read_text()
    assert "after" in text and "before" not in text


def test_sink_reset_leaves_a_private_description(tmp_path: Path) -> None:
    """A sink writing through its own description of a pipe must write to the new file after a dup2."""
    read, write = os.pipe()
    fd = os.dup(write)
    try:
        sink = LineSink(fd, 1 << 20, lambda n: b"")
        sink._fallback()  # a private, non-blocking description via /proc/self/fd
        assert sink._out not in (-1, fd)
        private = sink._out
        file_fd = os.open(tmp_path / "f.log", logfiles.FLAGS, 0o640)
        os.dup2(file_fd, fd)
        os.close(file_fd)
        sink.reset()
        with pytest.raises(OSError):
            os.fstat(private)  # closed
        sink.add(b"line\n")
        assert sink.flush()
        assert (tmp_path / "f.log").read_text() == "line\n"
        os.set_blocking(read, False)
        with pytest.raises(BlockingIOError):
            os.read(read, 100)  # nothing went to the pipe
    finally:
        for f in (read, write, fd):
            os.close(f)


def test_a_worker_writes_the_access_log_on_its_stdout(tmp_path: Path) -> None:
    access = tmp_path / "access.log"

    def body() -> object:
        LogFiles(str(access), None).open()
        master_fd = logfiles.access_fd()
        # The fork of a worker.
        pid = os.fork()
        if pid == 0:
            try:
                logfiles.in_worker()
                assert logfiles.access_fd() == 1
                os.write(1, b"from the worker\n")
                try:
                    os.fstat(master_fd)
                    os._exit(3)  # the master's number should be free in the worker
                except OSError:
                    os._exit(0)
            except BaseException:
                os._exit(2)
        _, status = os.waitpid(pid, 0)
        return os.waitstatus_to_exitcode(status)

    assert in_child(body) == 0
    assert access.read_text() == "from the worker\n"
