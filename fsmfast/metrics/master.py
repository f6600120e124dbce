"""The master's metrics: the workers' counts summed, and what only the master knows.

Each worker publishes its cumulative counts into its shared region (fsmfast.metrics.shm); a
scrape reads every live worker's latest blob and adds them up. When a worker exits, its last
blob is added to ``retired`` for good, so a counter never goes backwards when a worker dies and
is replaced: the sum only loses what the worker counted after its last publish (a tick's worth,
a quarter of a second, if it was killed). Gauges (open connections, a worker's memory and
heartbeat) are the live workers' only: a dead worker's vanish with it.

The master's own: the generation served and the reloads (the arbiter reports them), the expiry
of every certificate in the snapshot (fsmfast.tls.inventory), the number of workers and their
restarts by reason, the build, and the ``process_*`` metrics of the master process read from
/proc. Label sets known in advance are exported at 0 before anything happens (reload results,
restart reasons, and per listener and backend of the snapshot the connection, TLS and upstream
error counters): a series that appears at 1 loses that first increment to ``rate()``.

The resilience policies' state is the machine's, in the shared arena the master made
(fsmfast.shared): given its cells with the snapshot, a scrape reads each circuit breaker's open
state and transitions and each health-checked endpoint's state there, live, whether or not any
worker is up (fsmfast.resilience.breaker, .health).

The arbiter calls ``worker_started``/``worker_exited``/``reload_result``/``set_snapshot`` and
serves ``render`` on the admin listener's GET /metrics. Single-threaded: the master's loop.
"""

from __future__ import annotations

import itertools
import logging
import os
import resource
import time
from collections.abc import Callable, Iterable
from typing import Any

import msgspec

from fsmfast import __version__
from fsmfast import snapshot as snapmod
from fsmfast.master import procinfo
from fsmfast.metrics import blob
from fsmfast.metrics.blob import BOUNDS, TLS_FAILURES, UPSTREAM_REASONS, WorkerCounts
from fsmfast.metrics.exposition import Family, Histogram, render, wants_openmetrics
from fsmfast.metrics.shm import StatsRegion
from fsmfast.resilience.breaker import Breaker
from fsmfast.resilience.health import EndpointHealth
from fsmfast.tls import inventory

log = logging.getLogger("fsmfast.master")

# worker_exited()'s reasons for a worker that had to be replaced, exported from the start.
RESTART_REASONS = ("exit", "signal", "unresponsive", "watchdog")

_PAGE = os.sysconf("SC_PAGE_SIZE")
_TICKS = os.sysconf("SC_CLK_TCK")


class Totals:
    """Counters added up over workers' blobs (not the gauges)."""

    def __init__(self) -> None:
        self.requests: dict[tuple[str, str, str, int], int] = {}
        self.durations: dict[tuple[str, str, str], tuple[list[int], float]] = {}
        self.upstream_errors: dict[tuple[str, str], int] = {}
        self.accepted: dict[str, int] = {}
        self.tls_errors: dict[tuple[str, str], int] = {}
        self.events: dict[tuple[str, str, str], int] = {}

    def add(self, counts: WorkerCounts) -> None:
        for s in counts.series:
            key = (s.listener, s.route, s.backend)
            for code, n in s.codes:
                k = (*key, code)
                self.requests[k] = self.requests.get(k, 0) + n
            held = self.durations.get(key)
            if held is None:
                self.durations[key] = (list(s.buckets), s.seconds)
            else:
                self.durations[key] = ([a + b for a, b in zip(held[0], s.buckets, strict=True)], held[1] + s.seconds)
        for backend, reason, n in counts.upstream_errors:
            self.upstream_errors[backend, reason] = self.upstream_errors.get((backend, reason), 0) + n
        for listener, _open, total in counts.connections:
            self.accepted[listener] = self.accepted.get(listener, 0) + total
        for listener, reason, n in counts.tls_errors:
            self.tls_errors[listener, reason] = self.tls_errors.get((listener, reason), 0) + n
        for what, backend, label, n in counts.events:
            self.events[what, backend, label] = self.events.get((what, backend, label), 0) + n

    def copy(self) -> Totals:
        out = Totals()
        out.requests = dict(self.requests)
        out.durations = {k: (list(b), s) for k, (b, s) in self.durations.items()}
        out.upstream_errors = dict(self.upstream_errors)
        out.accepted = dict(self.accepted)
        out.tls_errors = dict(self.tls_errors)
        out.events = dict(self.events)
        return out


