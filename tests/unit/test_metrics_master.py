"""fsmfast.metrics.master: the workers' counts summed (live and retired), the master's own metrics,
and whole scrapes checked by Prometheus' own tools (promtool, Debian's prometheus package).

Workers are played by regions this process publishes into, with blobs made by the worker's own
counters (fsmfast.metrics.counters), and for the memory and heartbeat gauges by real child pids.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from msgspec.structs import replace

from fsmfast import snapshot as snapmod
from fsmfast.compile.build import build
from fsmfast.metrics import blob
from fsmfast.metrics.blob import TLS_FAILURES, UPSTREAM_REASONS
from fsmfast.metrics.counters import WorkerStats
from fsmfast.metrics.master import RESTART_REASONS, MasterMetrics
from fsmfast.metrics.shm import StatsRegion
from fsmfast.resilience.breaker import BREAKER_CELLS, Breaker
from fsmfast.resilience.health import HEALTH_CELLS, EndpointHealth
from fsmfast.shared.arena import Arena
from tests.support.tls_config import NS, TlsConfig, write_tls_config
from tests.unit.test_metrics_exposition import check_openmetrics

PROMTOOL = shutil.which("promtool")
PORTS = {"http": 8000, "https": 8443, "https2": 9443}
ROUTE = "httproute/httpbin/web/rule/2/match/0"


class Named:
    def __init__(self, name: str) -> None:
        self.name = name


class Worker:
    """A worker's side of a region: counts, and publishes them as its tick would."""

    def __init__(self) -> None:
        self.region = StatsRegion(1 << 16)
        self.stats = WorkerStats()

    def serve(self, n: int, status: int = 200, route: str = ROUTE, backend: str = "httpbin/bundle:9443") -> None:
        rule = Named(route) if route else None
        svc = Named(backend) if backend else None
        for _ in range(n):
            self.stats.request(8000, rule, svc, status, time.monotonic() - 0.003)

    def publish(self) -> None:
        assert self.region.publish(blob.encode(self.stats.counts()))
        self.region.beat(time.monotonic())


@pytest.fixture
def metrics() -> MasterMetrics:
    return MasterMetrics(version="9.9.9")


def scrape(metrics: MasterMetrics) -> dict[str, float]:
    """The 0.0.4 scrape as {sample with labels: value}."""
    content_type, body = metrics.render(None)
    assert content_type == "text/plain; version=0.0.4; charset=utf-8"
    out = {}
    for line in body.decode().splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def req(code: int, route: str = ROUTE, backend: str = "httpbin/bundle:9443", listener: str = "8000") -> str:
    return f'fsmfast_http_requests_total{{listener="{listener}",route="{route}",backend="{backend}",code="{code}"}}'


def count(route: str = ROUTE, backend: str = "httpbin/bundle:9443") -> str:
    return f'fsmfast_http_request_duration_seconds_count{{listener="8000",route="{route}",backend="{backend}"}}'


def test_live_workers_are_summed(metrics: MasterMetrics) -> None:
    a, b = Worker(), Worker()
    metrics.worker_started(101, 0, a.region)
    metrics.worker_started(102, 1, b.region)
    a.serve(3)
    a.serve(1, 404, route="", backend="")
    b.serve(2)
    a.stats.opened(8000)
    b.stats.opened(8000)
    b.stats.opened(8000)
    a.publish()
    b.publish()
    s = scrape(metrics)
    assert s[req(200)] == 5
    assert s[req(404, route="", backend="")] == 1
    assert s[count()] == 5
    assert s['fsmfast_downstream_connections{listener="8000"}'] == 3
    assert s['fsmfast_downstream_connections_total{listener="8000"}'] == 3
    assert s["fsmfast_workers"] == 2


