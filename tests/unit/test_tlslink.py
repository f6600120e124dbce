"""TLSLink over real loopback sockets on uvloop: a server link against asyncio's own TLS client,
and a client link against a raw TCP peer that does its TLS in memory and counts records.

Run with the compiled link and record layer, and (FSMFAST_NO_EXTENSIONS=1) with both twins.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import struct
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import uvloop

from fsmfast.tls.link import TLSLink
from tests.support.pki import Pki, blog_pki

TLS_RECORD = 16384  # the most plaintext in one record (a C constant of the compiled link)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return blog_pki(tmp_path_factory.mktemp("tlslink"))


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    lp = uvloop.new_event_loop()
    yield lp
    lp.close()


def server_ctx(pki: Pki) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(pki.server_cert, pki.server_key)
    return ctx


def client_ctx(pki: Pki | None) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if pki is not None:
        ctx.load_verify_locations(pki.ca_cert)
    return ctx


class App:
    """An app protocol that records what the link tells it."""

    def __init__(self, echo: bool = False) -> None:
        self.events: list[Any] = []
        self.data = b""
        self.transport: Any = None
        self.echo = echo
        self.lost: asyncio.Future[BaseException | None] | None = None
        self.peer: Any = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.peer = transport.get_extra_info("peername")
        self.events.append("made")
        self.lost = asyncio.get_event_loop().create_future()

    def data_received(self, data: bytes) -> None:
        self.data += data
        if self.echo and self.data.endswith(b"\n"):
            line, self.data = self.data, b""
            if line == b"big\n":
                # A head and a 1 MiB body: sealed piece by piece, not copied into one buffer.
                self.transport.writelines([b"head\n", bytes(range(256)) * 4096])
            elif line == b"bye\n":
                self.transport.write(b"bye!\n")
                self.transport.close()
            else:
                self.transport.writelines([b"you said: ", line])

    def eof_received(self) -> bool:
        self.events.append("eof")
        return False

    def connection_lost(self, exc: BaseException | None) -> None:
        self.events.append(("lost", exc))
        if self.lost is not None and not self.lost.done():
            self.lost.set_result(exc)

    def pause_writing(self) -> None:
        self.events.append("pause")

    def resume_writing(self) -> None:
        self.events.append("resume")


def start_server(loop: asyncio.AbstractEventLoop, ctx: ssl.SSLContext, apps: list[App], timeout: float = 5.0) -> int:
    def factory() -> TLSLink:
        app = App(echo=True)
        apps.append(app)

        def open_bios(_t: asyncio.BaseTransport) -> tuple[ssl.SSLObject, ssl.MemoryBIO, ssl.MemoryBIO]:
            incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
            return ctx.wrap_bio(incoming, outgoing, server_side=True), incoming, outgoing

        return TLSLink(loop, app, open_bios, timeout)

    server = loop.run_until_complete(loop.create_server(factory, "127.0.0.1", 0))
    return int(server.sockets[0].getsockname()[1])


def test_server_link_against_asyncio_client(loop: asyncio.AbstractEventLoop, pki: Pki) -> None:
    apps: list[App] = []
    port = start_server(loop, server_ctx(pki), apps)

    async def client() -> tuple[bytes, bytes, bytes, str]:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=client_ctx(pki), server_hostname="foo.example.com"
        )
        writer.write(b"hello\n")
        said = await reader.readexactly(len(b"you said: hello\n"))
        writer.write(b"big\n")
        big = await reader.readexactly(5 + 1024 * 1024)
        writer.write(b"bye\n")
        bye = await reader.read()  # the link's close_notify ends the stream cleanly
        version = writer.get_extra_info("ssl_object").version()
        writer.close()
        return said, big, bye, version

    said, big, bye, version = loop.run_until_complete(asyncio.wait_for(client(), 10))
    assert said == b"you said: hello\n"
    assert big == b"head\n" + bytes(range(256)) * 4096
    assert bye == b"bye!\n"
    assert version == "TLSv1.3"
    app = apps[0]
    loop.run_until_complete(asyncio.wait_for(app.lost, 5))  # type: ignore[arg-type]
    assert app.events[0] == "made" and app.events[-1] == ("lost", None)
    assert app.transport.get_extra_info("ssl_object").version() == "TLSv1.3"
    assert app.peer[0] == "127.0.0.1"
    assert app.transport.can_write_eof() is False


def test_peer_close_notify_is_end_of_stream(loop: asyncio.AbstractEventLoop, pki: Pki) -> None:
    apps: list[App] = []
    port = start_server(loop, server_ctx(pki), apps)

    async def client() -> None:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=client_ctx(pki), server_hostname="foo.example.com"
        )
        writer.write(b"x\n")
        await reader.readexactly(len(b"you said: x\n"))
        writer.close()  # close_notify, then FIN
        await writer.wait_closed()

    loop.run_until_complete(asyncio.wait_for(client(), 10))
    app = apps[0]
    loop.run_until_complete(asyncio.wait_for(app.lost, 5))  # type: ignore[arg-type]
    assert app.events == ["made", "eof", ("lost", None)]


def test_silent_client_times_out_without_reaching_the_app(loop: asyncio.AbstractEventLoop, pki: Pki) -> None:
    apps: list[App] = []
    port = start_server(loop, server_ctx(pki), apps, timeout=0.3)

    async def client() -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        got = await asyncio.wait_for(reader.read(), 5)  # no ClientHello: the link gives up
        writer.close()
        return got

    assert loop.run_until_complete(client()) == b""
    assert apps[0].events == []  # the app never heard of it


def test_refused_handshake_sends_its_alert(loop: asyncio.AbstractEventLoop, pki: Pki) -> None:
    """The server requires a client certificate: the client hears why, not a bare EOF."""
    ctx = server_ctx(pki)
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(pki.ca_cert)
    apps: list[App] = []
    port = start_server(loop, ctx, apps)

    async def client() -> None:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=client_ctx(pki), server_hostname="foo.example.com"
        )
        writer.write(b"x\n")
        await reader.read(100)

    with pytest.raises(ssl.SSLError, match=r"CERTIFICATE_REQUIRED|certificate required"):
        loop.run_until_complete(asyncio.wait_for(client(), 10))
    assert apps[0].events == []


class RawPeer:
    """A TCP server on 127.0.0.1 (a thread) doing server-side TLS in memory over the raw bytes,
    so a test sees the records a client link sends."""

    def __init__(self, pki: Pki, tamper: bool = False) -> None:
        self.ctx = server_ctx(pki)
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.tamper = tamper
        self.records: list[tuple[int, int]] = []  # (content type, length) of what came after the handshake
        self.plain = b""
        # Set once its handshake is over: a test writes after that, so records never share a
        # read with the client's Finished (they would be counted as handshake bytes).
        self.handshaken = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        conn, _ = self.sock.accept()
        conn.settimeout(10)
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        obj = self.ctx.wrap_bio(incoming, outgoing, server_side=True)
        buf = b""
        done = False
        with conn:
            while True:  # a refused handshake ends with its alert and EOF, or an SSLError below
                try:
                    data = conn.recv(65536)
                except OSError:  # reset: the link aborted after a tampered record
                    return
                if not data:
                    return
                if done:
                    buf += data
                    while len(buf) >= 5:
                        kind, length = buf[0], struct.unpack("!H", buf[3:5])[0]
                        if len(buf) < 5 + length:
                            break
                        self.records.append((kind, length))
                        buf = buf[5 + length :]
                    incoming.write(data)
                    try:
                        self.plain += obj.read(1 << 20)
                    except ssl.SSLWantReadError:
                        pass
                    if self.plain.endswith(b"\n"):
                        reply = obj.write(b"ok\n") and outgoing.read()
                        if self.tamper:
                            reply = reply[:-1] + bytes([reply[-1] ^ 1])
                        conn.sendall(reply)
                    continue
                incoming.write(data)
                try:
                    obj.do_handshake()
                    done = True
                except ssl.SSLWantReadError:
                    pass
                except ssl.SSLError:  # the client refused us (unknown ca): what the test expects
                    return
                conn.sendall(outgoing.read())
                if done:
                    self.handshaken.set()


def connect_link(loop: asyncio.AbstractEventLoop, pki: Pki | None, port: int) -> tuple[TLSLink, App]:
    ctx = client_ctx(pki)
    app = App()
    ready: asyncio.Future[None] = loop.create_future()

    def open_bios(_t: asyncio.BaseTransport) -> tuple[ssl.SSLObject, ssl.MemoryBIO, ssl.MemoryBIO]:
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        return ctx.wrap_bio(incoming, outgoing, server_hostname="foo.example.com"), incoming, outgoing

    async def run() -> TLSLink:
        _raw, link = await loop.create_connection(lambda: TLSLink(loop, app, open_bios, 5.0, ready), "127.0.0.1", port)
        await ready
        return link

    return loop.run_until_complete(asyncio.wait_for(run(), 10)), app


def test_small_pieces_leave_as_one_record(loop: asyncio.AbstractEventLoop, pki: Pki) -> None:
    peer = RawPeer(pki)
    link, app = connect_link(loop, pki, peer.port)
    assert app.events == ["made"]
    assert peer.handshaken.wait(5)
    link.writelines([b"GET / HTTP/1.1\r\n", b"Host: foo.example.com\r\n", b"\r\n", b"x" * (TLS_RECORD - 200), b"\n"])
    loop.run_until_complete(asyncio.wait_for(_until(lambda: app.data == b"ok\n"), 5))
    assert [kind for kind, _ in peer.records] == [23], peer.records  # one application_data record
    assert peer.plain.startswith(b"GET / HTTP/1.1\r\nHost: foo.example.com\r\n\r\nxxx")
    link.close()
    loop.run_until_complete(asyncio.wait_for(app.lost, 5))  # type: ignore[arg-type]


def test_tampered_record_ends_the_link_with_the_error(loop: asyncio.AbstractEventLoop, pki: Pki) -> None:
    peer = RawPeer(pki, tamper=True)
    link, app = connect_link(loop, pki, peer.port)
    assert peer.handshaken.wait(5)
    link.write(b"hi\n")
    exc = loop.run_until_complete(asyncio.wait_for(app.lost, 5))  # type: ignore[arg-type]
    assert isinstance(exc, ssl.SSLError) and "TLS read failed" in str(exc)
    assert app.data == b""
    assert link.is_closing()


def test_untrusted_server_fails_the_handshake(loop: asyncio.AbstractEventLoop, pki: Pki) -> None:
    peer = RawPeer(pki)
    with pytest.raises(ssl.SSLCertVerificationError, match="certificate verify failed"):
        connect_link(loop, None, peer.port)
    peer.thread.join(5)
    assert not peer.handshaken.is_set()


async def _until(predicate: Any) -> None:
    while not predicate():
        await asyncio.sleep(0.01)