class _Worker:
    __slots__ = ("counts", "pid", "region", "slot")

    def __init__(self, pid: int, slot: int, region: StatsRegion | None) -> None:
        self.pid = pid
        self.slot = slot
        self.region = region
        self.counts = WorkerCounts()  # the latest blob read, kept when a read fails

    def latest(self) -> WorkerCounts:
        region = self.region
        data = region.read() if region is not None else None
        if data is not None:
            try:
                self.counts = blob.decode(data)
            except msgspec.DecodeError as exc:  # the region's crc makes this all but impossible
                log.warning("worker %d: unreadable metrics blob (%s); keeping the last one", self.pid, exc)
        return self.counts


class MasterMetrics:
    def __init__(self, version: str = __version__) -> None:
        self.version = version
        self._live: dict[int, _Worker] = {}
        self.retired = Totals()
        self.restarts = dict.fromkeys(RESTART_REASONS, 0)
        self.reloads = {"success": 0, "failure": 0}
        self.generation = 0
        self.last_success = 0.0  # epoch of the last successful load (the first one included)
        self.last_ok = True
        self.certificates: dict[tuple[str, str, str], float] = {}
        # Label values of the snapshot served, exported at 0 (see the module docstring).
        self.listeners: list[str] = []
        self.tls_listeners: list[str] = []
        self.backends: list[str] = []
        # Read from the arena at scrape time: (backend, its breaker), (backend, endpoints, their health).
        self.breakers: list[tuple[str, Breaker]] = []
        self.health: list[tuple[str, list[str], EndpointHealth]] = []

    # -- what the arbiter reports ------------------------------------------------------------

    def worker_started(self, pid: int, slot: int, region: StatsRegion | None) -> None:
        self._live[pid] = _Worker(pid, slot, region)

    def worker_exited(self, pid: int, reason: str | None) -> None:
        """``reason`` None: a worker stopped on purpose (a stop, a drain); otherwise why it had to be
        replaced (RESTART_REASONS, or another word, counted as given). Its last published counts
        join the retired totals and its region is closed."""
        worker = self._live.pop(pid, None)
        if worker is not None:
            self.retired.add(worker.latest())
            if worker.region is not None:
                worker.region.close()
        if reason is not None:
            self.restarts[reason] = self.restarts.get(reason, 0) + 1

    def reload_result(self, ok: bool, generation: int) -> None:
        if ok:
            self.reloads["success"] += 1
            self.generation = generation
            self.last_success = time.time()
        else:
            self.reloads["failure"] += 1
        self.last_ok = ok

    def set_snapshot(self, snap: snapmod.Snapshot, cells: Any = None) -> None:
        """The snapshot being served (the first, and each one a reload made current), with the
        places the master gave its resilience state; ``cells``: the arena's (None: no arena)."""
        self.generation = snap.generation
        if not self.last_success:
            self.last_success = time.time()  # the first load is a successful one too
        self.listeners = sorted({str(lst.port) for lst in snap.listeners}, key=int)
        self.tls_listeners = sorted(
            {str(lst.port) for lst in snap.listeners if lst.tls and lst.tls_mode != "Passthrough"}, key=int
        )
        self.backends = sorted(snap.backends)
        self.breakers, self.health = _resilience(snap, cells)
        try:
            self.certificates = inventory.earliest(inventory.certificates(snap))
        except Exception as exc:  # a certificate the build accepted but the inventory cannot read
            log.warning("certificate expiry metrics unavailable for generation %d: %s", snap.generation, exc)
            self.certificates = {}

    # -- the scrape ----------------------------------------------------------------------------

    def render(self, accept: str | None) -> tuple[str, bytes]:
        """GET /metrics: (Content-Type, body), OpenMetrics when ``accept`` asks for it."""
        return render(self.families(), wants_openmetrics(accept))

    def families(self) -> list[Family]:
        live = sorted(self._live.values(), key=lambda w: w.slot)
        latest = [(worker, worker.latest()) for worker in live]
        totals = self.retired.copy()
        for _worker, counts in latest:
            totals.add(counts)
        # Every listener that ever had a connection, or is in the snapshot: 0 when none is open.
        open_now = dict.fromkeys([*self.listeners, *totals.accepted], 0)
        for _worker, counts in latest:
            for listener, opened, _total in counts.connections:
                open_now[listener] += opened
        return [
            *self._traffic(totals, open_now),
            *self._resilience(),
            *_events(totals.events),
            *self._config(),
            *self._workers(live),
            *_process(),
        ]

    def _traffic(self, totals: Totals, open_now: dict[str, int]) -> list[Family]:
        requests = Family(
            "fsmfast_http_requests_total",
            "counter",
            "HTTP requests answered, by listener port, route, backend and the status sent to the client"
            " (the gateway's own answers too: route and backend empty when there were none).",
        )
        for (listener, route, backend, code), n in sorted(totals.requests.items()):
            requests.add(n, listener=listener, route=route, backend=backend, code=str(code))
        durations = Family(
            "fsmfast_http_request_duration_seconds",
            "histogram",
            "Time from a request's head being read to its response's end, by listener port, route and backend.",
        )
        for (listener, route, backend), (buckets, seconds) in sorted(totals.durations.items()):
            labels = (("listener", listener), ("route", route), ("backend", backend))
            durations.histograms.append((labels, Histogram(BOUNDS, buckets, seconds)))
        upstream = Family(
            "fsmfast_upstream_errors_total",
            "counter",
            "Requests and TCP connections an upstream failed, by backend and the access log's reason code.",
        )
        for backend, reason, n in _with_zeros(totals.upstream_errors, self.backends, UPSTREAM_REASONS):
            upstream.add(n, backend=backend, reason=reason)
        connections = Family(
            "fsmfast_downstream_connections", "gauge", "Client connections open now, by listener port."
        )
        for listener, n in sorted(open_now.items(), key=_port_order):
            connections.add(n, listener=listener)
        accepted = Family(
            "fsmfast_downstream_connections_total",
            "counter",
            "Client connections accepted, by listener port (on TLS ports: once the handshake succeeded).",
        )
        totals_accepted = dict.fromkeys(self.listeners, 0) | totals.accepted
        for listener, n in sorted(totals_accepted.items(), key=_port_order):
            accepted.add(n, listener=listener)
        tls = Family(
            "fsmfast_tls_handshake_errors_total",
            "counter",
            "TLS handshakes that failed on a terminating listener port, by reason.",
        )
        for listener, reason, n in _with_zeros(totals.tls_errors, self.tls_listeners, TLS_FAILURES, _port_key):
            tls.add(n, listener=listener, reason=reason)
        return [requests, durations, upstream, connections, accepted, tls]

    def _resilience(self) -> list[Family]:
        """Circuit breakers and endpoint health as the arena holds them now (the whole machine's)."""
        now = time.monotonic()
        now_ms = int(now * 1000)
        is_open = Family(
            "fsmfast_circuit_breaker_open",
            "gauge",
            "Whether a backend's circuit breaker is open now (1): its requests get the degraded answer.",
        )
        transitions = Family(
            "fsmfast_circuit_breaker_transitions_total",
            "counter",
            "Circuit breaker state changes on the machine, by backend and the state entered (open, closed);"
            " a close is counted when the first request after the degraded period ends.",
        )
        for backend, breaker in self.breakers:
            is_open.add(1 if breaker.is_open(now) else 0, backend=backend)
            opened, closed = breaker.transitions()
            transitions.add(closed, backend=backend, state="closed")
            transitions.add(opened, backend=backend, state="open")
        healthy = Family(
            "fsmfast_upstream_endpoint_healthy",
            "gauge",
            "Whether an endpoint of a health-checked backend is in service now (1) or out (0), by backend and"
            " endpoint (address:port).",
        )
        for backend, endpoints, health in self.health:
            for i, endpoint in enumerate(endpoints):
                healthy.add(1 if health.state(i, now_ms) else 0, backend=backend, endpoint=endpoint)
        # Only the families the configuration has: a gateway without these policies scrapes as before.
        return [*([is_open, transitions] if self.breakers else []), *([healthy] if self.health else [])]

    def _config(self) -> list[Family]:
        generation = Family("fsmfast_config_generation", "gauge", "The configuration generation being served.")
        generation.add(self.generation)
        reloads = Family("fsmfast_config_reloads_total", "counter", "Configuration reloads, by result.")
        for result in ("failure", "success"):
            reloads.add(self.reloads[result], result=result)
        ok = Family(
            "fsmfast_config_last_reload_successful",
            "gauge",
            "Whether the last configuration load or reload succeeded (1) or failed (0).",
        )
        ok.add(1 if self.last_ok else 0)
        last = Family(
            "fsmfast_config_last_reload_success_timestamp_seconds",
            "gauge",
            "When the configuration was last loaded successfully, at start or by a reload (Unix time).",
        )
        last.add(self.last_success)
        expiry = Family(
            "fsmfast_certificate_expiry_timestamp_seconds",
            "gauge",
            "When a certificate of the configuration expires (Unix time): the earliest of a chain or bundle,"
            " by namespace, Secret or ConfigMap, and usage (listener, client-ca, upstream-ca, upstream-client).",
        )
        for (namespace, secret, usage), not_after in sorted(self.certificates.items()):
            expiry.add(not_after, namespace=namespace, secret=secret, usage=usage)
        build = Family("fsmfast_build_info", "info", "The fsmfast version running.")
        build.add(1, version=self.version)
        return [generation, reloads, ok, last, expiry, build]

    def _workers(self, live: list[_Worker]) -> list[Family]:
        workers = Family("fsmfast_workers", "gauge", "Worker processes running.")
        workers.add(len(live))
        restarts = Family(
            "fsmfast_worker_restarts_total",
            "counter",
            "Workers replaced after they ended unasked or were killed, by reason"
            " (exit, signal, unresponsive, watchdog).",
        )
        for reason, n in sorted(self.restarts.items()):
            restarts.add(n, reason=reason)
        rss = Family("fsmfast_worker_resident_memory_bytes", "gauge", "Resident memory of each worker, by slot.")
        age = Family(
            "fsmfast_worker_heartbeat_age_seconds",
            "gauge",
            "Seconds since each worker's event loop last ticked (it ticks four times a second), by slot.",
        )
        now = time.monotonic()
        for worker in live:
            resident = procinfo.rss_bytes(worker.pid)
            if resident is not None:
                rss.add(resident, worker=str(worker.slot))
            beat = worker.region.heartbeat() if worker.region is not None else 0.0
            if beat > 0.0:
                age.add(max(0.0, now - beat), worker=str(worker.slot))
        return [workers, restarts, rss, age]