def test_a_dead_workers_counts_are_kept_and_its_gauges_go(metrics: MasterMetrics) -> None:
    a, b = Worker(), Worker()
    metrics.worker_started(101, 0, a.region)
    metrics.worker_started(102, 1, b.region)
    a.serve(4)
    a.stats.opened(8000)
    a.stats.ended("httpbin/bundle:9443", "upstream_reset")
    b.serve(1)
    a.publish()
    b.publish()
    before = scrape(metrics)
    a.serve(2)  # counted and published after the last scrape, before it died
    a.publish()
    metrics.worker_exited(101, "signal")
    assert a.region.closed  # the master is done with it
    after = scrape(metrics)
    assert after[req(200)] == 7
    assert all(after[k] >= v for k, v in before.items() if "_total" in k or "_count" in k or "_bucket" in k)
    assert after['fsmfast_upstream_errors_total{backend="httpbin/bundle:9443",reason="upstream_reset"}'] == 1
    assert after['fsmfast_downstream_connections{listener="8000"}'] == 0  # its open connection went with it
    assert after['fsmfast_downstream_connections_total{listener="8000"}'] == 1
    assert after["fsmfast_workers"] == 1
    assert after['fsmfast_worker_restarts_total{reason="signal"}'] == 1
    # Its replacement starts from zero; the sum goes on from where it was.
    c = Worker()
    metrics.worker_started(103, 0, c.region)
    c.serve(1)
    c.publish()
    assert scrape(metrics)[req(200)] == 8


def test_a_worker_that_never_published_and_a_stop_are_no_trouble(metrics: MasterMetrics) -> None:
    a = Worker()
    metrics.worker_started(101, 0, a.region)
    assert req(200) not in scrape(metrics)
    metrics.worker_exited(101, None)  # stopped on purpose: not a restart
    metrics.worker_exited(999, "exit")  # a worker that died before it was reported started
    s = scrape(metrics)
    assert [s[f'fsmfast_worker_restarts_total{{reason="{r}"}}'] for r in RESTART_REASONS] == [1, 0, 0, 0]
    assert s["fsmfast_workers"] == 0


def test_reloads_generation_and_the_last_success(metrics: MasterMetrics) -> None:
    s = scrape(metrics)
    assert s['fsmfast_config_reloads_total{result="success"}'] == 0
    assert s['fsmfast_config_reloads_total{result="failure"}'] == 0
    t0 = time.time()
    metrics.reload_result(True, 2)
    metrics.reload_result(False, 3)
    s = scrape(metrics)
    assert s["fsmfast_config_generation"] == 2
    assert s['fsmfast_config_reloads_total{result="success"}'] == 1
    assert s['fsmfast_config_reloads_total{result="failure"}'] == 1
    assert s["fsmfast_config_last_reload_successful"] == 0
    assert t0 <= s["fsmfast_config_last_reload_success_timestamp_seconds"] <= time.time()
    assert s['fsmfast_build_info{version="9.9.9"}'] == 1


@pytest.fixture(scope="module")
def tls_config(tmp_path_factory: pytest.TempPathFactory) -> TlsConfig:
    return write_tls_config(tmp_path_factory.mktemp("metrics"), PORTS, 9000)


@pytest.fixture(scope="module")
def snapshot_bytes(tls_config: TlsConfig) -> bytes:
    return snapmod.encode(build(str(tls_config.config), generation=4).snapshot)


def test_the_snapshot_gives_generation_certificates_and_zeros(metrics: MasterMetrics, snapshot_bytes: bytes) -> None:
    metrics.set_snapshot(snapmod.decode(snapshot_bytes))
    s = scrape(metrics)
    assert s["fsmfast_config_generation"] == 4
    assert s["fsmfast_config_last_reload_successful"] == 1
    assert abs(s["fsmfast_config_last_reload_success_timestamp_seconds"] - time.time()) < 60
    expiry = {k: v for k, v in s.items() if k.startswith("fsmfast_certificate_expiry_timestamp_seconds")}
    usages = {re.search(r'usage="([^"]+)"', k).group(1) for k in expiry}  # type: ignore[union-attr]
    assert usages == {"listener", "client-ca", "upstream-ca", "upstream-client"}
    listener = expiry[
        f'fsmfast_certificate_expiry_timestamp_seconds{{namespace="{NS}",secret="www-cert",usage="listener"}}'
    ]
    # The chain's leaf expires in 10 days, its CA much later: the series is the earliest.
    assert 9 * 86400 < listener - time.time() < 11 * 86400
    # Known label sets at 0 before anything happened.
    for port in PORTS.values():
        assert s[f'fsmfast_downstream_connections_total{{listener="{port}"}}'] == 0
        assert s[f'fsmfast_downstream_connections{{listener="{port}"}}'] == 0
    for port in (8443, 9443):
        for reason in TLS_FAILURES:
            assert s[f'fsmfast_tls_handshake_errors_total{{listener="{port}",reason="{reason}"}}'] == 0
    assert not any('tls_handshake_errors_total{listener="8000"' in k for k in s)  # plain HTTP
    for backend in ("httpbin/plain:80", "httpbin/secure:8443", "httpbin/bundle:9443"):
        for reason in UPSTREAM_REASONS:
            assert s[f'fsmfast_upstream_errors_total{{backend="{backend}",reason="{reason}"}}'] == 0


