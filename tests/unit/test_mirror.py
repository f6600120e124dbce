"""RequestMirror bookkeeping without sockets: what is sent, the body limit, the in-flight bound, expiry."""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest

from fsmfast.codec import FRAME_NONE
from fsmfast.proxy import mirror
from fsmfast.proxy.filters import MirrorTarget, RequestPlan


class Handle:
    def __init__(self, callback: Callable[[], None]) -> None:
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class Loop:
    def __init__(self) -> None:
        self.timers: list[Handle] = []

    def call_later(self, delay: float, callback: Callable[[], None]) -> Handle:
        handle = Handle(callback)
        self.timers.append(handle)
        return handle


class Transport:
    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.aborted = False

    def writelines(self, pieces: list[bytes]) -> None:
        self.written.extend(pieces)

    def abort(self) -> None:
        self.aborted = True


class Pool:
    backend_name = "ns/m:80"
    address = "10.0.0.9:80"

    def __init__(self) -> None:
        self.ctx = SimpleNamespace(loop=Loop(), settings=SimpleNamespace(response_timeout=5.0))
        self.connecting: list[Any] = []
        self.given_back: list[Any] = []

    def take(self) -> None:
        return None

    def connect(self, exchange: Any) -> None:
        self.connecting.append(exchange)

    def give_back(self, conn: Any) -> None:
        self.given_back.append(conn)


class Conn:
    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self.transport = Transport()
        self.exchange: Any = None
        self.got_bytes = True
        self.closed = False

    def abort(self) -> None:
        self.transport.abort()

    def close(self) -> None:
        self.closed = True


def exchange(framing: int = FRAME_NONE) -> Any:
    client = SimpleNamespace(client_ip=b"192.0.2.1", scheme=b"http")
    return SimpleNamespace(
        method=b"POST" if framing != FRAME_NONE else b"GET",
        target=b"/a?b=1",
        headers=[(b"Host", b"h.test"), (b"Connection", b"keep-alive")],
        host=b"h.test",
        client=client,
        req_framing=framing,
        request_done=framing == FRAME_NONE,
        request_id_args=lambda: (b"0123456789abcdef", 0x2A),  # its request id, 0123456789abcdef000000000000002a
    )


@pytest.fixture
def pool() -> Pool:
    assert mirror.inflight() == 0, "a previous test leaked a mirror"
    return Pool()


def targets(pool: Pool, *percents: float) -> tuple[MirrorTarget, ...]:
    backend = SimpleNamespace(pick=lambda: pool)
    return tuple(MirrorTarget(backend, "ns/m:80", p) for p in percents)


PLAIN = RequestPlan((), (), None, None, None, ())


def test_a_request_without_body_is_sent_at_once_and_its_answer_dropped(pool: Pool) -> None:
    assert mirror.start(exchange(), PLAIN, targets(pool, 100.0)) is None  # nothing waits for a body
    (m,) = pool.connecting
    assert mirror.inflight() == 1
    conn = Conn(pool)
    m.upstream_ready(conn, reused=False)
    head = b"".join(conn.transport.written)
    assert head.startswith(b"GET /a?b=1 HTTP/1.1\r\nHost: h.test\r\n")
    assert b"Connection" not in head and b"X-Forwarded-For: 192.0.2.1\r\n" in head
    # The copy carries the request id of the request it copies.
    assert b"\r\nX-Request-Id: 0123456789abcdef000000000000002a\r\n" in head
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\n"
    m.response_head(200, 7, False, head, 0, len(head) - 4, True)
    m.response_body(b"ignored")
    m.response_complete(conn, True)
    assert pool.given_back == [conn] and conn.exchange is None
    assert mirror.inflight() == 0
    assert pool.ctx.loop.timers[0].cancelled


def test_the_body_is_buffered_and_sent_with_its_length(pool: Pool) -> None:
    ex = exchange(framing=11)
    (m,) = mirror.start(ex, PLAIN, targets(pool, 100.0)) or []
    mirror.feed([m], b"hello ")
    mirror.feed([m], b"world")
    assert pool.connecting == []  # not before the body is complete
    mirror.complete([m])
    conn = Conn(pool)
    m.upstream_ready(conn, reused=False)
    assert b"Content-Length: 11\r\n" in conn.transport.written[0]
    assert conn.transport.written[1:] == [b"hello ", b"world"]
    m.upstream_lost(conn, None)
    assert mirror.inflight() == 0


def test_a_body_over_the_limit_drops_the_copy(pool: Pool, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mirror, "MAX_BODY", 10)
    (m,) = mirror.start(exchange(framing=-2), PLAIN, targets(pool, 100.0)) or []
    mirror.feed([m], b"x" * 11)
    assert mirror.inflight() == 0 and m.done
    mirror.complete([m])
    assert pool.connecting == []


def test_in_flight_mirrors_are_bounded(pool: Pool, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mirror, "MAX_INFLIGHT", 2)
    mirror.start(exchange(), PLAIN, targets(pool, 100.0, 100.0, 100.0))
    assert len(pool.connecting) == 2
    for m in pool.connecting:
        m.upstream_failed(SimpleNamespace(message="refused"), pool)
    assert mirror.inflight() == 0


def test_percent_zero_and_no_endpoint_send_nothing(pool: Pool) -> None:
    mirror.start(exchange(), PLAIN, targets(pool, 0.0))
    nowhere = MirrorTarget(SimpleNamespace(pick=lambda: None), "ns/empty:80", 100.0)
    mirror.start(exchange(), PLAIN, (nowhere,))
    assert pool.connecting == [] and mirror.inflight() == 0


def test_expiry_aborts_a_mirror_that_does_not_answer(pool: Pool) -> None:
    mirror.start(exchange(), PLAIN, targets(pool, 100.0))
    (m,) = pool.connecting
    conn = Conn(pool)
    m.upstream_ready(conn, reused=False)
    pool.ctx.loop.timers[0].callback()
    assert conn.transport.aborted and mirror.inflight() == 0
    # A connection that completes after expiry goes back to the pool unused.
    late = Conn(pool)
    m.upstream_ready(late, reused=False)
    assert pool.given_back == [late] and late.transport.written == []