# The workers' resilience events (WorkerStats.event): family, help, label name.
EVENTS = {
    "retry": (
        "fsmfast_upstream_retries_total",
        "Retries made by a retry policy, by backend and why the attempt before failed (as the access log's retries).",
        "reason",
    ),
    "retry_refused": (
        "fsmfast_upstream_retries_refused_total",
        "Retries a retry policy allowed but the machine's retry budget refused, by backend.",
        "reason",
    ),
    "health_check": (
        "fsmfast_upstream_health_checks_total",
        "Active health checks, by backend and result (one prober per endpoint on the machine).",
        "result",
    ),
    "endpoint": (
        "fsmfast_upstream_endpoint_transitions_total",
        "Endpoints taken out of service or back, by backend and the state entered (out, in).",
        "state",
    ),
    "port_denied": (
        "fsmfast_downstream_connections_denied_total",
        "Client connections a port-level AccessControlPolicy refused before reading a byte, by listener port.",
        "reason",
    ),
    # Not a backend: the first label is the rate limit's policy (see _events).
    "ratelimit_redis": (
        "fsmfast_ratelimit_redis_failures_total",
        "Decisions of fleet-wide rate limits that Redis did not give in time, by policy and what the request"
        " got (open: through; closed: 503).",
        "mode",
    ),
}
# The first label's name where it is not a backend.
_FIRST_LABEL = {"ratelimit_redis": "policy", "port_denied": "listener"}