@pytest.fixture
def children() -> Iterator[list[int]]:
    pids: list[int] = []
    yield pids
    for pid in pids:
        os.kill(pid, 9)
        os.waitpid(pid, 0)


def _child() -> int:
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        time.sleep(60)
        os._exit(0)
    return pid


def test_worker_memory_and_heartbeat_age_by_slot(metrics: MasterMetrics, children: list[int]) -> None:
    a, b = Worker(), Worker()
    pid_a, pid_b = _child(), _child()
    children += [pid_a, pid_b]
    metrics.worker_started(pid_a, 0, a.region)
    metrics.worker_started(pid_b, 1, b.region)
    a.region.beat(time.monotonic() - 2.0)  # b never beat: no age for it
    s = scrape(metrics)
    assert s['fsmfast_worker_resident_memory_bytes{worker="0"}'] > 1 << 20
    assert s['fsmfast_worker_resident_memory_bytes{worker="1"}'] > 1 << 20
    assert 2.0 <= s['fsmfast_worker_heartbeat_age_seconds{worker="0"}'] < 30.0
    assert 'fsmfast_worker_heartbeat_age_seconds{worker="1"}' not in s
    metrics.worker_exited(pid_b, "watchdog")
    s = scrape(metrics)
    assert 'fsmfast_worker_resident_memory_bytes{worker="1"}' not in s


def test_the_masters_process_metrics(metrics: MasterMetrics) -> None:
    s = scrape(metrics)
    assert s["process_resident_memory_bytes"] > 1 << 20
    assert s["process_virtual_memory_bytes"] >= s["process_resident_memory_bytes"]
    assert s["process_cpu_seconds_total"] > 0
    started = s["process_start_time_seconds"]
    assert time.time() - 24 * 3600 < started <= time.time()
    assert 3 <= s["process_open_fds"] <= s["process_max_fds"]


def _realistic(metrics: MasterMetrics, snapshot_bytes: bytes) -> None:
    """A scrape with something in every family: two workers, one dead, errors, a reload."""
    metrics.set_snapshot(snapmod.decode(snapshot_bytes))
    a, b = Worker(), Worker()
    metrics.worker_started(os.getpid(), 0, a.region)
    metrics.worker_started(101, 1, b.region)
    a.serve(20)
    a.serve(3, 404, route="", backend="")
    a.serve(2, 502, route="httproute/httpbin/web/rule/1/match/0", backend="httpbin/secure:8443")
    a.stats.ended("httpbin/secure:8443", "upstream_connect_refused")
    a.stats.opened(8000)
    a.stats.tls_failed(8443, "not_tls")
    b.serve(5)
    b.stats.request(8000, Named('odd "route"\\name\n'), None, 200, time.monotonic() - 0.5)
    a.publish()
    b.publish()
    metrics.worker_exited(101, "signal")
    metrics.reload_result(True, 5)


@pytest.mark.skipif(PROMTOOL is None, reason="promtool is not installed (Debian: prometheus)")
def test_promtool_finds_nothing_to_lint_in_a_realistic_scrape(
    metrics: MasterMetrics, snapshot_bytes: bytes, tmp_path: Path
) -> None:
    _realistic(metrics, snapshot_bytes)
    _, body = metrics.render(None)
    assert b'fsmfast_http_requests_total{listener="8000",route="",backend="",code="404"} 3' in body
    out = subprocess.run([PROMTOOL, "check", "metrics"], input=body, capture_output=True, timeout=30)
    assert out.returncode == 0, (out.stdout + out.stderr).decode()
    assert out.stdout.strip() == b"" and out.stderr.strip() == b""


