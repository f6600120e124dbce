"""What a worker counts (fsmfast.metrics.counters) as its exchanges end, and how its tick publishes it.

The proxy core runs in-process on memory transports (tests.support.memproxy); ``make test`` runs
this file over the compiled modules and again over the pure-Python twins (FSMFAST_NO_EXTENSIONS=1).
Every exchange must be counted exactly once, however it ends, with the status the client got.
"""

from __future__ import annotations

import asyncio
import math
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fsmfast.metrics import blob
from fsmfast.metrics.blob import BOUNDS, UPSTREAM_REASONS, WorkerCounts
from fsmfast.metrics.counters import WorkerStats, bucket
from fsmfast.metrics.publish import EVERY
from fsmfast.metrics.shm import StatsRegion
from fsmfast.proxy import exchange
from fsmfast.proxy.states import TRANSITIONS
from fsmfast.settings import Settings
from fsmfast.worker.context import TICK, Context
from tests.support.memproxy import MemoryProxy, _snapshot

ROUTE = "httproute/ns/r/rule/0/match/0"
LIMITED = "httproute/ns/limited/rule/0/match/0"
BACKEND = "ns/up:80"


class Named:
    def __init__(self, name: str) -> None:
        self.name = name


@pytest.fixture
def proxy() -> Iterator[MemoryProxy]:
    p = MemoryProxy(upstream_connections=4, auto_answer=False)
    try:
        yield p
    finally:
        p.close()


def requests(counts: WorkerCounts) -> dict[tuple[str, str, str, int], int]:
    return {(s.listener, s.route, s.backend, code): n for s in counts.series for code, n in s.codes}


def observed(counts: WorkerCounts) -> dict[tuple[str, str, str], int]:
    """Histogram counts per series: every request counted by status is in the histogram too."""
    return {(s.listener, s.route, s.backend): sum(s.buckets) for s in counts.series}


# -- the counters themselves ----------------------------------------------------------------


def test_bucket_is_the_first_bound_at_or_above_the_duration() -> None:
    assert len(BOUNDS) == 11
    for i, bound in enumerate(BOUNDS):
        assert bucket(bound) == i
        assert bucket(math.nextafter(bound, math.inf)) == i + 1
        assert bucket(math.nextafter(bound, 0.0)) == i
    assert bucket(0.0) == 0
    assert bucket(math.inf) == len(BOUNDS)


def test_counts_by_key_whatever_order_the_keys_come_in() -> None:
    stats = WorkerStats()
    a, b = Named("route-a"), Named("route-b")
    backend = Named("ns/svc:80")
    now = time.monotonic()
    for rule, status in [(a, 200), (b, 200), (a, 200), (a, 503), (None, 404), (b, 200)]:
        stats.request(8080, rule, backend if rule is not None else None, status, now)
    stats.request(8443, a, backend, 200, now)
    assert requests(stats.counts()) == {
        ("8080", "route-a", "ns/svc:80", 200): 2,
        ("8080", "route-a", "ns/svc:80", 503): 1,
        ("8080", "route-b", "ns/svc:80", 200): 2,
        ("8080", "", "", 404): 1,
        ("8443", "route-a", "ns/svc:80", 200): 1,
    }


def test_a_reload_keeps_the_counts_and_objects_of_the_same_name_share_them() -> None:
    stats = WorkerStats()
    stats.request(80, Named("r"), Named("b"), 200, time.monotonic())
    stats.forget()  # a new snapshot: new rule and backend objects of the same names
    stats.request(80, Named("r"), Named("b"), 200, time.monotonic())
    assert requests(stats.counts()) == {("80", "r", "b", 200): 2}
    assert len(stats.counts().series) == 1


def test_statuses_outside_100_599_are_counted_too() -> None:
    stats = WorkerStats()
    for status in (0, 99, 100, 599, 600, 999):
        stats.request(80, None, None, status, time.monotonic())
    [series] = stats.counts().series
    assert series.codes == [(0, 1), (99, 1), (100, 1), (599, 1), (600, 1), (999, 1)]


def test_durations_land_in_their_buckets_and_add_up() -> None:
    stats = WorkerStats()
    now = time.monotonic()
    stats.request(80, None, None, 200, now - 0.2)  # 0.25
    stats.request(80, None, None, 200, now - 30.0)  # +Inf
    [series] = stats.counts().series
    assert series.buckets[5] == 1 and series.buckets[11] == 1 and sum(series.buckets) == 2
    assert 30.2 <= series.seconds < 31.0


