"""What a worker publishes for the master: its cumulative counts since it started, as msgpack.

Counters only grow within one worker's life, so the master can add a dead worker's last blob to
its retired totals (fsmfast.metrics.master). Label values are strings already: the worker turns
its object keys into names once per new key (fsmfast.metrics.counters), the master only adds.

Also the vocabulary both sides share: the histogram's bounds and the label values known in
advance, which the master exports at 0 before anything happened (a series born at 1 loses that
first increment to ``rate()``).
"""

from __future__ import annotations

import msgspec

# fsmfast_http_request_duration_seconds' upper bounds (seconds); fixed, so that workers add up
# bucket by bucket. counters.bucket() has them as a chain of comparisons.
BOUNDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

# The access log's reason codes (Exchange.reason, Tunnel.reason) that are an upstream's failure:
# fsmfast_upstream_errors_total's ``reason`` values.
UPSTREAM_REASONS = (
    "no_healthy_upstream",
    "upstream_connect_failed",
    "upstream_connect_refused",
    "upstream_connect_timeout",
    "upstream_invalid_response",
    "upstream_reset",
    "upstream_reset_mid_body",
    "upstream_timeout",
    "upstream_tls_error",
)

# Why a listener's TLS handshake failed (fsmfast.tls.listener.failure_reason):
# fsmfast_tls_handshake_errors_total's ``reason`` values.
TLS_FAILURES = ("client_certificate", "closed", "not_tls", "other", "protocol", "timeout")


class SeriesCounts(msgspec.Struct, array_like=True, frozen=True):
    """One (listener, route, backend): its requests by status and their durations."""

    listener: str
    route: str
    backend: str
    codes: list[tuple[int, int]]  # (status sent to the client, requests), statuses with any
    buckets: list[int]  # requests per bucket of BOUNDS, then above the last: not cumulative
    seconds: float  # the durations' sum


class WorkerCounts(msgspec.Struct, array_like=True, frozen=True):
    series: list[SeriesCounts] = []
    upstream_errors: list[tuple[str, str, int]] = []  # (backend, reason, count)
    connections: list[tuple[str, int, int]] = []  # (listener, open now, accepted so far)
    tls_errors: list[tuple[str, str, int]] = []  # (listener, reason, count)
    events: list[tuple[str, str, str, int]] = []  # resilience policies: (event, backend, label, count)


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(WorkerCounts)


def encode(counts: WorkerCounts) -> bytes:
    return _encoder.encode(counts)


def decode(blob: bytes) -> WorkerCounts:
    """Raises msgspec.DecodeError on a blob that is not one (the region's crc makes that rare)."""
    return _decoder.decode(blob)
