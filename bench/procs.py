"""Processes the harness starts, and what /proc says about them.

Every process is started in its own session (``start_new_session=True``): its tree is one process group,
stopped with ``killpg`` on that group's id (the child's pid) and nothing else. CPU time and memory are read
from /proc for the whole tree of a system: the process the harness started and all its descendants
(fsmfast's master and workers, nginx's master and workers, haproxy's single process).
"""

from __future__ import annotations

import os
import subprocess
import threading
from collections.abc import Sequence
from pathlib import Path

# One set of process helpers for the demo, the tests and the harness. free_port picks below the kernel's
# ephemeral range, which wrk's and the proxies' outgoing connections draw from.
from fsmfast.demo.procs import free_port as free_port
from fsmfast.demo.procs import stop_group, tail
from fsmfast.demo.procs import wait_port as _wait_port
from fsmfast.master.procinfo import stat_fields

CLK_TCK = os.sysconf("SC_CLK_TCK")


def _ppid_and_times(pid: int) -> tuple[int, int, int] | None:
    """(ppid, utime, stime in ticks) from /proc/<pid>/stat, or None if the process is gone."""
    fields = stat_fields(pid)
    if fields is None or len(fields) < 13:
        return None
    # fields[0] is field 3 (state): ppid is field 4, utime 14, stime 15 (1-based, proc(5)).
    return int(fields[1]), int(fields[11]), int(fields[12])


def tree(root: int) -> list[int]:
    """``root`` and all its descendants alive now."""
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        info = _ppid_and_times(int(name))
        if info is not None:
            children.setdefault(info[0], []).append(int(name))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        if os.path.exists(f"/proc/{pid}"):
            out.append(pid)
            todo.extend(children.get(pid, ()))
    return sorted(out)


def cpu_times(pids: Sequence[int]) -> tuple[float, float]:
    """(utime, stime) of ``pids`` (all their threads), in seconds; processes that vanished count 0."""
    user = system = 0
    for pid in pids:
        info = _ppid_and_times(pid)
        if info is not None:
            user += info[1]
            system += info[2]
    return user / CLK_TCK, system / CLK_TCK


def cpu_seconds(pids: Sequence[int]) -> float:
    """utime+stime of ``pids`` (all their threads), in seconds; processes that vanished count 0."""
    return sum(cpu_times(pids))


def busy_seconds() -> float:
    """CPU time the whole machine spent busy so far (all CPUs: everything but idle and iowait), in seconds."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal [guest guest_nice: already inside user and nice]
    return (sum(fields[:8]) - fields[3] - fields[4]) / CLK_TCK


def _status_kib(pid: int, key: bytes) -> int:
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith(key):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def rss_kib(pids: Sequence[int]) -> int:
    return sum(_status_kib(pid, b"VmRSS:") for pid in pids)


def hwm_kib(pids: Sequence[int]) -> int:
    return sum(_status_kib(pid, b"VmHWM:") for pid in pids)


def worker_rss_kib(root: int) -> int:
    """VmRSS of the largest process serving requests: the children of a master (fsmfast, nginx),
    or the root itself when it has none (HAProxy). Pages a worker shares with its master count in
    both, as VmRSS does."""
    pids = tree(root)
    workers = [pid for pid in pids if pid != root] or [root]
    return max(_status_kib(pid, b"VmRSS:") for pid in workers)


class RssSampler:
    """Samples the summed VmRSS of a process tree every ``interval`` seconds and keeps the maximum."""

    def __init__(self, root: int, interval: float = 0.2) -> None:
        self.root = root
        self.interval = interval
        self.peak_kib = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def _run(self) -> None:
        pids = tree(self.root)
        while True:
            self.peak_kib = max(self.peak_kib, rss_kib(pids))
            if self._stop.wait(self.interval):
                return

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        # One last sample after the load, so a short run still has one.
        self.peak_kib = max(self.peak_kib, rss_kib(tree(self.root)))


def wait_port(port: int, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    """Wait until 127.0.0.1:``port`` accepts; see :func:`fsmfast.demo.procs.wait_port`."""
    _wait_port("127.0.0.1", port, timeout, proc)


class Proc:
    """One long-running process (and its children) started by the harness, output into files in ``logdir``."""

    def __init__(
        self,
        name: str,
        argv: list[str],
        logdir: Path,
        cpus: str | None,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
        wrapper: list[str] | None = None,
    ) -> None:
        self.name = name
        self.argv = argv
        self.cpus = cpus
        self.stdout = logdir / f"{name}.out"
        self.stderr = logdir / f"{name}.err"
        # wrapper: a command that runs the system (valgrind for bench/instructions.py).
        cmd = (["taskset", "-c", cpus] if cpus is not None else []) + (wrapper or []) + argv
        with open(self.stdout, "wb") as out, open(self.stderr, "wb") as err:
            # taskset execs the command, so the pid is the system's own root process.
            self.proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=err, start_new_session=True, env=env, cwd=cwd
            )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stderr_tail(self, lines: int = 30) -> str:
        return tail(self.stderr, lines)

    def stop(self, grace: float = 5.0) -> None:
        """SIGTERM to the process group, SIGKILL to it after ``grace`` seconds."""
        stop_group(self.proc, grace=grace)