def _events(events: dict[tuple[str, str, str], int]) -> list[Family]:
    """The families of the events counted so far (none before a policy first acts)."""
    families: dict[str, Family] = {}
    for (what, backend, label), n in sorted(events.items()):
        name, text, label_name = EVENTS.get(what, (None, "", ""))
        if name is None:
            continue
        family = families.get(what)
        if family is None:
            family = families[what] = Family(name, "counter", text)
        family.add(n, **{_FIRST_LABEL.get(what, "backend"): backend, label_name: label})
    return list(families.values())


def _resilience(
    snap: snapmod.Snapshot, cells: Any
) -> tuple[list[tuple[str, Breaker]], list[tuple[str, list[str], EndpointHealth]]]:
    """The breakers and endpoint health of ``snap`` that have places in the arena."""
    breakers: list[tuple[str, Breaker]] = []
    health: list[tuple[str, list[str], EndpointHealth]] = []
    if cells is None:
        return breakers, health
    for name, backend in sorted(snap.backends.items()):
        policies = backend.resilience
        places = policies.cells if policies is not None else None
        if policies is None or places is None:
            continue
        if policies.circuit is not None and places.breaker >= 0:
            breakers.append((name, Breaker(cells, places.breaker, policies.circuit, name)))
        if policies.health is not None and places.endpoints and len(places.endpoints) == len(backend.endpoints):
            endpoints = [f"{ep.host}:{ep.port}" for ep in backend.endpoints]  # as the access log names them
            health.append((name, endpoints, EndpointHealth(cells, places.endpoints, policies.health)))
    return breakers, health


