"""The passthrough ClientHello parser on real ClientHellos (made by Python's ssl) and on bad input."""

from __future__ import annotations

import ssl

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fsmfast.tls import clienthello
from fsmfast.tls.clienthello import MAX_HELLO, ClientHelloError, parse


def real_hello(
    server_name: str | None = "foo.example.com",
    alpn: list[str] | None = None,
    version: ssl.TLSVersion | None = None,
) -> bytes:
    """The first flight of a Python TLS client, as it would hit the wire."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if alpn:
        ctx.set_alpn_protocols(alpn)
    if version is not None:
        ctx.maximum_version = version
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_hostname=server_name)
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    return outgoing.read()


def record(payload: bytes, content_type: int = 22, version: bytes = b"\x03\x01") -> bytes:
    return bytes([content_type]) + version + len(payload).to_bytes(2, "big") + payload


def refragment(data: bytes, sizes: list[int]) -> bytes:
    """The same handshake message re-split into records of the given payload sizes (RFC 8446 §5.1)."""
    assert data[0] == 22
    payload = data[5 : 5 + int.from_bytes(data[3:5], "big")]
    out, pos = [], 0
    for size in sizes:
        out.append(record(payload[pos : pos + size]))
        pos += size
    if pos < len(payload):
        out.append(record(payload[pos:]))
    return b"".join(out)


def test_sni_and_alpn_of_a_real_tls13_client_hello() -> None:
    data = real_hello("Foo.Example.COM", alpn=["h2", "http/1.1"])
    hello = parse(data)
    assert hello is not None
    assert hello.server_name == "foo.example.com"
    assert hello.alpn == ("h2", "http/1.1")
    assert hello.length == len(data)


def test_tls12_only_client_hello() -> None:
    hello = parse(real_hello("a.example.com", version=ssl.TLSVersion.TLSv1_2))
    assert hello is not None and hello.server_name == "a.example.com"


def test_no_sni_is_reported_as_none() -> None:
    hello = parse(real_hello(None))
    assert hello is not None and hello.server_name is None


def test_trailing_dot_is_dropped() -> None:
    hello = parse(real_hello("foo.example.com."))
    assert hello is not None and hello.server_name == "foo.example.com"


def test_bytes_after_the_hello_are_not_consumed() -> None:
    data = real_hello()
    hello = parse(data + b"\x17\x03\x03\x00\x01x")
    assert hello is not None and hello.length == len(data)


def test_incremental_feeding_needs_every_byte() -> None:
    data = real_hello()
    for cut in range(len(data)):
        assert parse(data[:cut]) is None, cut
    assert parse(data) is not None


def test_hello_fragmented_over_several_records() -> None:
    data = real_hello()
    split = refragment(data, [1, 3, 50, 7])
    hello = parse(split)
    assert hello is not None and hello.server_name == "foo.example.com"
    assert hello.length == len(split)
    for cut in range(len(split)):
        assert parse(split[:cut]) is None


def test_too_many_fragments_is_an_error() -> None:
    with pytest.raises(ClientHelloError, match="records"):
        parse(refragment(real_hello(), [1] * (clienthello.MAX_RECORDS + 1)))


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"GET / HTTP/1.1\r\nHost: foo\r\n\r\n", "not a TLS handshake record"),
        (b"\x16\x02\x00\x00\x05hello", "record version"),
        (record(b"", version=b"\x03\x03"), "record length 0"),
        (b"\x16\x03\x01\x50\x00", "out of range"),  # 20480 > 2^14
        (record(b"\x02\x00\x00\x00"), "not a ClientHello"),  # a ServerHello
        (record(b"\x01\x00\x00\x01\x03"), "overruns"),  # body shorter than client_version
        (record(b"\x01" + (MAX_HELLO + 1).to_bytes(3, "big")), "larger than"),
    ],
)
def test_garbage_is_refused(data: bytes, message: str) -> None:
    with pytest.raises(ClientHelloError, match=message):
        parse(data)


def _body(extensions: bytes, session_id: bytes = b"", suites: bytes = b"\x13\x01") -> bytes:
    body = b"\x03\x03" + b"\x00" * 32 + bytes([len(session_id)]) + session_id
    body += len(suites).to_bytes(2, "big") + suites + b"\x01\x00"
    body += len(extensions).to_bytes(2, "big") + extensions
    return record(b"\x01" + len(body).to_bytes(3, "big") + body)


def _ext(ext_type: int, data: bytes) -> bytes:
    return ext_type.to_bytes(2, "big") + len(data).to_bytes(2, "big") + data


def _sni(name: bytes) -> bytes:
    entry = b"\x00" + len(name).to_bytes(2, "big") + name
    return _ext(0, len(entry).to_bytes(2, "big") + entry)


def test_hand_built_hello_with_sni() -> None:
    hello = parse(_body(_sni(b"x.example.com")))
    assert hello is not None and hello.server_name == "x.example.com"


def test_hello_without_extensions() -> None:
    body = b"\x03\x03" + b"\x00" * 32 + b"\x00" + b"\x00\x02\x13\x01" + b"\x01\x00"
    hello = parse(record(b"\x01" + len(body).to_bytes(3, "big") + body))
    assert hello is not None and hello.server_name is None


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (_body(_sni(b"a.example.com") + _sni(b"b.example.com")), "twice"),
        (_body(_sni(b"")), "empty"),
        (_body(_sni(b"a\x00b")), "NUL"),
        (_body(_sni("bücher.example".encode())), "not ASCII"),
        (_body(b"", session_id=b"\x00" * 33), "session_id"),
        (_body(b"", suites=b"\x13"), "odd"),
        (_body(_ext(0, b"\x00\x10\x00")), "overruns"),  # server_name list claims more than it has
        (_body(b"\x00\x00\x00\x09\x00"), "overruns"),  # extension longer than the extensions block
    ],
)
def test_malformed_fields_are_refused(data: bytes, message: str) -> None:
    with pytest.raises(ClientHelloError, match=message):
        parse(data)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_random_bytes_never_crash(data: bytes) -> None:
    try:
        parse(data)
    except ClientHelloError:
        pass


_REAL = real_hello(alpn=["http/1.1"])


@settings(max_examples=300, deadline=None)
@given(st.integers(0, len(_REAL) - 1), st.integers(0, 255))
def test_any_single_byte_corruption_is_an_answer_or_an_error(pos: int, value: int) -> None:
    mutated = _REAL[:pos] + bytes([value]) + _REAL[pos + 1 :]
    try:
        result = parse(mutated)
    except ClientHelloError:
        return
    assert result is None or isinstance(result.server_name, (str, type(None)))
