"""fsmfast.worker.privileges: resolving --user/--group, and the drop in a forked child (needs root)."""

from __future__ import annotations

import ctypes
import grp
import json
import os
import pwd

import pytest

from fsmfast.worker import privileges
from fsmfast.worker.privileges import Ids, PrivilegeError, drop, resolve

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="dropping privileges needs root")
NOBODY = pwd.getpwnam("nobody")


def test_nothing_asked() -> None:
    assert resolve(None, None) is None


@needs_root
def test_resolve_names_and_numbers() -> None:
    # The default group is the user's primary one.
    assert resolve("nobody", None) == Ids("nobody", NOBODY.pw_uid, grp.getgrgid(NOBODY.pw_gid).gr_name, NOBODY.pw_gid)
    assert resolve(str(NOBODY.pw_uid), "0") == Ids("nobody", NOBODY.pw_uid, "root", 0)
    # A bare uid (a container's arbitrary one) works when its group is given.
    assert resolve("54321", "54321") == Ids("54321", 54321, "54321", 54321, named=False)


@pytest.mark.parametrize(
    ("user", "group", "message"),
    [
        ("no-such-user-fsmfast", None, "--user no-such-user-fsmfast: no such user"),
        ("nobody", "no-such-group-fsmfast", "--group no-such-group-fsmfast: no such group"),
        (None, "nogroup", "--group needs --user"),
        ("54321", None, "has no passwd entry, so give its group with --group"),
    ],
)
def test_resolve_errors(user: str | None, group: str | None, message: str) -> None:
    with pytest.raises(PrivilegeError, match=message):
        resolve(user, group)


def test_refused_when_not_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(privileges.os, "geteuid", lambda: 1000)
    monkeypatch.setattr(privileges.os, "getegid", lambda: 1000)
    with pytest.raises(PrivilegeError, match="only a master started as root"):
        resolve("nobody", None)
    # The user it already runs as: nothing to drop, nothing to refuse.
    monkeypatch.setattr(privileges.os, "geteuid", lambda: NOBODY.pw_uid)
    monkeypatch.setattr(privileges.os, "getegid", lambda: NOBODY.pw_gid)
    assert resolve("nobody", None) is None


def _in_child(ids: Ids) -> dict[str, object]:
    """Fork, drop, and report what the child became."""
    read, write = os.pipe()
    master = os.getpid()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(read)
            drop(ids, master_pid=master)
            libc = ctypes.CDLL(None, use_errno=True)
            sig = ctypes.c_int(0)
            libc.prctl(2, ctypes.byref(sig), 0, 0, 0)  # PR_GET_PDEATHSIG
            report = {
                "uid": os.getresuid(),
                "gid": os.getresgid(),
                "groups": os.getgroups(),
                "dumpable": libc.prctl(3, 0, 0, 0, 0),  # PR_GET_DUMPABLE
                "no_new_privs": libc.prctl(39, 0, 0, 0, 0),  # PR_GET_NO_NEW_PRIVS
                "pdeathsig": sig.value,
                "proc_owner": os.stat(f"/proc/{os.getpid()}").st_uid,
            }
            try:
                os.setuid(0)
                report["regained"] = True
            except PermissionError:
                report["regained"] = False
            os.write(write, json.dumps(report).encode())
        except BaseException as exc:
            os.write(write, json.dumps({"error": repr(exc)}).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as fh:
        data = fh.read()
    os.waitpid(pid, 0)
    return dict(json.loads(data))


@needs_root
def test_drop_in_child() -> None:
    ids = resolve("nobody", "nogroup")
    assert ids is not None
    report = _in_child(ids)
    assert report["uid"] == [ids.uid] * 3, report
    assert report["gid"] == [ids.gid] * 3
    assert 0 not in report["groups"]  # type: ignore[operator]
    assert report["regained"] is False
    # Linux resets these on the id change; drop() sets them back.
    assert report["dumpable"] == 1
    assert report["proc_owner"] == ids.uid
    assert report["pdeathsig"] == 15
    assert report["no_new_privs"] == 1


@needs_root
def test_drop_bare_uid_has_no_supplementary_groups() -> None:
    report = _in_child(Ids("54321", 54321, "54321", 54321, named=False))
    assert report["uid"] == [54321] * 3
    assert report["groups"] == []
