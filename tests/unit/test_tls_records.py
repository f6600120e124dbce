"""The TLS record layer, compiled (OpenSSL called directly) and its pure-Python twin.

Both run over real handshakes between two SSLObjects in memory (the blog's CA and server
certificate, TLS 1.2 and 1.3) and must agree: what one seals the other opens, byte for byte,
across record boundaries and partial records; a close_notify, a tampered record and OpenSSL's
own post-handshake messages are handled the same.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from fsmfast.tls import records as twin
from fsmfast.tls.link import direct_unavailable
from tests.support.pki import Pki, blog_pki, client_cert

try:
    from fsmfast.tls import _records as compiled
except ImportError:  # pragma: no cover - the suite builds it (make inplace)
    compiled = None

IMPLS = ["twin", "compiled"]


def _impl(name: str) -> Callable[..., Any]:
    if name == "twin":
        return twin.Records  # type: ignore[no-any-return]
    if compiled is None or compiled.UNAVAILABLE is not None:
        pytest.fail(f"the compiled record layer must work here: {direct_unavailable()}")
    return compiled.Records  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return blog_pki(tmp_path_factory.mktemp("records"))


class Pair:
    """A client and a server SSLObject in memory, handshaken, each with its Records."""

    def __init__(
        self, pki: Pki, impl: Callable[..., Any], version: ssl.TLSVersion, client: tuple[Path, Path] | None = None
    ) -> None:
        server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        server_ctx.load_cert_chain(pki.server_cert, pki.server_key)
        server_ctx.maximum_version = version
        client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        client_ctx.load_verify_locations(Path(pki.ca_cert))
        client_ctx.maximum_version = version
        if client is not None:
            # TLS 1.3 post-handshake authentication: the server may ask for the certificate later.
            client_ctx.load_cert_chain(*client)
            client_ctx.post_handshake_auth = True
            server_ctx.post_handshake_auth = True
            server_ctx.verify_mode = ssl.CERT_REQUIRED
            server_ctx.load_verify_locations(Path(pki.ca_cert))
        self.bios = [ssl.MemoryBIO() for _ in range(4)]
        c_in, c_out, s_in, s_out = self.bios
        self.client = client_ctx.wrap_bio(c_in, c_out, server_hostname="foo.example.com")
        self.server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
        done = [False, False]
        for _ in range(10):
            for i, (obj, out, peer_in) in enumerate(((self.client, c_out, s_in), (self.server, s_out, c_in))):
                if not done[i]:
                    try:
                        obj.do_handshake()
                        done[i] = True
                    except ssl.SSLWantReadError:
                        pass
                peer_in.write(out.read())
            if all(done):
                break
        assert all(done), "handshake did not finish"
        self.c = impl(self.client, c_in, c_out)
        self.s = impl(self.server, s_in, s_out)


@pytest.fixture(params=[ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3], ids=["tls1.2", "tls1.3"])
def version(request: pytest.FixtureRequest) -> ssl.TLSVersion:
    return request.param  # type: ignore[no-any-return]


@pytest.mark.parametrize("impl", IMPLS)
def test_round_trip_small_and_large(pki: Pki, impl: str, version: ssl.TLSVersion) -> None:
    pair = Pair(pki, _impl(impl), version)
    # The client opens what the server queued after the handshake (TLS 1.3 tickets): no plaintext.
    assert pair.c.unseal(pair.s.outgoing()) == b""
    request = b"GET / HTTP/1.1\r\nHost: foo.example.com\r\n\r\n"
    wire = pair.c.seal(request)
    assert wire and request not in wire
    assert pair.s.unseal(wire) == request
    # 1 MiB: many records, more than one read buffer of plaintext, in one unseal.
    body = bytes(range(256)) * 4096
    wire = pair.s.seal(body)
    assert len(wire) > len(body)
    assert pair.c.unseal(wire) == body
    assert not pair.c.closed and not pair.s.closed


@pytest.mark.parametrize("impl", IMPLS)
def test_partial_records_wait_for_the_rest(pki: Pki, impl: str, version: ssl.TLSVersion) -> None:
    pair = Pair(pki, _impl(impl), version)
    pair.c.unseal(pair.s.outgoing())
    wire = pair.c.seal(b"hello") + pair.c.seal(b" world")
    got = [pair.s.unseal(wire[i : i + 7]) for i in range(0, len(wire), 7)]
    assert b"".join(got) == b"hello world"
    assert got[0] == b""  # 7 bytes are not yet a record


@pytest.mark.parametrize("impl", IMPLS)
def test_memoryview_input(pki: Pki, impl: str, version: ssl.TLSVersion) -> None:
    pair = Pair(pki, _impl(impl), version)
    pair.c.unseal(pair.s.outgoing())
    assert pair.s.unseal(memoryview(pair.c.seal(memoryview(b"abc")))) == b"abc"
    assert pair.c.seal(b"") == b""


@pytest.mark.parametrize("impl", IMPLS)
def test_close_notify(pki: Pki, impl: str, version: ssl.TLSVersion) -> None:
    pair = Pair(pki, _impl(impl), version)
    pair.c.unseal(pair.s.outgoing())
    tail = pair.s.seal(b"last") + pair.s.close_notify()
    assert pair.s.close_notify() == b""  # once
    assert pair.c.unseal(tail) == b"last"
    assert pair.c.closed
    # The client's own close_notify goes back and the server sees it.
    assert pair.s.unseal(pair.c.close_notify()) == b""
    assert pair.s.closed


@pytest.mark.parametrize("impl", IMPLS)
def test_tampered_record_is_an_ssl_error(pki: Pki, impl: str, version: ssl.TLSVersion) -> None:
    pair = Pair(pki, _impl(impl), version)
    pair.c.unseal(pair.s.outgoing())
    wire = bytearray(pair.c.seal(b"secret request"))
    wire[-3] ^= 0x55  # inside the authentication tag
    with pytest.raises(ssl.SSLError, match=r"TLS read failed: .*(bad record mac|decryption failed)"):
        pair.s.unseal(bytes(wire))
    # The failure says no more: OpenSSL's error queue is left empty for the next connection.
    other = Pair(pki, _impl(impl), version)
    other.c.unseal(other.s.outgoing())
    assert other.s.unseal(other.c.seal(b"fine")) == b"fine"


@pytest.mark.parametrize("impl", IMPLS)
def test_reading_can_leave_an_answer_to_send(pki: Pki, impl: str, tmp_path: Path) -> None:
    """A TLS 1.3 post-handshake CertificateRequest: opening it makes the client answer with its
    certificate, which ``wants_write`` announces and ``outgoing`` hands over."""
    pair = Pair(pki, _impl(impl), ssl.TLSVersion.TLSv1_3, client=client_cert(tmp_path, pki))
    pair.c.unseal(pair.s.outgoing())
    assert not pair.c.wants_write
    assert pair.server.getpeercert() is None  # not asked yet
    pair.server.verify_client_post_handshake()
    wire = pair.s.seal(b"who are you?")
    assert pair.c.unseal(wire) == b"who are you?"
    assert pair.c.wants_write
    answer = pair.c.outgoing()
    assert answer and not pair.c.wants_write
    assert pair.s.unseal(answer) == b""
    assert dict(x[0] for x in pair.server.getpeercert()["subject"])["commonName"] == "client"


def test_twin_and_compiled_agree_on_the_bytes(pki: Pki, version: ssl.TLSVersion) -> None:
    """Each side's output opened by the other implementation."""
    pair = Pair(pki, _impl("compiled"), version)
    c_in, c_out, _s_in, _s_out = pair.bios
    py_client = twin.Records(pair.client, c_in, c_out)
    pair.c.unseal(pair.s.outgoing())
    for size in (1, 100, 16384, 16385, 70000):
        data = bytes([size % 251]) * size
        assert pair.s.unseal(py_client.seal(data)) == data
        assert py_client.unseal(pair.s.seal(data)) == data


def test_compiled_refuses_what_it_cannot_check(pki: Pki) -> None:
    mod = compiled
    if mod is None:
        pytest.fail("fsmfast.tls._records is not built")
    pair = Pair(pki, twin.Records, ssl.TLSVersion.TLSv1_3)
    c_in, c_out, s_in, _s_out = pair.bios
    with pytest.raises(mod.Unavailable, match="BIOs"):
        mod.Records(pair.client, s_in, c_out)  # not this SSLObject's BIOs
    with pytest.raises(mod.Unavailable, match="MemoryBIOs"):
        mod.Records(object(), c_in, c_out)
