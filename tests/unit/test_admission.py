"""The worker's connection-limit policy (fsmfast/worker/admission.py) as a plain object.

``Worker`` below stands in for the worker's connections the way the context treats them: each has
the time it started waiting for a request, or none while a request is in progress; ``reclaim``
closes the oldest waiting ones, and their ``connection_lost`` comes later, on a later loop
iteration, as with a real transport. The process-level behaviour is tests/integration/
test_connection_limit.py.
"""

from __future__ import annotations

import logging

import pytest

from fsmfast.worker.admission import BATCH, PRESSED_HEADER, PRESSED_KEEPALIVE, Admission


class Worker:
    def __init__(self, limit: int, keepalive: float = 75.0, header: float = 60.0) -> None:
        self.adm = Admission(limit, keepalive, header, index=3)
        self.adm.pause = self.pause
        self.adm.resume = self.resume
        self.adm.reclaim = self.reclaim
        self.idle_since: dict[int, float | None] = {}  # open connections; None: a request in progress
        self.closing: list[int] = []  # closed, connection_lost not delivered yet
        self.closed: list[int] = []
        self.events: list[str] = []
        self.next = 0
        self.asked: list[int] = []

    def pause(self) -> None:
        self.events.append("pause")

    def resume(self) -> None:
        self.events.append("resume")

    def reclaim(self, n: int) -> int:
        self.asked.append(n)
        idle = sorted((since, c) for c, since in self.idle_since.items() if since is not None and c not in self.closing)
        picked = [c for _, c in idle[:n]]
        self.closing += picked
        return len(picked)

    def accept(self, since: float | None) -> int:
        """A new connection; ``since``: when it started waiting (accept time, or None if busy at once)."""
        c = self.next
        self.next += 1
        self.adm.opened(len(self.idle_since) + 1)
        self.idle_since[c] = since
        return c

    def lost(self, c: int) -> None:
        del self.idle_since[c]
        if c in self.closing:
            self.closing.remove(c)
        self.closed.append(c)
        self.adm.closed(len(self.idle_since))

    def iteration(self) -> None:
        """The loop's next iteration: the closed connections are gone."""
        for c in list(self.closing):
            self.lost(c)


def test_thresholds_follow_the_limit() -> None:
    adm = Admission(4096)
    assert (adm.high, adm.calm, adm.low, adm.batch) == (3072, 2663, 3687, BATCH)
    assert Admission(50).batch == 3  # a sixteenth of the limit, up to BATCH
    small = Admission(4)
    assert (small.high, small.low, small.batch) == (3, 3, 1)


def test_below_the_high_water_mark_nothing_happens() -> None:
    w = Worker(100)
    for i in range(74):
        w.accept(float(i))
    assert not w.adm.pressed and not w.asked and not w.events
    assert (w.adm.keepalive_timeout, w.adm.header_timeout) == (75.0, 60.0)


def test_pressure_cuts_the_timeouts_and_calm_restores_them(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "fsmfast.worker")
    w = Worker(100)
    for i in range(75):
        w.accept(float(i))
    assert w.adm.pressed
    assert (w.adm.keepalive_timeout, w.adm.header_timeout) == (PRESSED_KEEPALIVE, PRESSED_HEADER)
    assert not w.asked  # far from the limit: nothing is closed to make room
    # Between calm (65) and high (75) the pressure holds, so that it does not flap at the mark.
    w.adm.tick(70)
    assert w.adm.pressed
    w.adm.tick(65)
    assert not w.adm.pressed
    assert (w.adm.keepalive_timeout, w.adm.header_timeout) == (75.0, 60.0)
    messages = [r.getMessage() for r in caplog.records]
    assert any(
        "worker 3: 75 connections, over 75% of the limit of 100" in m and "cut to 5s and 5s" in m for m in messages
    )
    assert any("back to 75s and 60s; 0 idle connections were closed" in m for m in messages)


def test_configured_timeouts_shorter_than_the_pressed_ones_stay() -> None:
    w = Worker(8, keepalive=2.0, header=1.0)
    for i in range(8):
        w.accept(float(i))
    assert (w.adm.keepalive_timeout, w.adm.header_timeout) == (2.0, 1.0)