def test_only_upstream_reasons_are_upstream_errors() -> None:
    stats = WorkerStats()
    stats.ended("ns/a:80", "upstream_connect_refused")
    stats.ended("ns/a:80", "upstream_connect_refused")
    stats.ended("ns/a:80", "no_healthy_upstream")
    stats.ended("ns/a:80", "downstream_disconnect")
    stats.ended("", "no_route")
    assert sorted(stats.counts().upstream_errors) == [
        ("ns/a:80", "no_healthy_upstream", 1),
        ("ns/a:80", "upstream_connect_refused", 2),
    ]


def test_every_upstream_reason_code_the_proxy_writes_is_known() -> None:
    # The access log's codes are literals where each error is produced; the metric's reason
    # values must cover every upstream one (and nothing the proxy never writes).
    root = Path(exchange.__file__).resolve().parent
    written: set[str] = set()
    for path in root.glob("*.py"):
        written |= set(re.findall(r'"(upstream_[a-z_]+|no_healthy_upstream)"', path.read_text()))
    events = {event for _state, event in TRANSITIONS}  # the state machine's, not reasons
    assert written - events == set(UPSTREAM_REASONS)


def test_connections_open_and_accepted_per_port() -> None:
    stats = WorkerStats()
    for port in (80, 80, 443):
        stats.opened(port)
    stats.closed(80)
    stats.tls_failed(443, "not_tls")
    counts = stats.counts()
    assert sorted(counts.connections) == [("443", 1, 1), ("80", 1, 2)]
    assert counts.tls_errors == [("443", "not_tls", 1)]


def test_the_blob_round_trips() -> None:
    stats = WorkerStats()
    stats.request(80, Named("r"), Named("b"), 200, time.monotonic())
    stats.opened(80)
    counts = stats.counts()
    assert blob.decode(blob.encode(counts)) == counts


# -- the proxy's exchanges, counted once each --------------------------------------------------


