"""``--user``/``--group``: workers drop root before they serve, as nginx's do.

The master stays root: it binds every listener (ports 80 and 443 included, one SO_REUSEPORT
socket per worker slot, so no worker ever binds), reads the manifests with their keys, opens the
log files and chowns them to the worker user. It resolves the names once, at start
(:func:`resolve`), so an unknown user fails the start instead of every worker's boot.

A worker child calls :func:`drop` before it decodes the snapshot. Order matters: supplementary
groups first (``initgroups``, the user's groups as login would set them; none for a bare uid),
then the gid, then the uid, since after ``setuid`` nothing else may change. Then a check that
neither the real, effective nor saved ids kept 0 (unless root was asked for), because a worker
that could switch back to root defeats the point.

Linux then clears two things a worker relies on. ``dumpable`` falls to 0, which makes
``/proc/<pid>`` root's and forbids core dumps and py-spy: set back to 1, as nginx does. The
parent-death signal is reset by any credential change: armed again, or a worker would outlive a
killed master. ``no_new_privs`` is set on the way, so nothing the worker could exec gains ids back.
"""

from __future__ import annotations

import ctypes
import grp
import os
import pwd
import signal

import msgspec

from fsmfast.master.children import die_with_parent

PR_SET_DUMPABLE = 4
PR_SET_NO_NEW_PRIVS = 38


class PrivilegeError(Exception):
    """A --user/--group the master cannot honour; the message is for the operator."""


class Ids(msgspec.Struct, frozen=True):
    user: str  # a name, or the uid as text when it has no passwd entry
    uid: int
    group: str
    gid: int
    named: bool = True  # the user has a passwd entry: initgroups, else no supplementary groups


def resolve(user: str | None, group: str | None) -> Ids | None:
    """The ids workers drop to; None when there is nothing to drop. Raises PrivilegeError."""
    if user is None and group is None:
        return None
    if user is None:
        raise PrivilegeError("--group needs --user: the workers switch to a user and that user's or the given group")
    entry = _passwd(user)
    if entry is not None:
        name, uid, primary = entry.pw_name, entry.pw_uid, entry.pw_gid
    elif user.isdecimal():
        name, uid, primary = user, int(user), None
    else:
        raise PrivilegeError(f"--user {user}: no such user")
    if group is not None:
        gentry = _group(group)
        if gentry is not None:
            gname, gid = gentry.gr_name, gentry.gr_gid
        elif group.isdecimal():
            gname, gid = group, int(group)
        else:
            raise PrivilegeError(f"--group {group}: no such group")
    elif primary is not None:
        gid = primary
        gname = _group_name(primary)
    else:
        raise PrivilegeError(f"--user {user}: uid {uid} has no passwd entry, so give its group with --group")
    ids = Ids(name, uid, gname, gid, named=entry is not None)
    if os.geteuid() != 0:
        if (uid, gid) == (os.geteuid(), os.getegid()):
            return None  # already running as that user: nothing to drop
        raise PrivilegeError(
            f"--user {user}: only a master started as root can switch its workers to another user"
            f" (this one runs as uid {os.geteuid()}); start it as root, or leave out --user/--group"
        )
    return ids


def drop(ids: Ids, master_pid: int | None = None) -> None:
    """In a worker child, before it serves: become ``ids`` for good. Raises PrivilegeError."""
    try:
        if ids.named:
            os.initgroups(ids.user, ids.gid)
        else:
            os.setgroups([])
        os.setresgid(ids.gid, ids.gid, ids.gid)
        os.setresuid(ids.uid, ids.uid, ids.uid)
    except OSError as exc:
        raise PrivilegeError(f"cannot switch to user {ids.user} group {ids.group}: {exc.strerror}") from exc
    if os.getresuid() != (ids.uid,) * 3 or os.getresgid() != (ids.gid,) * 3:
        raise PrivilegeError(f"switching to user {ids.user} left ids {os.getresuid()} {os.getresgid()}")
    if ids.uid != 0:
        if 0 in os.getresuid() or 0 in os.getresgid() or (ids.gid != 0 and 0 in os.getgroups()):
            raise PrivilegeError(f"switching to user {ids.user} kept a root id")
        try:
            os.setuid(0)
        except PermissionError:
            pass
        else:
            raise PrivilegeError(f"after switching to user {ids.user} the worker could become root again")
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_DUMPABLE, 1, 0, 0, 0)
    libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
    if master_pid is not None:
        die_with_parent(master_pid, signal.SIGTERM)


def _passwd(user: str) -> pwd.struct_passwd | None:
    try:
        return pwd.getpwnam(user)
    except KeyError:
        pass
    if user.isdecimal():
        try:
            return pwd.getpwuid(int(user))
        except KeyError:
            pass
    return None


def _group(group: str) -> grp.struct_group | None:
    try:
        return grp.getgrnam(group)
    except KeyError:
        pass
    if group.isdecimal():
        try:
            return grp.getgrgid(int(group))
        except KeyError:
            pass
    return None


def _group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)
