"""The master's pidfile: atomic write, stale versus live, removal only of our own."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fsmfast.master.pidfile import Pidfile, PidfileError, read_pid
from fsmfast.master.procinfo import is_fsmfast_master


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


def started(argv: list[str]) -> subprocess.Popen[bytes]:
    """``argv`` running, once /proc shows its command line (Popen returns before exec has set it up)."""
    proc = subprocess.Popen(argv)
    deadline = time.monotonic() + 10
    while Path(f"/proc/{proc.pid}/cmdline").read_bytes() != "\0".join(argv).encode() + b"\0":
        assert time.monotonic() < deadline, f"{argv} never started"
        time.sleep(0.01)
    return proc


@pytest.fixture
def fake_master(tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A live process whose command line is that of an installed ``fsmfast run`` script."""
    script = tmp_path / "bin" / "fsmfast"
    script.parent.mkdir()
    script.write_text(f"#!{sys.executable}\nimport time\ntime.sleep(60)\n")
    script.chmod(0o755)
    # The kernel runs the script's interpreter with the script's path as its first argument.
    proc = started([sys.executable, str(script), "run", "-c", "gw.yaml"])
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait()


def test_live_fsmfast_master_is_refused(tmp_path: Path, fake_master: subprocess.Popen[bytes]) -> None:
    path = tmp_path / "fsmfast.pid"
    live = fake_master.pid
    path.write_text(f"{live}\n")
    pidfile = Pidfile(str(path))
    assert pidfile.validate() == live
    with pytest.raises(PidfileError) as info:
        pidfile.create(4242)
    assert str(info.value) == (
        f"pidfile {path} names running process pid {live} ({sys.executable} {tmp_path}/bin/fsmfast run -c gw.yaml); "
        "is fsmfast already running?"
    )
    assert path.read_text() == f"{live}\n"


@pytest.mark.parametrize("who", ["pid 1", "sleep"])
def test_live_pid_of_another_program_is_stale(tmp_path: Path, who: str) -> None:
    # After a crash or a reboot the old pid often belongs to something else by now.
    sleeper = started(["sleep", "60"]) if who == "sleep" else None
    try:
        live = sleeper.pid if sleeper is not None else 1
        assert "fsmfast" not in Path(f"/proc/{live}/cmdline").read_bytes().decode(errors="replace")
        path = tmp_path / "fsmfast.pid"
        path.write_text(f"{live}\n")
        warnings: list[str] = []
        pidfile = Pidfile(str(path), warn=warnings.append)
        pidfile.create(4242)
        assert read_pid(str(path)) == 4242
        assert len(warnings) == 1
        assert warnings[0].startswith(f"pidfile {path} names pid {live} (")
        assert warnings[0].endswith("which is not fsmfast; the file is stale, overwriting it")
        if sleeper is not None:
            assert f"pid {live} (sleep 60)" in warnings[0]
    finally:
        if sleeper is not None:
            sleeper.kill()
            sleeper.wait()


@pytest.mark.parametrize(
    ("argv", "master"),
    [
        (["/usr/bin/python3", "-m", "fsmfast", "run", "-c", "gw.yaml"], True),
        (["python3", "-u", "-X", "dev", "-m", "fsmfast", "run"], True),
        (["/venv/bin/python", "/venv/bin/fsmfast", "run", "-c", "gw.yaml"], True),
        (["/usr/local/bin/fsmfast", "--version"], False),
        (["/usr/local/bin/fsmfast", "demo", "--port", "8000"], True),
        (["python3", "-m", "fsmfast", "check", "-c", "gw.yaml"], False),
        (["python3", "-m", "pytest", "tests/fsmfast", "run"], False),
        (["sleep", "60"], False),
        (["nginx: master process nginx"], False),
        ([], False),
    ],
)
def test_fsmfast_command_lines(argv: list[str], master: bool) -> None:
    assert is_fsmfast_master(argv) is master


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
