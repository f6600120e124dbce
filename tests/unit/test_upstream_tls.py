"""Upstream TLS contexts against real TLS servers on loopback, with the blog's certificates.

These pin the deliberate differences from FSM v1.2: trust is per policy (never a pooled
store), SNI is sent only when a name is configured, and the hostname is then verified.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvloop

from fsmfast.snapshot import SubjectAltName, UpstreamTLS
from fsmfast.tls import upstream as tlsmod
from tests.support.pki import Pki, blog_pki, client_cert, other_ca, san_pki


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Pki]:
    d = tmp_path_factory.mktemp("tls")
    blog = blog_pki(d / "blog")
    return {"blog": blog, "san": san_pki(d / "san", blog), "other": other_ca(d / "other")}


class TLSServer:
    """A TLS server on 127.0.0.1 recording the SNI of each handshake; answers one byte per connection."""

    def __init__(self, cert: Path, key: Path, client_ca: Path | None = None) -> None:
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(cert, key)
        if client_ca is not None:
            self.ctx.verify_mode = ssl.CERT_REQUIRED
            self.ctx.load_verify_locations(client_ca)
        self.sni: list[str | None] = []
        self.ctx.sni_callback = lambda _obj, name, _ctx: self.sni.append(name)  # type: ignore[assignment,misc]
        self.port = 0
        self.server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                await reader.read(1)
                writer.write(b"!")
                await writer.drain()
            except (ConnectionError, ssl.SSLError):
                pass
            finally:
                writer.close()

        self.server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=self.ctx)
        self.port = self.server.sockets[0].getsockname()[1]


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    lp = uvloop.new_event_loop()
    yield lp
    lp.close()


def exchange(
    loop: asyncio.AbstractEventLoop, server: TLSServer, policy: UpstreamTLS, ctx: ssl.SSLContext | None = None
) -> tuple[ssl.SSLObject | None, str | None, bytes]:
    """Handshake like the pool does, then one byte each way: (ssl_object, error, bytes read)."""
    sslctx = ctx or tlsmod.client_context(policy)

    async def run() -> tuple[ssl.SSLObject | None, str | None, bytes]:
        try:
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", server.port, ssl=sslctx, server_hostname=policy.server_name or ""
            )
        except (ssl.SSLError, OSError) as exc:
            return None, tlsmod.describe_error(exc), b""
        obj = writer.get_extra_info("ssl_object")
        writer.write(b"?")
        try:
            data = await reader.read(1)  # a TLS 1.3 ticket arrives with application data
        except (ssl.SSLError, OSError) as exc:
            return obj, tlsmod.describe_error(exc), b""
        writer.close()
        return obj, None, data

    return loop.run_until_complete(run())


def connect(
    loop: asyncio.AbstractEventLoop, server: TLSServer, policy: UpstreamTLS, ctx: ssl.SSLContext | None = None
) -> tuple[ssl.SSLObject | None, str | None]:
    obj, err, data = exchange(loop, server, policy, ctx)
    if err is None:
        assert data == b"!"
    return obj, err


def serve(loop: asyncio.AbstractEventLoop, pki: Pki, client_ca: Path | None = None) -> TLSServer:
    server = TLSServer(pki.server_cert, pki.server_key, client_ca)
    loop.run_until_complete(server.start())
    return server


def ca(pki: Pki) -> str:
    return pki.ca_cert.read_text()


def test_blog_ca_verifies_chain_without_sni(loop, certs) -> None:
    server = serve(loop, certs["blog"])
    obj, err = connect(loop, server, UpstreamTLS(policy="UpstreamTLSPolicy httpbin/p", ca_pem=ca(certs["blog"])))
    assert err is None and obj is not None
    assert server.sni == [None]  # no name configured: no SNI, as a CN-only cert behind an IP needs


def test_wrong_ca_fails_with_openssls_reason(loop, certs) -> None:
    server = serve(loop, certs["blog"])
    _, err = connect(loop, server, UpstreamTLS(policy="p", ca_pem=ca(certs["other"])))
    assert err == "certificate verify failed: unable to get local issuer certificate"


def test_trust_is_per_policy_not_pooled(loop, certs) -> None:
    # A context built for one service never trusts another service's CA, even in one worker.
    blog_ctx = tlsmod.client_context(UpstreamTLS(policy="a", ca_pem=ca(certs["blog"])))
    other_ctx = tlsmod.client_context(UpstreamTLS(policy="b", ca_pem=ca(certs["other"])))
    server = serve(loop, certs["blog"])
    assert connect(loop, server, UpstreamTLS(policy="a"), blog_ctx)[1] is None
    assert "certificate verify failed" in (connect(loop, server, UpstreamTLS(policy="b"), other_ctx)[1] or "")


def test_hostname_is_sent_as_sni_and_checked(loop, certs) -> None:
    server = serve(loop, certs["san"])
    policy = UpstreamTLS(policy="BackendTLSPolicy httpbin/b", ca_pem=ca(certs["san"]), server_name="foo.example.com")
    obj, err = connect(loop, server, policy)
    assert err is None and obj is not None
    assert server.sni == ["foo.example.com"]
    wrong = UpstreamTLS(policy="BackendTLSPolicy httpbin/b", ca_pem=ca(certs["san"]), server_name="bar.example.com")
    _, err = connect(loop, server, wrong)
    assert err is not None and err.startswith("certificate verify failed: Hostname mismatch")
    assert "bar.example.com" in err


def test_subject_alt_names_replace_the_hostname_check(loop, certs) -> None:
    server = serve(loop, certs["san"])
    policy = UpstreamTLS(
        policy="b",
        ca_pem=ca(certs["san"]),
        server_name="sni-only.example.com",
        subject_alt_names=(SubjectAltName(type="Hostname", value="foo.example.com"),),
    )
    obj, err = connect(loop, server, policy)
    assert err is None and obj is not None
    assert server.sni == ["sni-only.example.com"]
    assert tlsmod.check_subject_alt_names(policy, obj) is None
    other = UpstreamTLS(
        policy="b", ca_pem=ca(certs["san"]), subject_alt_names=(SubjectAltName(type="Hostname", value="x.example.com"),)
    )
    assert (
        tlsmod.check_subject_alt_names(other, obj) == "certificate subjectAltName does not match any of: x.example.com"
    )


def test_client_certificate_for_mtls(loop, certs, tmp_path: Path) -> None:
    blog = certs["blog"]
    cert, key = client_cert(tmp_path, blog)
    server = serve(loop, blog, client_ca=blog.ca_cert)
    with_cert = UpstreamTLS(
        policy="p", ca_pem=ca(blog), client_cert_pem=cert.read_text(), client_key_pem=key.read_text()
    )
    assert connect(loop, server, with_cert)[1] is None
    _, err, data = exchange(loop, server, UpstreamTLS(policy="p", ca_pem=ca(blog)))
    # TLS 1.3 reports a missing client certificate after the handshake, as an alert on the
    # first read: either way the server never answers.
    assert data == b""
    assert err is None or "certificate" in err


def test_session_resumed_on_next_connection(loop, certs) -> None:
    server = serve(loop, certs["blog"])
    ctx = tlsmod.client_context(UpstreamTLS(policy="p", ca_pem=ca(certs["blog"])))
    first, err = connect(loop, server, UpstreamTLS(policy="p"), ctx)
    assert err is None and first is not None and not first.session_reused
    ctx.session_to_resume = first.session
    second, err = connect(loop, server, UpstreamTLS(policy="p"), ctx)
    assert err is None and second is not None and second.session_reused


def test_loop_gets_the_c_methods_and_data_still_flows(loop, certs) -> None:
    # direct_io: the SSLObject's read/write/pending are the C object's (no Python frame per call in
    # uvloop's SSL protocol), and a real exchange over them still works both ways.
    server = serve(loop, certs["blog"])
    obj, err = connect(loop, server, UpstreamTLS(policy="p", ca_pem=ca(certs["blog"])))
    assert err is None and obj is not None
    inner = obj._sslobj  # type: ignore[attr-defined]
    for name in ("read", "write", "pending"):
        method = getattr(obj, name)
        assert method.__self__ is inner and type(method).__name__ == "builtin_function_or_method", name


def test_listener_objects_get_the_c_methods_too() -> None:
    from fsmfast.tls.listener import Dispatcher

    obj = Dispatcher(ssl.PROTOCOL_TLS_SERVER).wrap_bio(ssl.MemoryBIO(), ssl.MemoryBIO(), server_side=True)
    inner = obj._sslobj  # type: ignore[attr-defined]
    assert [getattr(obj, n).__self__ is inner for n in ("read", "write", "pending")] == [True, True, True]
    assert obj.pending() == 0
    with pytest.raises(ssl.SSLWantReadError):  # no ClientHello yet: the C read behaves as the wrapper did
        obj.read(1024)


def test_describe_error_strips_python_decoration() -> None:
    exc = ssl.SSLError(1, "[SSL: WRONG_VERSION_NUMBER] wrong version number (_ssl.c:1006)")
    exc.reason = "WRONG_VERSION_NUMBER"  # type: ignore[misc]
    assert tlsmod.describe_error(exc) == "wrong version number"