def _port_key(listener: str) -> tuple[int, str]:
    return (int(listener), "") if listener.isdecimal() else (1 << 32, listener)


def _port_order(item: tuple[str, int]) -> tuple[int, str]:
    return _port_key(item[0])


def _with_zeros(
    counted: dict[tuple[str, str], int],
    known: Iterable[str],
    reasons: Iterable[str],
    order: Callable[[str], tuple[int, str]] = lambda label: (0, label),
) -> list[tuple[str, str, int]]:
    """``counted`` plus a 0 for every (known label, reason) pair not counted yet, sorted by ``order`` of the
    first label, then reason: every series exists from the first scrape, so its first failure is an increase
    Prometheus sees rather than a series appearing at 1."""
    filled = dict.fromkeys(itertools.product(known, reasons), 0) | counted
    return sorted(((a, b, n) for (a, b), n in filled.items()), key=lambda t: (order(t[0]), t[1]))


_boot_time: float | None = None


def _boot() -> float:
    """The kernel's boot time (Unix time): /proc/<pid>/stat counts a process's start from it."""
    global _boot_time
    if _boot_time is None:
        _boot_time = 0.0
        try:
            with open("/proc/stat", "rb") as f:
                for line in f:
                    if line.startswith(b"btime "):
                        _boot_time = float(line.split()[1])
                        break
        except OSError:
            pass
    return _boot_time


def _process() -> list[Family]:
    """The standard process_* metrics of this process (the master), as client libraries export them."""
    fields = procinfo.stat_fields(os.getpid())
    out = []
    if fields is not None and len(fields) > 21:
        # proc(5) numbers the fields from 1; stat_fields starts at the third (state).
        cpu = Family("process_cpu_seconds_total", "counter", "Total user and system CPU time spent in seconds.")
        cpu.add((int(fields[11]) + int(fields[12])) / _TICKS)
        resident = Family("process_resident_memory_bytes", "gauge", "Resident memory size in bytes.")
        resident.add(int(fields[21]) * _PAGE)
        virtual = Family("process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes.")
        virtual.add(int(fields[20]))
        start = Family("process_start_time_seconds", "gauge", "Start time of the process since unix epoch in seconds.")
        start.add(_boot() + int(fields[19]) / _TICKS)
        out += [cpu, resident, virtual, start]
    try:
        fds = len(os.listdir("/proc/self/fd"))
    except OSError:
        fds = -1
    if fds >= 0:
        open_fds = Family("process_open_fds", "gauge", "Number of open file descriptors.")
        open_fds.add(fds)
        out.append(open_fds)
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    max_fds = Family("process_max_fds", "gauge", "Maximum number of open file descriptors.")
    max_fds.add(soft if soft != resource.RLIM_INFINITY else float("inf"))
    out.append(max_fds)
    return out
