"""Worker process entry: one uvloop loop serving the snapshot the master pushes.

Lifecycle (states of the process, not of connections):

    BOOT --snapshot decoded, listeners served--> SERVING --SIGTERM--> DRAINING --> exit 0
                                                   |  ^                  (in-flight done,
                                            Push   |  | Ack              or graceful_timeout)
                                                   v  |
                                               (switch snapshot)
    SIGINT/SIGQUIT from any state: exit now. SIGHUP is the master's; workers ignore it.

The loop is created here, after the fork: libuv loops are not fork-safe.
"""

from __future__ import annotations

import asyncio
import faulthandler
import functools
import gc
import logging
import os
import signal
import socket
import sys
import time
from typing import NoReturn

import uvloop

from fsmfast import snapshot as snapmod
from fsmfast.errors import EXIT_OK, EXIT_WORKER_BOOT
from fsmfast.master import channel, logfiles
from fsmfast.proxy.ports import connection_for
from fsmfast.worker import malloc
from fsmfast.worker.boot import WorkerBoot
from fsmfast.worker.context import Context

log = logging.getLogger("fsmfast.worker")


class Worker:
    def __init__(self, boot: WorkerBoot, loop: asyncio.AbstractEventLoop) -> None:
        self.boot = boot
        self.loop = loop
        self.ctx = Context(loop, boot.settings, boot.index, boot.region, boot.arena)
        self.ctx.admission.pause = self.pause_accepting
        self.ctx.admission.resume = self.resume_accepting
        self.sockets: dict[int, socket.socket] = dict(boot.listeners)
        self.servers: dict[int, asyncio.AbstractServer] = {}
        self.reader = channel.FrameReader()
        self.exit_code = EXIT_OK
        self._drain_deadline = 0.0

    # -- boot --------------------------------------------------------------------------

    def start(self) -> None:
        snap = snapmod.decode(self.boot.snapshot)
        self.ctx.apply(snap)
        self.loop.run_until_complete(self._serve({listener.port for listener in snap.listeners}))
        chan = self.boot.channel
        chan.setblocking(False)
        self.loop.add_reader(chan.fileno(), self._on_channel)
        self.loop.add_signal_handler(signal.SIGTERM, self.drain)
        self.loop.add_signal_handler(signal.SIGINT, self.quit)
        self.loop.add_signal_handler(signal.SIGQUIT, self.quit)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        self.ctx.start_ticking()
        # The master's /readyz, systemd's READY=1 and the watchdog's clock wait for this.
        self._send(channel.Ready(generation=self.boot.generation, pid=os.getpid()))

    async def _serve(self, ports: set[int]) -> None:
        for port in sorted(ports):
            if port in self.servers:
                continue
            sock = self.sockets.get(port)
            if sock is None:
                log.error("no listening socket for port %d; worker %d does not serve it", port, self.boot.index)
                continue
            self.servers[port] = _PENDING
            ctx = self.ctx
            try:
                server = await self.loop.create_server(
                    # HTTP, HTTPS, TLS or TCP: decided per accept by the port's current runtime.
                    functools.partial(connection_for, ctx, port),
                    # A duplicate: closing the server (connection limit, drain) leaves the slot's
                    # socket, and the connections the kernel queues on it, alone.
                    sock=sock.dup(),
                    backlog=self.boot.settings.backlog,
                )
            except OSError as exc:
                log.error("cannot serve port %d: %s", port, exc)
                self.servers.pop(port, None)
                continue
            if self.servers.get(port) is _PENDING and not ctx.draining:
                self.servers[port] = server
            else:
                server.close()  # the port was removed (or we started draining) meanwhile

    def pause_accepting(self) -> None:
        """At the connection limit with none idle to close (``fsmfast.worker.admission``): stop
        accepting for now."""
        log.warning(
            "worker %d: at the limit of %d connections, all with a request in progress: not accepting more for now",
            self.boot.index,
            self.ctx.admission.limit,
        )
        servers = list(self.servers.values())
        self.servers.clear()  # a _serve still running sees its port gone and closes its server
        for server in servers:
            server.close()

    def resume_accepting(self) -> None:
        if not self.ctx.draining:
            log.info("worker %d: accepting connections again", self.boot.index)
            self.loop.create_task(self._serve(set(self.sockets)))

    # -- control channel -----------------------------------------------------------------

    def _on_channel(self) -> None:
        chan = self.boot.channel
        try:
            alive = channel.recv_into(chan, self.reader)
        except OSError:
            alive = False
        if not alive:
            # The master is gone: nobody will respawn or reload us. Drain and leave.
            self.loop.remove_reader(chan.fileno())
            log.warning("master channel closed; draining")
            self.drain()
            return
        for msg, fds in self.reader.messages():
            if isinstance(msg, channel.Push):
                self._on_push(msg, fds)
            elif isinstance(msg, channel.Reopen):
                logfiles.adopt(msg.kinds, fds, self.ctx.access_log)

    def _on_push(self, msg: channel.Push, fds: list[int]) -> None:
        for port, fd in zip(msg.fd_ports, fds, strict=False):
            if port in self.sockets:
                os.close(fd)  # already have this port's socket
            else:
                self.sockets[port] = socket.socket(fileno=fd)
        try:
            snap = snapmod.decode(msg.snapshot)
            self.ctx.apply(snap)
        except Exception as exc:
            log.error("cannot apply generation %d: %s", msg.generation, exc)
            self._ack(msg.generation, False, str(exc))
            return
        ports = {listener.port for listener in snap.listeners}
        for port in list(self.servers):
            if port not in ports:
                self.servers.pop(port).close()
                sock = self.sockets.pop(port, None)
                if sock is not None:
                    sock.close()
        if not self.ctx.draining:
            self.loop.create_task(self._serve(ports))
        self._ack(msg.generation, True)

    def _ack(self, generation: int, ok: bool, error: str | None = None) -> None:
        self._send(channel.Ack(generation=generation, ok=ok, error=error, pid=os.getpid()))

    def _send(self, msg: channel.Message) -> None:
        # Small frames on a socket the master drains: a send fits whole, or the master is gone.
        try:
            self.boot.channel.send(channel.encode(msg))
        except OSError as exc:
            log.warning("cannot tell the master %s: %s", type(msg).__name__.lower(), exc)

    # -- stopping ------------------------------------------------------------------------

    def drain(self) -> None:
        if self.ctx.draining:
            return
        self.ctx.draining = True
        if self.ctx.prober is not None:
            self.ctx.prober.close()  # a stopping worker probes for no one
        self._drain_deadline = time.monotonic() + self.boot.settings.graceful_timeout
        # The servers serve duplicates; the slot's own sockets must go too, or the kernel keeps
        # accepting connections nobody will read (the master closes its copies as well).
        for server in self.servers.values():
            server.close()
        for sock in self.sockets.values():
            sock.close()
        self.sockets.clear()
        for conn in list(self.ctx.connections):
            if not conn.queue and not conn.in_head:
                conn.close()
        for pool in self.ctx.pools.values():
            pool.close_idle()
        self._check_drained()

    def _check_drained(self) -> None:
        busy = self.ctx.busy()
        if busy == 0:
            self.loop.stop()
            return
        if time.monotonic() > self._drain_deadline:
            log.warning("graceful timeout: closing %d busy connections", busy)
            for conn in list(self.ctx.connections):
                conn.abort()
            self.loop.stop()
            return
        self.loop.call_later(0.05, self._check_drained)

    def quit(self) -> None:
        self.ctx.stop_ticking()  # publishes the last counts
        self.ctx.access_log.flush()
        os._exit(EXIT_OK)


