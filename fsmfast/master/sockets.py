"""Listening sockets: one per (worker slot, port), all bound to the same address with SO_REUSEPORT.

Why one socket per slot rather than one shared socket: the kernel balances connections across
a SO_REUSEPORT group by hash, so workers do not contend on one accept queue (no thundering
herd, no busiest-worker-takes-all). The master keeps every slot's sockets open for the life of
the slot. When a worker dies, its slot's socket stays in the group and the kernel keeps
queueing connections on it; the respawned worker inherits the same socket and accepts them,
so nothing the kernel already accepted is lost. (Closing the last fd of a reuseport socket
would reset its queued connections instead.)

SO_REUSEPORT also lets any other process of the same user join the group: a second ``fsmfast
run`` on the same port would silently take a share of the connections. So before a port's
group is bound, a probe socket without SO_REUSEPORT checks that nobody listens there
(``probe``), and the operator gets nginx's "Address already in use" naming the other process.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import socket
from collections.abc import Iterable

from fsmfast.master import procinfo

# slot index -> port -> listening socket
SlotSockets = list[dict[int, socket.socket]]


class BindError(Exception):
    """A listener could not be created; the message is ready for the operator."""


def format_address(address: str, port: int) -> str:
    """``0.0.0.0:8000`` or ``[::]:8000``."""
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def family_of(address: str) -> socket.AddressFamily:
    """AF_INET or AF_INET6 for an IP literal; ValueError for anything else (no DNS here)."""
    ip = ipaddress.ip_address(address)
    return socket.AF_INET6 if ip.version == 6 else socket.AF_INET


def _tcp_socket(address: str, port: int, reuseport: bool) -> socket.socket:
    """A TCP socket with the options every listener on ``address`` gets; not bound yet."""
    try:
        family = family_of(address)
    except ValueError:
        raise BindError(f"cannot listen on {format_address(address, port)}: not an IP address literal") from None
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuseport:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6 and address == "::":
            # Dual stack for the wildcard, whatever net.ipv6.bindv6only says.
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    except OSError:
        sock.close()
        raise
    return sock


def probe(address: str, port: int) -> None:
    """Raise BindError when a socket already listens where a group on ``address:port`` would.

    The probe has SO_REUSEADDR (a port whose old connections sit in TIME_WAIT is free) but not
    SO_REUSEPORT, so the kernel refuses it next to any listener that covers the same address:
    the same address, a wildcard (0.0.0.0, or :: which is dual stack here) over a specific one,
    or a specific one under our wildcard; reuseport group or not, same user or not. Listeners
    on other specific addresses of the same port do not conflict and are left alone.

    It is closed before the group is bound (it would conflict with the group itself), which
    leaves a window of a few system calls in which another SO_REUSEPORT process of our user
    could bind first and be joined. Two masters would have to bind the same port within
    microseconds of each other; the probe is there for the operator who starts a second
    instance while the first one serves, which it always catches.
    """
    exclusive(address, port, 1).close()


def exclusive(address: str, port: int, backlog: int) -> socket.socket:
    """A listening socket on ``address:port`` without SO_REUSEPORT (the probe's, and the admin
    listener's: nobody else may share it); BindError naming the holder when the port is taken."""
    where = format_address(address, port)
    try:
        sock = _tcp_socket(address, port, reuseport=False)
    except OSError as e:
        raise BindError(f"cannot listen on {where}: {e.strerror or e}") from None
    try:
        sock.bind((address, port))
        sock.listen(backlog)
    except OSError as e:
        sock.close()
        if e.errno == errno.EADDRINUSE:
            pids = procinfo.listeners(address, port)
            holder = " and ".join(procinfo.describe(pid) for pid in pids) if pids else "another process"
            raise BindError(f"cannot listen on {where}: Address already in use by {holder}") from None
        raise BindError(f"cannot listen on {where}: {e.strerror or e}") from None
    return sock


def bind_listener(address: str, port: int, backlog: int) -> socket.socket:
    """A non-blocking, inheritable listening TCP socket with SO_REUSEADDR and SO_REUSEPORT."""
    where = format_address(address, port)
    try:
        sock = _tcp_socket(address, port, reuseport=True)
    except OSError as e:
        raise BindError(f"cannot listen on {where}: {e.strerror or e}") from None
    try:
        sock.bind((address, port))
        sock.listen(backlog)
        sock.setblocking(False)
        sock.set_inheritable(True)
    except OSError as e:
        sock.close()
        reason = e.strerror or str(e)
        raise BindError(f"cannot listen on {where}: {reason}") from None
    return sock


def bind_slots(address: str, ports: Iterable[int], slots: int, backlog: int) -> SlotSockets:
    """One listener per slot and port; on any failure, everything bound so far is closed.

    Only ports nobody else listens on are bound (``probe``): the caller passes ports it does not
    hold yet (all of them at start, the added ones on reload).
    """
    out: SlotSockets = [{} for _ in range(slots)]
    try:
        for port in sorted(set(ports)):
            probe(address, port)
            for slot in range(slots):
                out[slot][port] = bind_listener(address, port, backlog)
    except BindError:
        close_slots(out)
        raise
    return out


def close_slots(slot_sockets: SlotSockets, ports: Iterable[int] | None = None) -> None:
    """Close (and forget) the given ports of every slot, or all of them."""
    for listeners in slot_sockets:
        for port in list(listeners) if ports is None else list(ports):
            sock = listeners.pop(port, None)
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.close()