def test_at_the_limit_the_oldest_idle_make_room_and_accepting_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "fsmfast.worker")
    w = Worker(64)  # batch 4
    busy = [w.accept(None) for _ in range(30)]
    idle = [w.accept(float(i)) for i in range(33)]  # waiting since 0.0, 1.0, ... : idle[0] is the oldest
    assert not w.asked
    w.accept(100.0)  # the 64th
    assert w.asked == [4]
    assert w.closing == idle[:4]
    assert not w.events  # no pause
    # Until their connection_lost comes, the four count as gone: the next accepts do not scan again.
    for _ in range(3):
        w.accept(101.0)
    assert w.asked == [4]
    w.accept(102.0)  # 68 open, 4 leaving: at the limit again
    assert w.asked == [4, 4]
    assert w.closing == idle[:8]
    w.iteration()
    assert w.closed == idle[:8]
    assert not set(busy) & set(w.closed)
    assert len(w.idle_since) == 60
    # One warning for the whole episode, not one per batch; the count when the pressure ends.
    starts = [r for r in caplog.records if "closing the idle ones that have waited longest" in r.getMessage()]
    assert len(starts) == 1
    for c in list(w.idle_since)[: 60 - 42]:
        w.lost(c)
    w.adm.tick(42)  # calm: 48 - 6
    assert any("8 idle connections were closed to admit new clients" in r.getMessage() for r in caplog.records)
    assert w.adm.reclaimed == 0  # counted afresh next time


def test_a_connection_lost_for_another_reason_never_lets_the_count_run_low() -> None:
    w = Worker(64)
    for i in range(63):
        w.accept(float(i))
    w.accept(100.0)
    assert w.adm.releasing == 4
    # An unrelated connection ends first (its client closed it): it takes one off what is leaving,
    # so the count the policy corrects with stays at or above the true one.
    other = next(c for c in w.idle_since if c not in w.closing)
    w.lost(other)
    assert w.adm.releasing == 3
    w.iteration()
    assert w.adm.releasing == 0
    assert len(w.idle_since) == 59


def test_all_busy_at_the_limit_stops_accepting_then_the_tick_reclaims_what_turned_idle() -> None:
    w = Worker(20)  # low 18
    conns = [w.accept(None) for _ in range(20)]
    assert w.events == ["pause"]
    assert w.asked == [1]  # it looked first
    w.adm.opened(21)  # one more from the same accept burst: no second pause
    w.idle_since[w.next] = None
    w.next += 1
    assert w.events == ["pause"]
    w.adm.tick(21)  # still all busy
    assert w.events == ["pause"]
    # Three finished their requests and wait for the next one.
    for c, since in zip(conns[:3], (7.0, 5.0, 6.0), strict=True):
        w.idle_since[c] = since
    w.adm.tick(21)
    assert w.asked[-1] == 3  # down to low: 21 - 18
    assert w.closing == [conns[1], conns[2], conns[0]]  # oldest first
    assert w.events == ["pause"]
    w.iteration()
    assert w.events == ["pause", "resume"]
    assert not w.adm.paused


def test_paused_resumes_when_connections_end_on_their_own() -> None:
    w = Worker(10)  # low 9
    conns = [w.accept(None) for _ in range(10)]
    assert w.events == ["pause"]
    w.lost(conns[0])
    assert w.events == ["pause", "resume"]


def test_reclaim_passes_over_a_connection_whose_request_waits_unread() -> None:
    """The context's scan (fsmfast/worker/context.py) looks into the socket of each connection it
    would close: one whose client has sent bytes the worker has not read yet is not idle."""
    import asyncio
    import socket

    import uvloop

    from fsmfast.worker.context import _unread

    class Conn(asyncio.Protocol):
        transport: asyncio.BaseTransport | None = None

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport

    async def main() -> tuple[bool, bool, bool]:
        conns: list[Conn] = []

        def factory() -> Conn:
            conns.append(Conn())
            return conns[-1]

        server = await asyncio.get_running_loop().create_server(factory, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        quiet, talking = socket.create_connection(("127.0.0.1", port)), socket.create_connection(("127.0.0.1", port))
        while len(conns) < 2 or any(c.transport is None for c in conns):
            await asyncio.sleep(0.01)
        for c in conns:
            assert c.transport is not None
            c.transport.pause_reading()  # what the worker has not got round to reading
        talking.sendall(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        await asyncio.sleep(0.05)
        gone = Conn()  # closed already: no transport
        result = (_unread(conns[0]), _unread(conns[1]), _unread(gone))
        quiet.close()
        talking.close()
        server.close()
        return result

    assert uvloop.run(main()) == (False, True, False)