class _PendingServer:
    """Stands in for a server whose creation is still running."""

    def close(self) -> None:
        pass


# Only close() is ever called on a slot's value, so the stand-in implements no more of AbstractServer.
_PENDING: asyncio.AbstractServer = _PendingServer()  # type: ignore[assignment]


def worker_main(boot: WorkerBoot) -> NoReturn:
    _setup_logging(boot.index)
    # The watchdog's SIGABRT (fsmfast.master.watchdog) prints where the loop hung before it ends.
    faulthandler.enable()
    malloc.tune()
    loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    worker = Worker(boot, loop)
    try:
        worker.start()
    except Exception as exc:
        log.error("worker %d failed to boot: %s", boot.index, exc)
        sys.stderr.flush()
        os._exit(EXIT_WORKER_BOOT)
    # What boot built lives as long as the worker (modules, the first snapshot's runtime): out of
    # the collector's sight, collections only walk what requests allocate.
    gc.freeze()
    try:
        loop.run_forever()
    finally:
        worker.ctx.stop_ticking()
        worker.ctx.access_log.flush()
        sys.stderr.flush()
    os._exit(worker.exit_code)


def _setup_logging(index: int) -> None:
    try:
        from fsmfast import logs

        logs.setup(f"worker {index}")
    except (ImportError, AttributeError):
        logging.basicConfig(
            level=logging.INFO,
            stream=sys.stderr,
            format=f"%(asctime)s fsmfast[worker {index} %(process)d] %(levelname)s %(message)s",
        )
