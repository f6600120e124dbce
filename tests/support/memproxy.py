"""The proxy core without sockets, for fuzzing: client bytes in, upstream-bound bytes out.

A ``ClientConnection`` and a pool of ``UpstreamConnection`` objects are wired to in-memory
transports (as ``bench.hotpath`` does). ``MemoryProxy.feed`` hands the client's bytes to the
gateway one read at a time; every upstream connection that has received a complete request
is answered (``200``, empty body), which lets the next pipelined request go. Afterwards:

- ``parsed``: what the gateway's own parser made of the client's stream, per request
  (method, target, body, and whether it was complete), recorded from the parser callbacks;
- ``forwarded``: what each upstream connection received, parsed again by an independent
  llhttp instance (a framing disagreement shows up as a parse error or a wrong body);
- ``refused``: statuses of the answers the gateway produced itself.

With ``auto_answer=False`` the test plays the upstreams itself (``respond``, ``lose``), and
``listen`` starts a real loopback upstream for the connections the pool opens afresh (a retry):
enough to drive one exchange through any path of its state machine in-process.

The invariant the fuzz tests check (``check_framing``): every request an upstream received
is complete, well-framed, and byte for byte a request the gateway parsed (same method,
target as forwarded, same body); nothing else reaches an upstream.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import httptools

from fsmfast.proxy.downstream import ClientConnection
from fsmfast.proxy.upstream import UpstreamConnection
from fsmfast.settings import Settings
from fsmfast.snapshot import SCHEMA, Backend, BackendRef, Endpoint, Listener, PathMatch, Rule, Snapshot, VirtualHost
from fsmfast.worker.context import Context

RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
PORT = 8000


class MemoryTransport:
    """Just enough of a uvloop transport: collects what is written, remembers closing."""

    def __init__(self, peer: tuple[str, int] = ("127.0.0.1", 40000)) -> None:
        self.written: list[bytes] = []
        self.peer = peer
        self.closed = False
        self.eof = False
        self.protocol: Any = None

    def get_extra_info(self, name: str, default: object = None) -> object:
        return self.peer if name == "peername" else default

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def write(self, data: bytes) -> None:
        assert not self.eof, "write after write_eof"
        self.written.append(bytes(data))

    def writelines(self, pieces: list[bytes]) -> None:
        for piece in pieces:
            self.write(piece)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.eof = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def set_protocol(self, protocol: Any) -> None:
        self.protocol = protocol

    def data(self) -> bytes:
        return b"".join(self.written)


@dataclass
class Parsed:
    method: bytes = b""
    target: bytes = b""
    body: bytes = b""
    complete: bool = False
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)


class _Collector:
    """llhttp protocol recording whole requests (the upstream's view)."""

    def __init__(self) -> None:
        self.requests: list[Parsed] = []
        self.current: Parsed | None = None
        self.parser = httptools.HttpRequestParser(self)

    def on_message_begin(self) -> None:
        self.current = Parsed()
        self.requests.append(self.current)

    def on_url(self, url: bytes) -> None:
        assert self.current is not None
        self.current.target += url

    def on_header(self, name: bytes, value: bytes) -> None:
        assert self.current is not None
        self.current.headers.append((name, value))

    def on_headers_complete(self) -> None:
        assert self.current is not None
        self.current.method = self.parser.get_method()

    def on_body(self, body: bytes) -> None:
        assert self.current is not None
        self.current.body += body

    def on_message_complete(self) -> None:
        assert self.current is not None
        self.current.complete = True


class _RecordingClient(ClientConnection):
    """The gateway's client side, recording what its readers delivered per request (both the plain
    reader and llhttp hand their heads to ``_request`` and their ends to ``_message_done``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.parsed: list[Parsed] = []

    def _request(self, method: bytes, *args: Any) -> None:
        rec = Parsed(method=method)
        self.parsed.append(rec)
        try:
            super()._request(method, *args)
        finally:
            ex = self._parsing if self._parsing is not None and self._parsing in self.queue else None
            # What the gateway forwards: the normalized target (None when it answered itself).
            if ex is not None and self.parsed and self.parsed[-1] is rec:
                rec.target = ex.target

    def on_body(self, body: bytes) -> None:
        if self.parsed:
            self.parsed[-1].body += body
        super().on_body(body)

    def _message_done(self) -> None:
        if self.parsed:
            self.parsed[-1].complete = True
        super()._message_done()


def _snapshot(upstream_port: int = 19001) -> Snapshot:
    return Snapshot(
        schema=SCHEMA,
        generation=1,
        listeners=(
            Listener(
                port=PORT,
                protocol="HTTP",
                names=("ns/gw/http",),
                vhosts=(
                    VirtualHost(
                        hostname="*",
                        rules=(
                            Rule(
                                name="httproute/ns/limited/rule/0/match/0",
                                path=PathMatch(type="PathPrefix", value="/limited"),
                                backends=(BackendRef(weight=1, backend="ns/up:80"),),
                                max_body_size=64,
                            ),
                            Rule(
                                name="httproute/ns/r/rule/0/match/0",
                                path=PathMatch(type="PathPrefix", value="/"),
                                backends=(BackendRef(weight=1, backend="ns/up:80"),),
                            ),
                        ),
                    ),
                ),
            ),
        ),
        backends={"ns/up:80": Backend(name="ns/up:80", endpoints=(Endpoint(host="127.0.0.1", port=upstream_port),))},
    )


class MemoryProxy:
    def __init__(self, upstream_connections: int = 64, auto_answer: bool = True, **settings: Any) -> None:
        self.auto_answer = auto_answer
        self.servers: list[asyncio.AbstractServer] = []
        self.loop = asyncio.new_event_loop()
        self.ctx = Context(self.loop, Settings(config_path="", access_log=False, **settings), 0)
        self.ctx.apply(_snapshot())
        self.pool = next(iter(self.ctx.pools.values()))
        self.upstreams: list[tuple[UpstreamConnection, MemoryTransport, _Collector]] = []
        for i in range(upstream_connections):
            conn = UpstreamConnection(self.pool)
            transport = MemoryTransport(("127.0.0.1", 19001 + i))
            conn.connection_made(transport)  # type: ignore[arg-type]
            self.upstreams.append((conn, transport, _Collector()))
        # The pool hands out the last idle connection first: reversed, so they go in order.
        self.pool.idle.extend(conn for conn, _, _ in reversed(self.upstreams))
        self.client = _RecordingClient(self.ctx, PORT)
        self.client_t = MemoryTransport()
        self.client.connection_made(self.client_t)  # type: ignore[arg-type]
        self._seen = [0] * upstream_connections
        self._answered = [0] * upstream_connections

    def close(self) -> None:
        for server in self.servers:
            server.close()
            self.loop.run_until_complete(server.wait_closed())
        self.loop.close()

    def feed(self, data: bytes) -> None:
        if not self.client_t.closed:
            self.client.data_received(data)
        self.answer()

    def _collect(self, i: int) -> _Collector:
        _conn, transport, collector = self.upstreams[i]
        data = transport.data()
        if len(data) > self._seen[i]:
            try:
                collector.parser.feed_data(data[self._seen[i] :])
            except httptools.HttpParserUpgrade:
                pass
            self._seen[i] = len(data)
        return collector

    def answer(self) -> None:
        """Answer every upstream connection that holds a complete, unanswered request."""
        progress = self.auto_answer
        while progress:
            progress = False
            for i, (conn, _transport, collector) in enumerate(self.upstreams):
                self._collect(i)
                complete = sum(1 for r in collector.requests if r.complete)
                if conn.exchange is not None and complete > self._answered[i]:
                    self._answered[i] += 1
                    conn.data_received(RESPONSE)
                    progress = True

    # -- playing the upstreams by hand (auto_answer=False) --------------------------------

    def received(self, i: int) -> list[Parsed]:
        """The requests upstream connection ``i`` has received so far."""
        return self._collect(i).requests

    def respond(self, i: int, data: bytes) -> None:
        """Upstream connection ``i`` sends ``data`` (a read of the gateway's)."""
        self._collect(i)
        self.upstreams[i][0].data_received(data)

    def lose(self, i: int, exc: Exception | None = None) -> None:
        """Upstream connection ``i`` is gone (the server closed it, or a reset)."""
        self._collect(i)
        transport = self.upstreams[i][1]
        transport.closed = True
        self.upstreams[i][0].connection_lost(exc)

    def listen(self, response: bytes) -> None:
        """A real loopback upstream answering every request head with ``response``; the pool opens
        its new connections there (the in-memory ones stay what they are)."""

        class Answer(asyncio.Protocol):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                self.transport = transport
                self.buffer = b""

            def data_received(self, data: bytes) -> None:
                self.buffer += data
                if b"\r\n\r\n" in self.buffer:
                    self.buffer = b""
                    self.transport.write(response)  # type: ignore[attr-defined]

        server = self.loop.run_until_complete(self.loop.create_server(Answer, "127.0.0.1", 0))
        self.servers.append(server)
        port = server.sockets[0].getsockname()[1]
        self.pool.port = port
        self.pool.address = f"127.0.0.1:{port}"

    def run_until(self, done: Any, timeout: float = 5.0) -> None:
        """Runs the loop (real connections, timers) until ``done()`` is true."""

        async def wait() -> None:
            while not done():
                await asyncio.sleep(0.005)

        self.loop.run_until_complete(asyncio.wait_for(wait(), timeout))

    @property
    def parsed(self) -> list[Parsed]:
        return self.client.parsed

    @property
    def forwarded(self) -> list[Parsed]:
        return [r for _, _, collector in self.upstreams for r in collector.requests]

    def client_output(self) -> bytes:
        return self.client_t.data()


def check_framing(proxy: MemoryProxy) -> None:
    """The fuzz invariant: see the module docstring. Raises AssertionError with the evidence."""
    forwarded_by_conn = [collector.requests for _, _, collector in proxy.upstreams]
    for (_, transport, _), requests in zip(proxy.upstreams, forwarded_by_conn, strict=True):
        for req in requests[:-1]:
            assert req.complete, f"an incomplete request was followed by another on one connection: {requests}"
        if requests and not requests[-1].complete:
            # Only the last request on a connection may be cut short, and only by a reset.
            assert transport.closed, f"upstream connection left open with a partial request: {requests[-1]}"
        for req in requests:
            framing = [n.lower() for n, _ in req.headers if n.lower() in (b"content-length", b"transfer-encoding")]
            assert len(framing) <= 1, f"two framing headers upstream: {req.headers}"
            hosts = [v for n, v in req.headers if n.lower() == b"host"]
            assert len(hosts) <= 1, f"several Host headers upstream: {req.headers}"
    complete_forwarded = [r for r in proxy.forwarded if r.complete]
    parsed = [p for p in proxy.parsed if p.complete and p.target]
    for sent in complete_forwarded:
        match = [p for p in parsed if (p.method, p.target, p.body) == (sent.method, sent.target, sent.body)]
        assert match, (
            f"the upstream got a request the gateway never parsed: {sent.method!r} {sent.target!r} "
            f"body {sent.body[:80]!r}; parsed: {[(p.method, p.target, p.body[:40]) for p in parsed]}"
        )
