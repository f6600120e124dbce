"""What one worker counts: HTTP requests and their durations, upstream errors, client
connections, failed TLS handshakes.

The proxy core bumps these on its paths, compiled to C calls on C fields (counters.pxd): an
exchange counts itself once, when it ends, however it ends (``Exchange._record``); a client
connection counts its opening and its end; a TLS listener its failed handshakes. Requests are
keyed by objects the exchange holds anyway (the port, the route rule, the backend), and the last
key is remembered, so a run of requests to one route costs three pointer comparisons and a few
increments each; label strings are made once per new key, never per request. The worker's tick
snapshots everything (``counts``) and publishes it for the master (fsmfast.metrics.publish).

Labels:
- ``listener``: the listening port as a string ("8443"). A port can carry several Gateway
  listeners (by hostname), and an HTTP connection only learns which with each request's Host;
  the port is what every connection and handshake has from its start.
- ``route``: the rule's name (``httproute/<ns>/<name>/rule/<i>/match/<j>``); "" when none matched.
- ``backend``: ``<ns>/<service>:<port>``; "" for an answer without one (404, a redirect, ...).
"""

from __future__ import annotations

import time
from array import array

from fsmfast.metrics.blob import UPSTREAM_REASONS, SeriesCounts, WorkerCounts

# Statuses 100..599 are counted in an array, by index; any other (none a valid response has) in a dict.
LOWEST = 100
CODES = 500
_UPSTREAM = frozenset(UPSTREAM_REASONS)


def bucket(seconds: float) -> int:
    """The histogram bucket of a duration: the index of the first of blob.BOUNDS at or above it,
    or len(BOUNDS) (+Inf). Comparisons, not a search: most requests take milliseconds."""
    if seconds <= 0.1:
        if seconds <= 0.005:
            return 0
        if seconds <= 0.01:
            return 1
        if seconds <= 0.025:
            return 2
        if seconds <= 0.05:
            return 3
        return 4
    if seconds <= 0.25:
        return 5
    if seconds <= 0.5:
        return 6
    if seconds <= 1.0:
        return 7
    if seconds <= 2.5:
        return 8
    if seconds <= 5.0:
        return 9
    if seconds <= 10.0:
        return 10
    return 11


class Series:
    """The requests of one (listener, route, backend): by status, and their durations."""

    def __init__(self, labels: tuple[str, str, str]) -> None:
        self.labels = labels
        self.codes = array("q", bytes(8 * CODES))
        self.seen: list[int] = []  # the indexes of ``codes`` counted so far, in the order first seen
        self.other: dict[int, int] | None = None
        self.buckets = array("q", bytes(8 * 12))
        self.seconds = 0.0

    def add(self, status: int, seconds: float) -> None:
        index = status - LOWEST
        if 0 <= index < CODES:
            self.codes[index] += 1
            if self.codes[index] == 1:
                self.seen.append(index)
        else:
            other = self.other
            if other is None:
                other = self.other = {}
            other[status] = other.get(status, 0) + 1
        self.buckets[bucket(seconds)] += 1
        self.seconds += seconds

    def counts(self) -> SeriesCounts:
        # Plain loops over the fields: compiled, C reads of the arrays (the tick calls this).
        seen = []
        for i in self.seen:
            seen.append((i + LOWEST, self.codes[i]))
        if self.other:
            seen += list(self.other.items())
        seen.sort()
        buckets = []
        for i in range(12):
            buckets.append(self.buckets[i])
        listener, route, backend = self.labels
        return SeriesCounts(listener, route, backend, seen, buckets, self.seconds)


class PortCounts:
    """Client connections of one listening port: open now, and accepted in all."""

    def __init__(self) -> None:
        self.open = 0
        self.total = 0


class WorkerStats:
    def __init__(self) -> None:
        # (port, rule, backend) -> its Series; cleared with each snapshot (``forget``), so old
        # rules are not kept alive by it. Several keys can share one Series (a rule object per
        # hostname table, a reload's new objects): ``by_labels`` holds each Series once.
        self.series: dict[tuple[object, object, object], Series] = {}
        self.by_labels: dict[tuple[str, str, str], Series] = {}
        # The last key looked up and its Series.
        self._port: object = None
        self._rule: object = None
        self._backend: object = None
        self._last: Series | None = None
        self.ports: dict[object, PortCounts] = {}
        self.upstream_errors: dict[tuple[str, str], int] = {}
        self.tls_errors: dict[tuple[str, str], int] = {}
        # What the resilience policies did (issue 19), keyed (event, backend, label): "retry" (label: why
        # the attempt failed), "retry_refused" (why not), "health_check" (pass, fail), "endpoint" (out, in).
        self.events: dict[tuple[str, str, str], int] = {}
        # Bumped with every count: the tick publishes only when it moved (at most once a second).
        self.changes = 0

    def request(self, port: object, rule: object, backend: object, status: int, started: float) -> None:
        """An exchange ended: ``status`` went to the client (0 if nothing did), ``started`` is
        when its head was read (time.monotonic(); compiled, both clock reads are C calls)."""
        series = self._last
        if series is None or port is not self._port or rule is not self._rule or backend is not self._backend:
            series = self._find(port, rule, backend)
        series.add(status, time.monotonic() - started)
        self.changes += 1

    def _find(self, port: object, rule: object, backend: object) -> Series:
        key = (port, rule, backend)
        series = self.series.get(key)
        if series is None:
            labels = (
                str(port),
                "" if rule is None else str(getattr(rule, "name", "")),
                "" if backend is None else str(getattr(backend, "name", "")),
            )
            series = self.by_labels.get(labels)
            if series is None:
                series = self.by_labels[labels] = Series(labels)
            self.series[key] = series
        self._port = port
        self._rule = rule
        self._backend = backend
        self._last = series
        return series

    def ended(self, backend: str, reason: str) -> None:
        """An exchange or tunnel ended with the access log's ``reason``: counted when it is an
        upstream's failure."""
        if reason in _UPSTREAM:
            key = (backend, reason)
            self.upstream_errors[key] = self.upstream_errors.get(key, 0) + 1
            self.changes += 1

    def event(self, what: str, backend: str, label: str) -> None:
        """A resilience policy acted (a retry, a probe, an endpoint going out): never on a plain request."""
        key = (what, backend, label)
        self.events[key] = self.events.get(key, 0) + 1
        self.changes += 1

    def opened(self, port: object) -> None:
        counts = self.ports.get(port)
        if counts is None:
            counts = self.ports[port] = PortCounts()
        counts.open += 1
        counts.total += 1
        self.changes += 1

    def closed(self, port: object) -> None:
        counts = self.ports.get(port)
        if counts is not None:
            counts.open -= 1
            self.changes += 1

    def tls_failed(self, port: object, reason: str) -> None:
        key = (str(port), reason)
        self.tls_errors[key] = self.tls_errors.get(key, 0) + 1
        self.changes += 1

    def forget(self) -> None:
        """A new snapshot: let go of the old one's rules and backends (the counts stay)."""
        self.series = {}
        self._port = self._rule = self._backend = None
        self._last = None

    def counts(self) -> WorkerCounts:
        """Everything counted so far, labelled."""
        return WorkerCounts(
            series=[series.counts() for series in self.by_labels.values()],
            upstream_errors=[(backend, reason, n) for (backend, reason), n in self.upstream_errors.items()],
            connections=[(str(port), c.open, c.total) for port, c in self.ports.items()],
            tls_errors=[(listener, reason, n) for (listener, reason), n in self.tls_errors.items()],
            events=[(what, backend, label, n) for (what, backend, label), n in self.events.items()],
        )
