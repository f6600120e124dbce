"""The prefork master, in the style of gunicorn's arbiter.

Theory of operation
-------------------
The master builds the first snapshot (in a short-lived child, ``forked_build``, so that neither
it nor the workers it forks carry a build's garbage), binds one SO_REUSEPORT listener per
(worker slot, port) (see ``sockets``), and forks one worker per slot. It never proxies traffic
and never creates an event loop: uvloop is not fork-safe, and a master that only forks, waits
and signals has little that can break.

Signal handlers only put the signal number on a queue. The main loop waits on that queue with a
timeout of about a second, dispatches each signal to ``handle_<name>``, reaps dead children and
respawns missing slots. SIGCHLD wakes the loop, so a dead worker is replaced at once; the
slot's listeners stayed open in the master, so connections the kernel queued meanwhile are
accepted by the replacement.

    HUP   reload: rebuild the snapshot from the same path as a new generation; on any error
          keep serving the old one. Otherwise bind sockets for added ports, push the encoded
          snapshot (same bytes to every worker) with the worker's new-port fds attached,
          collect acks, then close the sockets of removed ports.
    TERM  graceful stop: the master and the workers close their listening sockets at once (new
          connections are refused), and workers drain for up to ``graceful_timeout``.
    INT, QUIT  fast stop.
    USR1  reopen the log files (after logrotate moved them) and have the workers do the same.
    CHLD  wake up and reap.

The loop waits in a ``selectors`` poll rather than on the queue alone: on the signal wake-up
pipe, on every worker's control channel (readiness, late acks), on the admin listener
(``fsmfast.admin``) and, with ``--watch``, on the config directory's inotify descriptor. Each
turn it also runs the watchdog (``fsmfast.master.watchdog``): a worker whose event loop stopped
beating is aborted and replaced.

A worker exiting with EXIT_WORKER_BOOT halts the master (after stopping the others) rather
than respawning in a loop. A worker that does not read its push or ack it in time is killed
and respawned with the current snapshot, so the master never waits on one stuck worker.
"""

from __future__ import annotations

import contextlib
import gc
import os
import queue
import select
import selectors
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType
from typing import TYPE_CHECKING, Any, NoReturn

from fsmfast import __version__, logs
from fsmfast import snapshot as snapmod
from fsmfast.admin.server import AdminServer
from fsmfast.errors import EXIT_BIND, EXIT_CONFIG, EXIT_OK, EXIT_USAGE, EXIT_WORKER_BOOT
from fsmfast.master import channel, forked_build, logfiles, procinfo, sockets, watchdog
from fsmfast.master.channel import Ack, FrameReader
from fsmfast.master.children import describe_exit, die_with_parent
from fsmfast.master.notify import Notifier, strip_env
from fsmfast.master.pidfile import Pidfile, PidfileError
from fsmfast.master.watch import Watcher
from fsmfast.metrics.master import MasterMetrics
from fsmfast.metrics.shm import StatsRegion
from fsmfast.settings import Settings
from fsmfast.shared.endpoints import SharedState
from fsmfast.worker import privileges

if TYPE_CHECKING:
    from fsmfast.worker.boot import WorkerBoot

log = logs.get_logger("master")

# A worker must take a pushed frame within this many seconds (per socket operation), and ack
# the new generation within ACK_TIMEOUT of the push.
PUSH_TIMEOUT = 5.0
ACK_TIMEOUT = 5.0
# SIGTERM stop: graceful_timeout plus this, then SIGKILL. Fast stop: this long, then SIGKILL.
GRACE_EXTRA = 5.0
FAST_STOP_TIMEOUT = 3.0
# A worker that dies sooner than this after its fork is "flapping": its respawns back off.
FLAP_LIFETIME = 1.0
MAX_RESPAWN_DELAY = 5.0

SIGNALS = (signal.SIGHUP, signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGUSR1, signal.SIGCHLD)


@dataclass
class Worker:
    slot: int
    pid: int
    channel: socket.socket  # the master's end; timeouts, never blocks forever
    reader: FrameReader
    born: float
    generation: int  # the generation it was forked with or last acked
    region: StatsRegion
    ready_at: float = 0.0  # when it said it serves (monotonic); 0 until then
    aborted_at: float = 0.0  # when the watchdog sent SIGABRT
    # Why the master killed it, for fsmfast_worker_restarts_total: "watchdog" or "unresponsive".
    killed_for: str | None = None
    ack: Ack | None = None  # the last ack it sent


