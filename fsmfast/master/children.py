"""What the master needs to know about the processes it forks: how they ended, and tying their
life to its own."""

from __future__ import annotations

import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1


def describe_exit(status: int) -> str:
    """``exited with code 3`` / ``was killed by SIGKILL; perhaps out of memory?``."""
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = f"signal {sig}"
        text = f"was killed by {name}"
        if sig == signal.SIGKILL:
            text += "; perhaps out of memory?"
        return text
    if os.WIFEXITED(status):
        return f"exited with code {os.WEXITSTATUS(status)}"
    return f"ended with wait status {status}"


def die_with_parent(master_pid: int, sig: signal.Signals = signal.SIGTERM) -> None:
    """Ask Linux to send ``sig`` to this child if the master dies.

    Orphaned workers would keep their SO_REUSEPORT sockets and serve a stale snapshot next to
    a restarted master, with no pidfile left to notice them.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
    except (OSError, AttributeError):
        return
    # The master may have died between the fork and the prctl: then nobody would signal us.
    if os.getppid() != master_pid:
        os.kill(os.getpid(), sig)