@pytest.mark.skipif(PROMTOOL is None, reason="promtool is not installed (Debian: prometheus)")
def test_prometheus_parses_the_openmetrics_scrape(
    metrics: MasterMetrics, snapshot_bytes: bytes, tmp_path: Path
) -> None:
    _realistic(metrics, snapshot_bytes)
    content_type, body = metrics.render("application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5")
    assert content_type == "application/openmetrics-text; version=1.0.0; charset=utf-8"
    text = body.decode()
    check_openmetrics(text)
    # Prometheus' OpenMetrics parser, through the backfill command: it wants a timestamp on every
    # sample, and writes a block of what it read.
    stamped = "".join(
        line if line.startswith("#") else line.replace("\n", " 1700000000\n") for line in text.splitlines(True)
    )
    (tmp_path / "scrape.om").write_text(stamped)
    out = subprocess.run(
        [PROMTOOL, "tsdb", "create-blocks-from", "openmetrics", str(tmp_path / "scrape.om"), str(tmp_path / "data")],
        capture_output=True,
        timeout=60,
    )
    assert out.returncode == 0 and b"BLOCK ULID" in out.stdout, (out.stdout + out.stderr).decode()
    samples = sum(1 for line in text.splitlines() if line and not line.startswith("#"))
    assert re.search(rb"\s%d\s+\d+\s+%d\s" % (samples, samples), out.stdout), out.stdout.decode()


def test_breakers_and_endpoint_health_are_read_from_the_arena(metrics: MasterMetrics, snapshot_bytes: bytes) -> None:
    """The master reads the machine's resilience state where the workers write it, at scrape time."""
    snap = snapmod.decode(snapshot_bytes)
    metrics.set_snapshot(snap)
    assert not any("circuit_breaker" in k or "endpoint_healthy" in k for k in scrape(metrics))  # none configured
    name = "httpbin/plain:80"
    endpoints = (snapmod.Endpoint("10.0.0.1", 80), snapmod.Endpoint("10.0.0.2", 8080))
    circuit = snapmod.CircuitBreaker("CircuitBreakingPolicy ns/cb", 1, 10, 30, error_amount_threshold=1)
    health = snapmod.HealthCheck("HealthCheckPolicy ns/hc", interval=5, max_fails=1)
    at = 4 + 2 * HEALTH_CELLS  # the breaker's words, after the two endpoints' health words
    places = snapmod.SharedCells(endpoints=(4, 4 + HEALTH_CELLS), breaker=at, budget=-1)
    policies = snapmod.BackendPolicies(health=health, circuit=circuit, cells=places)
    backend = replace(snap.backends[name], endpoints=endpoints, resilience=policies)
    snap = replace(snap, backends={**snap.backends, name: backend})
    arena = Arena(workers=1, slots=1, cells=at + BREAKER_CELLS)
    try:
        metrics.set_snapshot(snap, arena.cells)
        s = scrape(metrics)
        assert s[f'fsmfast_circuit_breaker_open{{backend="{name}"}}'] == 0
        assert s[f'fsmfast_circuit_breaker_transitions_total{{backend="{name}",state="open"}}'] == 0
        assert s[f'fsmfast_upstream_endpoint_healthy{{backend="{name}",endpoint="10.0.0.2:8080"}}'] == 1
        # A worker (another process would do the same through its own mapping) opens the breaker
        # and takes an endpoint out.
        now = time.monotonic()
        assert Breaker(arena.cells, at, circuit, name).record(502, 0.01, now) == "open"
        assert EndpointHealth(arena.cells, places.endpoints, health).failed(1, int(now * 1000))
        s = scrape(metrics)
        assert s[f'fsmfast_circuit_breaker_open{{backend="{name}"}}'] == 1
        assert s[f'fsmfast_circuit_breaker_transitions_total{{backend="{name}",state="open"}}'] == 1
        assert s[f'fsmfast_circuit_breaker_transitions_total{{backend="{name}",state="closed"}}'] == 0
        assert s[f'fsmfast_upstream_endpoint_healthy{{backend="{name}",endpoint="10.0.0.1:80"}}'] == 1
        assert s[f'fsmfast_upstream_endpoint_healthy{{backend="{name}",endpoint="10.0.0.2:8080"}}'] == 0
        assert sum("circuit_breaker_open{" in k for k in s) == 1  # only backends with a breaker
        check_openmetrics(metrics.render("application/openmetrics-text")[1].decode())
        if PROMTOOL is not None:
            out = subprocess.run([PROMTOOL, "check", "metrics"], input=metrics.render(None)[1], capture_output=True)
            assert out.returncode == 0 and not out.stdout.strip() and not out.stderr.strip(), out
    finally:
        arena.close()
