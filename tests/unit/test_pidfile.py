"""The master's pidfile: atomic write, stale versus live, removal only of our own."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from fsmfast.master.pidfile import Pidfile, PidfileError, read_pid


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_create_writes_pid_atomically(tmp_path: Path) -> None:
    path = tmp_path / "fsmfast.pid"
    pidfile = Pidfile(str(path))
    pidfile.create(4242)
    assert path.read_text() == "4242\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert os.listdir(tmp_path) == ["fsmfast.pid"]  # no temporary file left behind


def test_failed_rename_keeps_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "fsmfast.pid"
    path.write_text(f"{dead_pid()}\n")
    before = path.read_text()

    def fail(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "rename", fail)
    with pytest.raises(PidfileError, match="No space left on device"):
        Pidfile(str(path)).create(4242)
    # Readers never see a half-written pidfile, and the temporary file is cleaned up.
    assert path.read_text() == before
    assert os.listdir(tmp_path) == ["fsmfast.pid"]


def test_live_pid_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "fsmfast.pid"
    live = os.getppid()  # the process that started pytest: alive while we run
    path.write_text(f"{live}\n")
    pidfile = Pidfile(str(path))
    assert pidfile.validate() == live
    with pytest.raises(PidfileError, match=rf"names running process {live}; is fsmfast already running\?"):
        pidfile.create(4242)
    assert path.read_text() == f"{live}\n"


@pytest.mark.parametrize("content", ["DEAD", "", "garbage\n", "-5\n", "+12\n", "0\n"])
def test_stale_or_unreadable_content_is_replaced(tmp_path: Path, content: str) -> None:
    path = tmp_path / "fsmfast.pid"
    path.write_text(f"{dead_pid()}\n" if content == "DEAD" else content)
    pidfile = Pidfile(str(path))
    assert pidfile.validate() is None
    pidfile.create(4242)
    assert read_pid(str(path)) == 4242


def test_our_own_pid_counts_as_stale(tmp_path: Path) -> None:
    # A container restarted with the same pid 1 finds its own pid in the old file.
    path = tmp_path / "fsmfast.pid"
    path.write_text(f"{os.getpid()}\n")
    Pidfile(str(path)).create(os.getpid())
    assert read_pid(str(path)) == os.getpid()


def test_unlink_removes_only_our_pid(tmp_path: Path) -> None:
    path = tmp_path / "fsmfast.pid"
    pidfile = Pidfile(str(path))
    pidfile.create(4242)
    pidfile.unlink()
    assert not path.exists()
    pidfile.unlink()  # idempotent

    pidfile.create(4242)
    path.write_text("5151\n")  # another master took the file over
    pidfile.unlink()
    assert path.read_text() == "5151\n"


def test_missing_directory_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(PidfileError, match="cannot write pidfile"):
        Pidfile(str(tmp_path / "nope" / "fsmfast.pid")).create(4242)