@dataclass
class ReloadResult:
    result: str  # "success" or "failure"
    generation: int  # the one served afterwards
    at: float  # epoch seconds
    trigger: str  # "signal" or "watch"
    error: str | None = None


def run(settings: Settings) -> int:
    """Run the master until it is stopped; return the process exit code."""
    logs.setup("master", rate_limit=False)
    return Arbiter(settings).run()


class Arbiter:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.slots: sockets.SlotSockets = [{} for _ in range(settings.workers)]
        self.ports: set[int] = set()
        self.schemes: dict[int, str] = {}
        self.generation = 0
        self.snapshot_bytes = b""
        self.workers: dict[int, Worker] = {}  # pid -> worker
        self.signals: queue.SimpleQueue[int] = queue.SimpleQueue()
        self.pidfile: Pidfile | None = None
        self.stop_mode: str | None = None  # "graceful" or "fast" once a stop was asked for
        self.stopping = False  # workers are being stopped: reap without respawning
        self.halt_code: int | None = None
        self.flaps = [0] * settings.workers
        self.respawn_at = [0.0] * settings.workers
        self.worker_main: Callable[[WorkerBoot], NoReturn] | None = None
        self._old_handlers: dict[int, object] = {}
        self.selector = selectors.DefaultSelector()
        # Signals only queue (see _on_signal); this pipe wakes the select() they interrupt.
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.selector.register(self._wake_r, selectors.EVENT_READ, self._drain_wakeups)
        self.stats = MasterMetrics()  # what /metrics shows
        # The machine-wide state of the resilience policies (the arena, made with the first build).
        self.shared = SharedState(settings.workers)
        self.admin: AdminServer | None = None
        self.watcher: Watcher | None = None
        self.notifier = Notifier.from_env()
        self.ids: privileges.Ids | None = None  # --user/--group: what workers drop to
        self.logfiles: logfiles.LogFiles | None = None
        self.started = time.time()
        self.serving = False  # every worker was ready once: READY=1 was sent
        self.last_reload: ReloadResult | None = None
        self._dump: tuple[int, dict[str, Any]] | None = None  # (generation, /config) cached

    # -- lifecycle -------------------------------------------------------------------------

    def run(self) -> int:
        # Handlers first: a signal during start-up is queued and handled by the main loop instead
        # of killing the master half-way (a SIGTERM before the loop runs means: stop right away).
        self._install_signals()
        try:
            return self._start()
        finally:
            self._restore_signals()
            self.selector.close()
            os.close(self._wake_r)
            os.close(self._wake_w)

    def _start(self) -> int:
        # Before the build, so that an unknown user fails at once, and the build's errors reach the error log.
        try:
            self.ids = privileges.resolve(self.settings.user, self.settings.group)
            files = logfiles.LogFiles(
                self.settings.access_log_path if self.settings.access_log else None,
                self.settings.error_log_path,
                self.ids,
            )
            files.open()
        except (privileges.PrivilegeError, logfiles.LogFileError) as e:
            log.error("%s", e)
            return EXIT_USAGE
        self.logfiles = files
        first = self.first_build()
        if first is None:
            return EXIT_CONFIG
        ports, self.schemes, snapshot_bytes, summary = first.ports, first.schemes, first.snapshot, first.summary
        try:
            # Imported once here, before any fork, so every worker shares the loaded modules.
            from fsmfast.worker.main import worker_main
        except Exception as e:
            log.exception("cannot load the worker: %s", e)
            return EXIT_WORKER_BOOT
        self.worker_main = worker_main
        if self.settings.pid_file:
            self.pidfile = Pidfile(self.settings.pid_file, warn=lambda text: log.warning("%s", text))
            try:
                self.pidfile.create(os.getpid())
            except PidfileError as e:
                self.pidfile = None
                log.error("%s", e)
                return EXIT_BIND
        try:
            return self._serve(ports, snapshot_bytes, summary)
        finally:
            self._cleanup()

    def _serve(self, ports: set[int], snapshot_bytes: bytes, summary: str) -> int:
        try:
            self.slots = sockets.bind_slots(
                self.settings.listen_address, ports, self.settings.workers, self.settings.backlog
            )
        except sockets.BindError as e:
            log.error("%s", e)
            return EXIT_BIND
        self.ports = ports
        self.generation = 1
        self._take_snapshot(snapshot_bytes, forked=False)  # before any fork
        if not self._start_admin():
            return EXIT_BIND
        if self.settings.watch:
            try:
                self.watcher = Watcher(self.settings.config_path)
            except OSError as e:
                log.error("--watch: %s; the configuration reloads on SIGHUP only", e)
            else:
                self.selector.register(self.watcher.fileno(), selectors.EVENT_READ, self.watcher.on_readable)
        log.info("fsmfast %s master started; generation 1: %s", __version__, summary)
        if not ports:
            log.warning("the configuration has no listeners; nothing is served until a reload adds one")
        for port in sorted(ports):
            self._log_listening(port)
        _freeze_heap()
        self.manage_workers()
        while True:
            self.wait_and_dispatch(self._loop_timeout())
            if self.stop_mode is not None:
                self.stop(graceful=self.stop_mode == "graceful")
                return EXIT_OK
            self.reap()
            if self.halt_code is not None:
                self.stop(graceful=True)
                return self.halt_code
            now = time.monotonic()
            self.watch_workers(now)
            if self.watcher is not None and self.watcher.due(now):
                log.info("configuration files changed: reloading %s", self.settings.config_path)
                self.reload(trigger="watch")
            if self.admin is not None:
                self.admin.expire(now)
            self.manage_workers()

    def _start_admin(self) -> bool:
        if not self.settings.admin_address:
            return True
        from fsmfast.admin import endpoints
        from fsmfast.admin.server import AdminServer
        from fsmfast.cli import split_admin_address

        host, port = split_admin_address(self.settings.admin_address)
        try:
            self.admin = AdminServer(self.selector, host, port, endpoints.handler(self))
        except sockets.BindError as e:
            log.error("admin listener: %s (--admin-address sets another, an empty value turns it off)", e)
            return False
        log.info("admin listener on http://%s (/metrics /healthz /readyz /config /status)", self.admin.address)
        return True

    def _cleanup(self) -> None:
        for w in self.workers.values():
            with contextlib.suppress(OSError):
                w.channel.close()
            w.region.close()
        if self.admin is not None:
            self.admin.close()
        if self.watcher is not None:
            self.watcher.close()
        sockets.close_slots(self.slots)
        self.shared.close()
        if self.pidfile is not None:
            try:
                self.pidfile.unlink()
            except OSError as e:
                log.error("cannot remove pidfile %s: %s", self.pidfile.path, e.strerror)
        log.info("master stopped")

    def first_build(self) -> forked_build.Outcome | None:
        """Build generation 1, logging every issue; None when the configuration is invalid."""
        result = forked_build.build(self.settings.config_path, 1, SIGNALS)
        if result.errors:
            log.error("configuration is invalid (%s):", _count(len(result.errors), "error"))
            for issue in result.errors:
                log.error("  %s", issue)
            return None
        if result.unreadable:
            log.error("cannot read configuration %s: %s", self.settings.config_path, result.unreadable)
            return None
        if result.crash:
            log.error("cannot build configuration %s: %s", self.settings.config_path, result.crash)
            return None
        self._log_warnings(result.warnings)
        return result

    def _log_warnings(self, warnings: list[str]) -> None:
        """A build's warnings, less the one this run's flags make untrue: a fleet-wide rate limit
        "applied only by a gateway run with --ratelimit-redis" when this gateway runs with it (the
        build cannot know the flags; ``fsmfast check`` still says it)."""
        if self.settings.ratelimit_redis:
            from fsmfast.config.edge import NEEDS_REDIS  # only then: the master imports no config check

            warnings = [w for w in warnings if not w.endswith(NEEDS_REDIS)]
        for warning in warnings:
            log.warning("%s", warning)

    # -- signals ---------------------------------------------------------------------------

    def _install_signals(self) -> None:
        for sig in SIGNALS:
            self._old_handlers[sig] = signal.signal(sig, self._on_signal)
        self._old_wakeup_fd = signal.set_wakeup_fd(self._wake_w, warn_on_full_buffer=False)

    def _restore_signals(self) -> None:
        with contextlib.suppress(ValueError):
            signal.set_wakeup_fd(self._old_wakeup_fd)
        for sig, handler in self._old_handlers.items():
            with contextlib.suppress(OSError, ValueError, TypeError):
                # Whatever signal() returned before, put back as it was (None for a C-level handler is refused).
                signal.signal(sig, handler)  # type: ignore[arg-type]
        self._old_handlers.clear()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        # NO LOGGING, just queue the signal: the handler runs between any two bytecodes.
        self.signals.put_nowait(signum)

    def _loop_timeout(self) -> float:
        timeout = 1.0
        if self.watcher is not None:
            timeout = min(timeout, self.watcher.timeout(time.monotonic()))
        live = {w.slot for w in self.workers.values()}
        now = time.monotonic()
        for slot in range(self.settings.workers):
            if slot not in live:
                timeout = min(timeout, max(0.0, self.respawn_at[slot] - now))
        return timeout

    def wait_and_dispatch(self, timeout: float) -> None:
        """Wait up to ``timeout`` for a signal or a readable descriptor; handle what came."""
        if self.signals.empty():
            for key, _events in self.selector.select(timeout):
                key.data()
        batch = []
        while True:
            try:
                batch.append(self.signals.get_nowait())
            except queue.Empty:
                break
        # Several HUPs queued while one reload ran need one more reload, not several.
        for sig in dict.fromkeys(batch):
            name = signal.Signals(sig).name[3:].lower()
            getattr(self, f"handle_{name}")()

    def _drain_wakeups(self) -> None:
        with contextlib.suppress(BlockingIOError, InterruptedError):
            while os.read(self._wake_r, 512):
                pass

    def handle_hup(self) -> None:
        """SIGHUP: rebuild the configuration and push it to the workers."""
        log.info("received SIGHUP: reloading %s", self.settings.config_path)
        self.reload()

    def handle_term(self) -> None:
        """SIGTERM: graceful stop."""
        log.info("received SIGTERM: graceful stop (up to %gs)", self.settings.graceful_timeout)
        self.stop_mode = "graceful"

    def handle_int(self) -> None:
        """SIGINT: fast stop."""
        log.info("received SIGINT: fast stop")
        self.stop_mode = "fast"

    def handle_quit(self) -> None:
        """SIGQUIT: fast stop."""
        log.info("received SIGQUIT: fast stop")
        self.stop_mode = "fast"

    def handle_usr1(self) -> None:
        """SIGUSR1: reopen the log files, then have every worker take the new ones."""
        log.info("received SIGUSR1: reopening log files")
        self.reopen_logs()

    def reopen_logs(self) -> None:
        """Reopen the log files (``fsmfast.master.logfiles``); with none configured, nothing to do."""
        if self.logfiles is None:
            return
        kinds, fds = self.logfiles.reopen()
        if not kinds:
            return
        msg = channel.Reopen(kinds=kinds)
        for worker in list(self.workers.values()):
            try:
                channel.send(worker.channel, msg, fds)
            except OSError as e:
                # A worker that died meanwhile (its replacement inherits the new files), or one stuck.
                log.warning("cannot hand the reopened logs to worker %d (pid %d): %s", worker.slot, worker.pid, e)

    def handle_chld(self) -> None:
        """SIGCHLD: nothing to do here; the loop reaps after every dispatch."""

    # -- workers ---------------------------------------------------------------------------

    def manage_workers(self) -> None:
        """Fork a worker for every empty slot whose respawn delay has passed."""
        live = {w.slot for w in self.workers.values()}
        now = time.monotonic()
        for slot in range(self.settings.workers):
            if slot not in live and now >= self.respawn_at[slot]:
                self.spawn(slot)

    def spawn(self, slot: int) -> None:
        master_end, worker_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        master_end.settimeout(PUSH_TIMEOUT)
        region = StatsRegion()  # before the fork: the worker inherits the shared mapping
        # Signals stay blocked across the fork so none reaches the child's copy of the master's
        # handlers (it would vanish into the child's copy of the queue); the child resets the
        # handlers first, then unblocks, and anything pending gets the default action.
        old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
        master_pid = os.getpid()
        try:
            pid = os.fork()
        except OSError as e:
            signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
            master_end.close()
            worker_end.close()
            region.close()
            log.error("cannot fork worker %d: %s; retrying in 1s", slot, e.strerror)
            self.respawn_at[slot] = time.monotonic() + 1.0
            return
        if pid == 0:
            self._worker_process(slot, worker_end, master_end, old_mask, master_pid, region)
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
        worker_end.close()
        worker = Worker(slot, pid, master_end, FrameReader(), time.monotonic(), self.generation, region)
        self.workers[pid] = worker
        self.selector.register(master_end, selectors.EVENT_READ, lambda: self._on_channel(worker))
        self.stats.worker_started(pid, slot, region)
        log.info("booted worker %d (pid %d), generation %d", slot, pid, self.generation)

    def _worker_process(
        self,
        slot: int,
        worker_end: socket.socket,
        master_end: socket.socket,
        mask: set[int | signal.Signals],
        master_pid: int,
        region: StatsRegion,
    ) -> NoReturn:
        """The child side of the fork. Never returns into the master's code."""
        code = EXIT_WORKER_BOOT
        try:
            self._close_in_child()
            for sig in SIGNALS:
                signal.signal(sig, signal.SIG_DFL)
            # The worker ignores SIGHUP too; until it installs its own handlers a terminal
            # hangup sent to the process group must not kill it.
            signal.signal(signal.SIGHUP, signal.SIG_IGN)
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
            die_with_parent(master_pid)
            master_end.close()
            for other in self.workers.values():
                other.channel.close()
            for index, listeners in enumerate(self.slots):
                if index != slot:
                    for sock in listeners.values():
                        sock.close()
            logs.setup(f"worker {slot}")
            strip_env()  # only the master speaks to systemd
            logfiles.in_worker()
            if self.ids is not None:
                privileges.drop(self.ids, master_pid)
            from fsmfast.worker.boot import WorkerBoot

            boot = WorkerBoot(
                index=slot,
                settings=self.settings,
                channel=worker_end,
                listeners=dict(self.slots[slot]),
                snapshot=self.snapshot_bytes,
                generation=self.generation,
                region=region,
                arena=self.shared.arena,
            )
            assert self.worker_main is not None
            self.worker_main(boot)
            log.error("worker_main returned instead of exiting")
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else EXIT_WORKER_BOOT
        except BaseException as e:
            log.exception("worker %d failed to boot: %s", slot, e)
        finally:
            os._exit(code)

    def _close_in_child(self) -> None:
        """Drop the master's own descriptors in a new worker: its selector, wake-up pipe, admin
        listener and watches (a worker holding the admin port would keep it after the master died)."""
        signal.set_wakeup_fd(-1)
        if self.admin is not None:
            self.admin.close_in_child()
        if self.watcher is not None:
            with contextlib.suppress(OSError):
                os.close(self.watcher.fileno())
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)
        with contextlib.suppress(OSError):
            os.close(self.selector.fileno())
        for other in self.workers.values():
            other.region.close()

    def reap(self) -> None:
        """Collect every dead child; schedule respawns or note a boot failure."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            worker = self.workers.pop(pid, None)
            if worker is None:
                continue  # not ours (e.g. we are pid 1 in a container): reap quietly
            with contextlib.suppress(KeyError, ValueError):
                self.selector.unregister(worker.channel)
            with contextlib.suppress(OSError):
                worker.channel.close()
            what = f"worker {worker.slot} (pid {pid}) {describe_exit(status)}"
            # Its last published counts join the totals (counters never go back), and its region is
            # closed; a worker that ends during a stop is not a restart.
            restart = worker.killed_for or ("signal" if os.WIFSIGNALED(status) else "exit")
            self.stats.worker_exited(pid, None if self.stopping else restart)
            if self.stopping:
                clean = os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
                (log.info if clean else log.warning)("%s", what)
                continue
            if os.WIFEXITED(status) and os.WEXITSTATUS(status) == EXIT_WORKER_BOOT:
                log.error("%s: it failed to boot; stopping the master instead of respawning in a loop", what)
                self.halt_code = EXIT_WORKER_BOOT
                continue
            log.error("%s", what)
            self.shared.worker_gone(worker.slot)  # its in-flight requests are over
            self._schedule_respawn(worker)

    def _schedule_respawn(self, worker: Worker) -> None:
        now = time.monotonic()
        slot = worker.slot
        self.flaps[slot] = self.flaps[slot] + 1 if now - worker.born < FLAP_LIFETIME else 0
        # The first quick death respawns at once; repeated ones back off so a worker that
        # crashes on start cannot turn the master into a fork loop.
        delay = 0.0 if self.flaps[slot] <= 1 else min(0.1 * 2 ** (self.flaps[slot] - 2), MAX_RESPAWN_DELAY)
        if delay:
            log.warning("worker %d keeps dying right after start; respawning in %.1fs", slot, delay)
        self.respawn_at[slot] = now + delay

    def kill_worker(self, worker: Worker, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(worker.pid, sig)

    # -- reload ----------------------------------------------------------------------------

    def reload(self, trigger: str = "signal") -> None:
        """Build generation G+1 and switch every worker to it; on any failure keep generation G."""
        self.notifier.reloading()
        try:
            error = self._reload()
        finally:
            self.notifier.ready(self._status_line())
        ok = error is None
        self.last_reload = ReloadResult(
            "success" if ok else "failure", self.generation, time.time(), trigger, error
        )
        self.stats.reload_result(ok, self.generation)
        if ok and self.watcher is not None and trigger != "watch":
            self.watcher.reloaded()

    def _take_snapshot(self, data: bytes, forked: bool) -> None:
        """Make ``data`` the generation served: decoded once here for the parts of the master that
        read it (the shared state's places, the metrics' label sets and certificate expiry)."""
        snap, self.snapshot_bytes = self.shared.prepare(snapmod.decode(data), data, forked)
        self.stats.set_snapshot(snap, self.shared.arena.cells if self.shared.arena is not None else None)

    def _reload(self) -> str | None:
        """The reload itself; the reason it failed, or None."""
        old = self.generation
        generation = old + 1
        # Whatever goes wrong in the build (the child reports even a compiler bug), a reload
        # never takes the master down.
        result = forked_build.build(self.settings.config_path, generation, SIGNALS)
        if result.errors:
            log.error("reload failed, keeping generation %d:", old)
            for issue in result.errors:
                log.error("  %s", issue)
            return "; ".join(str(issue) for issue in result.errors)
        if result.unreadable or result.crash:
            why = f"cannot read {self.settings.config_path}: {result.unreadable}" if result.unreadable else result.crash
            log.error("reload failed, keeping generation %d: %s", old, why)
            return why
        self._log_warnings(result.warnings)
        ports = result.ports
        added = sorted(ports - self.ports)
        removed = sorted(self.ports - ports)
        try:
            fresh = sockets.bind_slots(
                self.settings.listen_address, added, self.settings.workers, self.settings.backlog
            )
        except sockets.BindError as e:
            log.error("reload failed, keeping generation %d: %s", old, e)
            return str(e)
        for slot, listeners in enumerate(fresh):
            self.slots[slot].update(listeners)
        self.generation = generation
        self._take_snapshot(result.snapshot, forked=True)
        self.ports = ports
        self.schemes = result.schemes
        for port in added:
            self._log_listening(port)

        push = channel.Push(generation, self.snapshot_bytes, added)
        pending: dict[int, Worker] = {}
        for worker in list(self.workers.values()):
            fds = [self.slots[worker.slot][port].fileno() for port in added]
            try:
                channel.send(worker.channel, push, fds)
            except TimeoutError:
                log.error(
                    "worker %d (pid %d) did not read generation %d within %gs; killing it",
                    worker.slot,
                    worker.pid,
                    generation,
                    PUSH_TIMEOUT,
                )
                worker.killed_for = "unresponsive"
                self.kill_worker(worker, signal.SIGKILL)
            except OSError as e:
                # Usually a worker that died and is not reaped yet; the loop respawns it.
                log.warning(
                    "cannot push generation %d to worker %d (pid %d): %s", generation, worker.slot, worker.pid, e
                )
                self.kill_worker(worker, signal.SIGKILL)
            else:
                pending[worker.pid] = worker
        acked = self.collect_acks(pending, generation)

        # Workers close their copies of removed ports when they switch; the master's copies
        # go only now, so a slot never loses a port while its worker may still serve it.
        sockets.close_slots(self.slots, removed)
        for port in removed:
            log.info("stopped listening on %s", sockets.format_address(self.settings.listen_address, port))
        # The generation is in force either way: laggards were killed and respawn with it.
        _freeze_heap()
        note = "" if acked == len(pending) else f" ({acked} of {len(pending)} workers acked)"
        log.info("reloaded: generation %d, %s%s", generation, result.summary, note)
        return None

    def collect_acks(self, pending: dict[int, Worker], generation: int) -> int:
        """Wait up to ACK_TIMEOUT for each pending worker's ack; kill the silent ones."""
        acked = 0
        deadline = time.monotonic() + ACK_TIMEOUT
        poller = select.poll()
        by_fd: dict[int, Worker] = {}
        for worker in pending.values():
            by_fd[worker.channel.fileno()] = worker
            poller.register(worker.channel.fileno(), select.POLLIN)
        while by_fd:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            for fd, _events in poller.poll(remaining * 1000):
                worker = by_fd[fd]
                done, ok = self._read_ack(worker, generation)
                if done:
                    poller.unregister(fd)
                    del by_fd[fd]
                    acked += ok
        for worker in by_fd.values():
            log.error(
                "worker %d (pid %d) did not ack generation %d within %gs; killing it",
                worker.slot,
                worker.pid,
                generation,
                ACK_TIMEOUT,
            )
            worker.killed_for = "unresponsive"
            self.kill_worker(worker, signal.SIGKILL)
        return acked

    def _read_ack(self, worker: Worker, generation: int) -> tuple[bool, bool]:
        """Read what the worker sent: (finished with this worker, it acked the generation)."""
        alive = self._read_channel(worker)
        ack = worker.ack
        if ack is not None and ack.generation == generation:
            if ack.ok:
                return True, True
            log.error(
                "worker %d (pid %d) rejected generation %d and keeps generation %d: %s",
                worker.slot,
                worker.pid,
                generation,
                worker.generation,
                ack.error,
            )
            return True, False
        if not alive:
            return True, False  # channel closed: the worker died; reaping reports it
        return False, False

    def _on_channel(self, worker: Worker) -> None:
        """A worker's channel is readable outside a reload: readiness, or a late ack."""
        if not self._read_channel(worker):
            # The worker is dying; reaping reports it. Stop polling a closed channel meanwhile.
            with contextlib.suppress(KeyError, ValueError):
                self.selector.unregister(worker.channel)

    def _read_channel(self, worker: Worker) -> bool:
        """Take every message the worker sent; False once its channel is closed or unusable."""
        try:
            alive = channel.recv_into(worker.channel, worker.reader)
            messages = worker.reader.messages()
        except Exception as e:
            log.error("bad control frame from worker %d (pid %d): %s; killing it", worker.slot, worker.pid, e)
            worker.killed_for = "unresponsive"
            self.kill_worker(worker, signal.SIGKILL)
            return False
        for msg, fds in messages:
            for fd in fds:
                os.close(fd)
            if isinstance(msg, channel.Ack):
                # Acks of an older generation arrive late after a timed-out reload: kept, not used.
                worker.ack = msg
                if msg.ok and msg.generation > worker.generation:
                    worker.generation = msg.generation
            elif isinstance(msg, channel.Ready):
                worker.ready_at = time.monotonic()
                worker.generation = max(worker.generation, msg.generation)
                self._maybe_serving()
        return alive

    def _maybe_serving(self) -> None:
        """Tell systemd READY=1 the first time every slot's worker serves."""
        if self.serving or self.stopping:
            return
        if all(ok for _name, ok, _why in self.readiness()):
            self.serving = True
            log.info("serving: %s", self._status_line())
            self.notifier.ready(self._status_line())

    # -- watchdog --------------------------------------------------------------------------

    def watch_workers(self, now: float) -> None:
        """Abort, then kill, the workers whose event loop stopped beating (``watchdog``)."""
        timeout = self.settings.worker_timeout
        for worker in list(self.workers.values()):
            verdict = watchdog.check(
                now, worker.born, worker.ready_at, worker.region.heartbeat(), worker.aborted_at, timeout
            )
            if verdict is watchdog.Verdict.ABORT:
                silent = watchdog.silence(now, worker.ready_at or worker.born, worker.region.heartbeat())
                log.error(
                    "worker %d (pid %d) has not answered for %.1fs (--worker-timeout %gs); aborting it"
                    " (its stderr gets a traceback), then replacing it",
                    worker.slot,
                    worker.pid,
                    silent,
                    timeout,
                )
                worker.killed_for = "watchdog"
                worker.aborted_at = now
                self.kill_worker(worker, signal.SIGABRT)
            elif verdict is watchdog.Verdict.KILL:
                log.error("worker %d (pid %d) did not end after SIGABRT; killing it", worker.slot, worker.pid)
                worker.aborted_at = float("inf")  # once
                self.kill_worker(worker, signal.SIGKILL)
        if self.notifier.watchdog_interval() is not None:
            self.notifier.watchdog()

    # -- what the admin listener shows (fsmfast.admin.endpoints.AdminView) -------------------

    def readiness(self) -> list[tuple[str, bool, str]]:
        live = list(self.workers.values())
        behind = [w for w in live if not w.ready_at or w.generation != self.generation]
        return [
            ("config", self.generation > 0, "no configuration is served yet"),
            ("not-stopping", self.stop_mode is None and not self.stopping, "the gateway is stopping (draining)"),
            (
                "workers",
                len(live) == self.settings.workers,
                f"{len(live)} of {self.settings.workers} workers are up",
            ),
            (
                "generation",
                bool(live) and not behind,
                f"{len(behind)} workers do not serve generation {self.generation} yet",
            ),
        ]

    def status(self) -> dict[str, Any]:
        now = time.monotonic()
        wall = time.time()
        workers = []
        for w in sorted(self.workers.values(), key=lambda w: w.slot):
            workers.append(
                {
                    "slot": w.slot,
                    "pid": w.pid,
                    "generation": w.generation,
                    "ready": bool(w.ready_at),
                    "uptime_seconds": round(now - w.born, 3),
                    "rss_bytes": procinfo.rss_bytes(w.pid),
                }
            )
        reload = self.last_reload
        ready = all(ok for _name, ok, _why in self.readiness())
        return {
            "version": __version__,
            "pid": os.getpid(),
            "state": "draining" if self.stop_mode or self.stopping else ("serving" if ready else "starting"),
            "generation": self.generation,
            "started": self.started,
            "uptime_seconds": round(wall - self.started, 3),
            "workers": workers,
            "last_reload": None
            if reload is None
            else {
                "result": reload.result,
                "generation": reload.generation,
                "at": reload.at,
                "trigger": reload.trigger,
                "error": reload.error,
            },
        }

    def config(self) -> dict[str, Any] | None:
        if not self.snapshot_bytes:
            return None
        if self._dump is None or self._dump[0] != self.generation:
            from fsmfast.admin.dump import config_json

            self._dump = (self.generation, config_json(snapmod.decode(self.snapshot_bytes)))
        return self._dump[1]

    def metrics(self, accept: str | None) -> tuple[str, bytes]:
        return self.stats.render(accept)

    def _status_line(self) -> str:
        ready = sum(1 for w in self.workers.values() if w.ready_at and w.generation == self.generation)
        return f"generation {self.generation}, {ready}/{self.settings.workers} workers ready"

    # -- stop ------------------------------------------------------------------------------

    def stop(self, graceful: bool) -> None:
        """Stop every worker: SIGTERM and wait for the drain, or SIGQUIT; SIGKILL leftovers."""
        self.stopping = True
        self.notifier.stopping()
        limit = self.settings.graceful_timeout + GRACE_EXTRA if graceful else FAST_STOP_TIMEOUT
        for worker in self.workers.values():
            self.kill_worker(worker, signal.SIGTERM if graceful else signal.SIGQUIT)
        # Close the door now, as nginx does: the kernel keeps accepting on a port until the last
        # fd of every listening socket is closed, and a connection it accepts during the drain
        # would wait in a backlog nobody reads until the drain ends, then be reset. With the
        # master's copies gone here and each worker closing its own as it starts draining, new
        # connections are refused at once while in-flight requests finish. (Nothing respawns a
        # slot from here on, so nobody needs the master's copies any more.)
        sockets.close_slots(self.slots)
        deadline = time.monotonic() + limit
        while True:
            self.reap()
            remaining = deadline - time.monotonic()
            if not self.workers or remaining <= 0:
                break
            # The admin listener keeps answering while workers drain (/readyz says 503).
            sig = self._wait_during_stop(min(remaining, 1.0))
            if sig is None:
                continue
            if graceful and sig in (signal.SIGINT, signal.SIGQUIT):
                log.info("received %s during graceful stop: fast stop", signal.Signals(sig).name)
                graceful = False
                for worker in self.workers.values():
                    self.kill_worker(worker, signal.SIGQUIT)
                deadline = min(deadline, time.monotonic() + FAST_STOP_TIMEOUT)
        if self.workers:
            log.warning("killing %s that did not stop in %gs", _count(len(self.workers), "worker"), limit)
            for worker in self.workers.values():
                self.kill_worker(worker, signal.SIGKILL)
            end = time.monotonic() + 2.0
            while self.workers and time.monotonic() < end:
                self.reap()
                time.sleep(0.02)

    def _wait_during_stop(self, timeout: float) -> int | None:
        """Serve the selector for up to ``timeout``; the most urgent signal that came, if any."""
        if self.signals.empty():
            for key, _events in self.selector.select(timeout):
                key.data()
        if self.admin is not None:
            self.admin.expire(time.monotonic())
        got = None
        while True:
            try:
                sig = self.signals.get_nowait()
            except queue.Empty:
                return got
            if sig in (signal.SIGINT, signal.SIGQUIT) or got is None:
                got = sig

    def _log_listening(self, port: int) -> None:
        where = sockets.format_address(self.settings.listen_address, port)
        scheme = self.schemes.get(port, "http")
        log.info("listening on %s://%s (%s, SO_REUSEPORT)", scheme, where, _count(self.settings.workers, "worker"))


def _freeze_heap() -> None:
    """Move every object alive now out of the collector's reach, before forking workers.

    A GC pass in a worker would otherwise write to the header of every inherited object and
    un-share its copy-on-write page. Collect first: freeze() would also pin the cyclic garbage
    a build leaves behind, leaking it for the master's whole life.
    """
    gc.collect()
    gc.freeze()


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"