def test_proxied_responses_are_counted_with_route_backend_and_status(proxy: MemoryProxy) -> None:
    proxy.feed(b"GET /a HTTP/1.1\r\nHost: h\r\n\r\nGET /b HTTP/1.1\r\nHost: h\r\n\r\n")
    proxy.respond(0, b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfirst")
    proxy.respond(0, b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n")
    counts = proxy.ctx.stats.counts()
    assert requests(counts) == {("8000", ROUTE, BACKEND, 200): 1, ("8000", ROUTE, BACKEND, 201): 1}
    assert observed(counts) == {("8000", ROUTE, BACKEND): 2}
    assert counts.upstream_errors == []
    assert counts.connections == [("8000", 1, 1)]


def test_an_upstream_failure_is_a_502_and_an_upstream_error(proxy: MemoryProxy) -> None:
    proxy.feed(b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n")
    proxy.respond(0, b"HTTP/1.1 200")  # part of a head: no retry
    proxy.lose(0)
    assert proxy.client_output().startswith(b"HTTP/1.1 502 ")
    counts = proxy.ctx.stats.counts()
    assert requests(counts) == {("8000", ROUTE, BACKEND, 502): 1}
    assert counts.upstream_errors == [(BACKEND, "upstream_reset", 1)]


def test_an_abort_mid_body_counts_the_status_already_sent(proxy: MemoryProxy) -> None:
    proxy.feed(b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n")
    proxy.respond(0, b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
    proxy.client.queue[0].deadline = 1.0
    proxy.ctx._tick()  # the response timeout: the client connection is cut
    assert proxy.client_t.closed
    counts = proxy.ctx.stats.counts()
    assert requests(counts) == {("8000", ROUTE, BACKEND, 200): 1}
    assert counts.upstream_errors == [(BACKEND, "upstream_timeout", 1)]


def test_a_local_reply_counts_with_its_route(proxy: MemoryProxy) -> None:
    proxy.feed(b"POST /limited HTTP/1.1\r\nHost: h\r\nContent-Length: 65\r\n\r\n")
    assert proxy.client_output().startswith(b"HTTP/1.1 413 ")
    assert requests(proxy.ctx.stats.counts()) == {("8000", LIMITED, BACKEND, 413): 1}


def test_a_refused_request_counts_without_route_or_backend(proxy: MemoryProxy) -> None:
    proxy.feed(b"GET / HTTP/1.1\r\n\r\n")  # no Host: refused before routing
    assert proxy.client_output().startswith(b"HTTP/1.1 400 ")
    assert requests(proxy.ctx.stats.counts()) == {("8000", "", "", 400): 1}


def test_a_client_that_leaves_is_counted_once_and_its_connection_closes(proxy: MemoryProxy) -> None:
    proxy.feed(b"GET /a HTTP/1.1\r\nHost: h\r\n\r\nGET /b HTTP/1.1\r\nHost: h\r\n\r\n")
    proxy.client.connection_lost(None)
    proxy.client.connection_lost(None)  # told twice: neither the exchanges nor the gauge count it again
    counts = proxy.ctx.stats.counts()
    assert requests(counts) == {("8000", ROUTE, BACKEND, 499): 2}
    assert counts.connections == [("8000", 0, 1)]


def test_an_answered_exchange_is_not_counted_again_when_the_client_goes(proxy: MemoryProxy) -> None:
    proxy.feed(b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n")
    proxy.respond(0, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    proxy.client.connection_lost(None)
    assert requests(proxy.ctx.stats.counts()) == {("8000", ROUTE, BACKEND, 200): 1}


def test_metrics_do_not_depend_on_the_access_log(proxy: MemoryProxy) -> None:
    assert not proxy.ctx.access_log.enabled  # MemoryProxy runs with the access log off
    proxy.feed(b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n")
    proxy.respond(0, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    assert sum(requests(proxy.ctx.stats.counts()).values()) == 1


# -- the tick: heartbeat and publishing ----------------------------------------------------------


@pytest.fixture
def region() -> Iterator[StatsRegion]:
    r = StatsRegion(1 << 16)
    yield r
    r.close()


def test_the_tick_beats_and_publishes_what_changed(region: StatsRegion) -> None:
    loop = asyncio.new_event_loop()
    try:
        ctx = Context(loop, Settings(config_path="", access_log=False), 0, region)
        ctx.apply(_snapshot())
        ctx.start_ticking()
        first = region.heartbeat()
        assert first > 0.0
        assert blob.decode(region.read() or b"") == WorkerCounts()  # nothing counted yet, published anyway
        ctx.stats.request(8000, None, None, 404, time.monotonic())
        ctx._tick()
        assert region.heartbeat() >= first
        assert requests(blob.decode(region.read() or b"")) == {}  # published at most once a second
        ctx.publisher.tick(time.monotonic() + EVERY)
        assert requests(blob.decode(region.read() or b"")) == {("8000", "", "", 404): 1}
        ctx.stats.request(8000, None, None, 404, time.monotonic())
        ctx.stop_ticking()  # the last counts go out as the worker stops
        assert requests(blob.decode(region.read() or b"")) == {("8000", "", "", 404): 2}
    finally:
        loop.close()


def test_changes_are_published_at_most_once_a_second_and_no_change_is_not(region: StatsRegion) -> None:
    loop = asyncio.new_event_loop()
    try:
        ctx = Context(loop, Settings(config_path="", access_log=False), 0, region)
        publisher = ctx.publisher
        publisher.tick(100.0)  # the first: published at once
        assert blob.decode(region.read() or b"") == WorkerCounts()
        region.publish(b"marker")  # overwritten only by the next publish
        ctx.stats.request(80, None, None, 200, time.monotonic())
        publisher.tick(100.0 + TICK)
        assert region.read() == b"marker"
        assert region.heartbeat() == 100.0 + TICK  # the heartbeat is every tick's
        publisher.tick(100.0 + EVERY)
        assert requests(blob.decode(region.read() or b"")) == {("80", "", "", 200): 1}
        region.publish(b"marker")
        publisher.tick(100.0 + 3 * EVERY)  # nothing counted since
        assert region.read() == b"marker"
    finally:
        loop.close()


def test_without_a_region_counts_are_kept_and_nothing_is_published() -> None:
    loop = asyncio.new_event_loop()
    try:
        ctx = Context(loop, Settings(config_path="", access_log=False), 0)
        ctx.stats.request(80, None, None, 200, time.monotonic())
        ctx.start_ticking()
        ctx._tick()
        ctx.stop_ticking()
        assert requests(ctx.stats.counts()) == {("80", "", "", 200): 1}
    finally:
        loop.close()
