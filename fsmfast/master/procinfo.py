"""What /proc says about other processes: their command line, and who listens on a port.

Only the master's start-up and reload paths use this (a stale pidfile, a port someone else holds),
never a request. Everything is best effort: a process owned by another user hides its fds, and a
process may exit while we read, so every lookup can come back empty.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import struct

_LISTEN = "0A"  # TCP_LISTEN in /proc/net/tcp's "st" column
_SUBCOMMANDS = frozenset({"run", "demo"})


def cmdline(pid: int) -> list[str] | None:
    """``pid``'s argv, or None when the process is gone or hidden from us."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            raw = f.read(65536)
    except OSError:
        return None
    if not raw:
        return None  # a zombie or a kernel thread
    return raw.rstrip(b"\0").decode(errors="replace").split("\0")


def is_fsmfast_master(argv: list[str]) -> bool:
    """True for the argv of ``fsmfast run``/``fsmfast demo``, as a script or ``python -m fsmfast``.

    The master never rewrites its argv, so what the operator typed is what /proc shows; a worker is
    a fork and shows the same argv, which is fine: a live worker means a live master too.
    """
    if not argv:
        return False
    program = os.path.basename(argv[0])
    if program == "fsmfast":
        i = 1
    elif program.startswith("python"):
        i = 1
        # Interpreter options (-u, -X dev, -W error) come before the script or -m module.
        while i < len(argv) and argv[i].startswith("-") and argv[i] != "-m":
            i += 2 if argv[i] in ("-X", "-W") else 1
        if argv[i : i + 1] == ["-m"] and argv[i + 1 : i + 2] in (["fsmfast"], ["fsmfast.cli"]):
            i += 2
        elif i < len(argv) and os.path.basename(argv[i]) == "fsmfast":
            i += 1
        else:
            return False
    else:
        return False
    # The subcommand is the first argument after the program that is not an option.
    rest = [a for a in argv[i:] if not a.startswith("-")]
    return bool(rest) and rest[0] in _SUBCOMMANDS


def describe(pid: int) -> str:
    """``pid 1234 (nginx: master process nginx)``, the command cut to a readable length."""
    argv = cmdline(pid)
    if not argv:
        return f"pid {pid}"
    command = " ".join(argv)
    if len(command) > 160:
        command = command[:157] + "..."
    return f"pid {pid} ({command})"


def listeners(address: str, port: int) -> list[int]:
    """Pids of the processes holding a TCP socket that listens on ``port`` where ``address`` would.

    Of a tree sharing one socket (a master and its workers) only the topmost pids are returned.
    Empty when the socket belongs to a process we cannot inspect (another user's, without root).
    """
    inodes = _listening_inodes(ipaddress.ip_address(address), port)
    if not inodes:
        return []
    holders = _holders(inodes)
    parents = {pid: _ppid(pid) for pid in holders}
    return sorted(pid for pid in holders if parents[pid] not in holders)


def _listening_inodes(ours: ipaddress.IPv4Address | ipaddress.IPv6Address, port: int) -> set[str]:
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table, encoding="ascii") as f:
                next(f, None)  # the header line
                for line in f:
                    fields = line.split()
                    if len(fields) < 10 or fields[3] != _LISTEN:
                        continue
                    hex_addr, _, hex_port = fields[1].partition(":")
                    if int(hex_port, 16) == port and _overlaps(ours, _parse_address(hex_addr)):
                        inodes.add(fields[9])
        except (OSError, ValueError):
            continue
    return inodes


def _parse_address(hex_addr: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    # The kernel prints each 32-bit word of the address as a host-order integer.
    words = [int(hex_addr[i : i + 8], 16) for i in range(0, len(hex_addr), 8)]
    packed = b"".join(struct.pack("=I", w) for w in words)
    family = socket.AF_INET if len(packed) == 4 else socket.AF_INET6
    ip = ipaddress.ip_address(socket.inet_ntop(family, packed))
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def _overlaps(
    ours: ipaddress.IPv4Address | ipaddress.IPv6Address, theirs: ipaddress.IPv4Address | ipaddress.IPv6Address
) -> bool:
    """Whether a listener on ``theirs`` can stand in the way of one on ``ours`` (same port)."""
    if ours == theirs:
        return True
    # A wildcard covers every address of its family, and :: (dual stack) IPv4 as well; whether a
    # given :: socket is v6-only is not in the table, so count it: naming one process too many
    # beats naming none.
    for a, b in ((ours, theirs), (theirs, ours)):
        if a.is_unspecified and (a.version == b.version or a.version == 6):
            return True
    return False


def _holders(inodes: set[str]) -> set[int]:
    targets = {f"socket:[{inode}]" for inode in inodes}
    found: set[int] = set()
    for entry in os.listdir("/proc"):
        if not entry.isdecimal():
            continue
        fd_dir = f"/proc/{entry}/fd"
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            continue  # another user's process, or gone
        for fd in fds:
            try:
                if os.readlink(f"{fd_dir}/{fd}") in targets:
                    found.add(int(entry))
                    break
            except OSError:
                continue
    return found


def _ppid(pid: int) -> int:
    fields = stat_fields(pid)
    return int(fields[1]) if fields is not None and len(fields) > 1 and fields[1].isdecimal() else 0


def stat_fields(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat from the third on (state, ppid, ...; proc(5) numbers them
    from 1), or None when the process is gone. The command name before them is in parentheses and
    may hold spaces or ')', so the split starts after the last ')'."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode(errors="replace")
    except OSError:
        return None
    return stat.rpartition(")")[2].split()


def rss_bytes(pid: int) -> int | None:
    """Resident memory of ``pid`` (/proc/<pid>/statm), or None when it cannot be read."""
    try:
        with open(f"/proc/{pid}/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, IndexError, ValueError):
        return None


_PAGE = os.sysconf("SC_PAGE_SIZE")
