"""Failed TLS handshakes of a listener: the link reports each once (``TLSLink(failed=...)``), and
fsmfast.tls.listener.failure_reason names why with one of the metric's few reasons.

Real loopback sockets on uvloop, a server link as a listener makes it; run with the compiled link
and (FSMFAST_NO_EXTENSIONS=1) its twin.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import threading
from collections.abc import Iterator

import pytest
import uvloop

from fsmfast.metrics.blob import TLS_FAILURES
from fsmfast.tls.link import TLSLink
from fsmfast.tls.listener import failure_reason
from tests.support.pki import Pki, blog_pki


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return blog_pki(tmp_path_factory.mktemp("metrics-tls"))


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    lp = uvloop.new_event_loop()
    yield lp
    lp.close()


class App:
    def __init__(self) -> None:
        self.made = False

    def connection_made(self, transport: object) -> None:
        self.made = True

    def data_received(self, data: bytes) -> None:
        pass

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: BaseException | None) -> None:
        pass


class Server:
    """A listener's links: what each reported as its failure (a reason per failed handshake)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, pki: Pki, timeout: float, client_ca: bool = False) -> None:
        self.failures: list[str] = []
        self.apps: list[App] = []
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(pki.server_cert, pki.server_key)
        if client_ca:
            ctx.verify_mode = ssl.CERT_REQUIRED
            ctx.load_verify_locations(pki.ca_cert)

        def factory() -> TLSLink:
            app = App()
            self.apps.append(app)

            def open_bios(_t: asyncio.BaseTransport) -> tuple[ssl.SSLObject, ssl.MemoryBIO, ssl.MemoryBIO]:
                incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
                return ctx.wrap_bio(incoming, outgoing, server_side=True), incoming, outgoing

            return TLSLink(loop, app, open_bios, timeout, failed=lambda exc: self.failures.append(failure_reason(exc)))

        server = loop.run_until_complete(loop.create_server(factory, "127.0.0.1", 0))
        self.port = int(server.sockets[0].getsockname()[1])
        self.loop = loop

    def wait(self, n: int) -> list[str]:
        async def settle() -> None:
            for _ in range(400):
                if len(self.failures) >= n:
                    break
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.1)  # and nothing more comes

        self.loop.run_until_complete(settle())
        return self.failures


def _client_ctx(pki: Pki | None) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if pki is not None:
        ctx.load_verify_locations(pki.ca_cert)
    return ctx


async def _handshake(port: int, ctx: ssl.SSLContext) -> None:
    _r, w = await asyncio.open_connection("127.0.0.1", port, ssl=ctx, server_hostname="foo.example.com")
    w.close()


def test_plain_http_on_a_tls_port_is_not_tls(loop: asyncio.AbstractEventLoop, pki: Pki) -> None:
    server = Server(loop, pki, 5.0)

    async def plain() -> None:
        r, w = await asyncio.open_connection("127.0.0.1", server.port)
        w.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        await r.read()
        w.close()

    loop.run_until_complete(asyncio.wait_for(plain(), 5))
    assert server.wait(1) == ["not_tls"]


def test_a_client_that_distrusts_our_certificate_fails_with_a_protocol_alert(
    loop: asyncio.AbstractEventLoop, pki: Pki
) -> None:
    server = Server(loop, pki, 5.0)
    refused: list[BaseException] = []

    def client() -> None:
        # A blocking client, in a thread: it sends its "unknown ca" alert before it closes (asyncio's
        # closes without a word, which the server can only read as a hang-up).
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
            try:
                _client_ctx(None).wrap_socket(sock, server_hostname="foo.example.com")
            except ssl.SSLError as exc:
                refused.append(exc)

    thread = threading.Thread(target=client)
    thread.start()
    try:
        assert server.wait(1) == ["protocol"]
    finally:
        thread.join(5)
    assert isinstance(refused[0], ssl.SSLCertVerificationError)


def test_a_missing_client_certificate(loop: asyncio.AbstractEventLoop, pki: Pki) -> None:
    server = Server(loop, pki, 5.0, client_ca=True)

    async def go() -> None:
        try:
            r, w = await asyncio.open_connection(
                "127.0.0.1", server.port, ssl=_client_ctx(pki), server_hostname="foo.example.com"
            )
            await r.read()  # TLS 1.3: the refusal arrives after the client's side of the handshake
            w.close()
        except (ssl.SSLError, ConnectionError):
            pass

    loop.run_until_complete(asyncio.wait_for(go(), 5))
    assert server.wait(1) == ["client_certificate"]


def test_a_silent_client_times_out_and_one_that_hangs_up_is_closed(loop: asyncio.AbstractEventLoop, pki: Pki) -> None:
    server = Server(loop, pki, 0.2)
    silent = socket.create_connection(("127.0.0.1", server.port))
    try:
        assert server.wait(1) == ["timeout"]
    finally:
        silent.close()
    hangs_up = socket.create_connection(("127.0.0.1", server.port))
    hangs_up.sendall(b"\x16\x03\x01")  # the start of a ClientHello record, then nothing more
    hangs_up.close()
    assert server.wait(2) == ["timeout", "closed"]


def test_a_successful_handshake_reports_nothing(loop: asyncio.AbstractEventLoop, pki: Pki) -> None:
    server = Server(loop, pki, 5.0)
    loop.run_until_complete(asyncio.wait_for(_handshake(server.port, _client_ctx(pki)), 5))
    assert server.wait(0) == []
    assert server.apps[0].made


def test_failure_reasons_are_the_metrics_few() -> None:
    cases: list[BaseException] = [
        TimeoutError("slow"),
        ConnectionResetError("reset"),
        ConnectionAbortedError("closed during the TLS handshake"),
        ssl.SSLEOFError(8, "EOF"),
        ValueError("anything else"),
    ]
    assert [failure_reason(exc) for exc in cases] == ["timeout", "closed", "closed", "closed", "other"]
    assert {failure_reason(exc) for exc in cases} <= set(TLS_FAILURES)
