"""``read_request_head`` and ``read_response_head``: the one-call readers of plain heads, both builds.

They may decline any head (None sends it to llhttp), but what they accept they must read exactly
as llhttp does: same method, target, version, fields, status, length and keep-alive, and the
same end. The property tests hold the two builds to each other and to httptools on heads built
from a grammar, then mutated byte by byte so the refusals are exercised too.
"""

from __future__ import annotations

from types import ModuleType

import httptools
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.support.memproxy import MemoryProxy
from tests.unit.test_parser_twin import IMPLS, TCHAR, VCHAR, Collect, cython_impl, needs_extension, pure

LIMITS = {"max_head": 8192, "max_headers": 100}


@pytest.fixture(params=IMPLS)
def impl(request: pytest.FixtureRequest) -> ModuleType:
    return request.param  # type: ignore[no-any-return]


def read(impl: ModuleType, data: bytes, start: int = 0, **limits: int) -> object:
    return impl.read_request_head(data, start, **{**LIMITS, **limits})


class Recorder(Collect):
    """What llhttp reports for one request head, keep-alive included (asked while it is valid)."""

    def __init__(self) -> None:
        super().__init__()
        self.keep_alive: bool | None = None
        self.parser = httptools.HttpRequestParser(self)

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        self.keep_alive = self.parser.should_keep_alive()


def llhttp_reads(head: bytes) -> tuple[bytes, bytes, bool, list[tuple[bytes, bytes]], bool] | None:
    rec = Recorder()
    try:
        rec.parser.feed_data(head)
    except httptools.HttpParserError:
        return None
    if not rec.headers_done:
        return None
    version = rec.parser.get_http_version()
    return rec.parser.get_method(), rec.url, version == "1.1", rec.headers, bool(rec.keep_alive)


def test_reads_a_plain_head(impl: ModuleType) -> None:
    data = b"GET /get?x=1 HTTP/1.1\r\nHost: a.test\r\nUser-Agent:  wrk \r\nX-Empty:\r\n\r\nNEXT"
    assert read(impl, data) == (
        len(data) - 4,
        b"GET",
        b"/get?x=1",
        True,
        [(b"Host", b"a.test"), (b"User-Agent", b"wrk "), (b"X-Empty", b"")],
        True,
    )
    # From an offset: the second of two pipelined heads.
    second = b"POST /p HTTP/1.0\r\nContent-Length: 3\r\nConnection: Keep-Alive\r\n\r\nabc"
    assert read(impl, data[:-4] + second, len(data) - 4) == (
        len(data) - 4 + len(second) - 3,
        b"POST",
        b"/p",
        False,
        [(b"Content-Length", b"3"), (b"Connection", b"Keep-Alive")],
        True,
    )


@pytest.mark.parametrize(
    ("version", "connection", "keep_alive"),
    [
        (b"1.1", None, True),
        (b"1.1", b"close", False),
        (b"1.1", b"foo, Close ", False),
        (b"1.1", b"closed", True),
        (b"1.0", None, False),
        (b"1.0", b"keep-alive", True),
        (b"1.0", b"close, keep-alive", True),
        (b"1.1", b"keep-alive, close", False),
    ],
)
def test_keep_alive_follows_llhttp(
    impl: ModuleType, version: bytes, connection: bytes | None, keep_alive: bool
) -> None:
    data = (
        b"GET / HTTP/" + version + b"\r\n" + (b"Connection: " + connection + b"\r\n" if connection else b"") + b"\r\n"
    )
    got = read(impl, data)
    assert got is not None and got[5] is keep_alive
    assert llhttp_reads(data) is not None and llhttp_reads(data)[4] is keep_alive  # type: ignore[index]


@pytest.mark.parametrize(
    "data",
    [
        b"GET / HTTP/1.1\r\nHost: a\r\n",  # not whole yet
        b"\r\nGET / HTTP/1.1\r\n\r\n",  # a leading empty line: llhttp skips it
        b"get / HTTP/1.1\r\n\r\n",
        b"PROPFIND / HTTP/1.1\r\n\r\n",
        b"GET  / HTTP/1.1\r\n\r\n",
        b"GET / HTTP/1.1 \r\n\r\n",
        b"GET http://a/ HTTP/1.1\r\n\r\n",
        b"GET * HTTP/1.1\r\n\r\n",
        b"GET /a b HTTP/1.1\r\n\r\n",
        b"GET /a#f HTTP/1.1\r\n\r\n",
        b"GET /\xc3\xa9 HTTP/1.1\r\n\r\n",
        b"GET / HTTP/2.0\r\n\r\n",
        b"GET / HTTP/1.1\nHost: a\n\n",
        b"GET / HTTP/1.1\r\nHost: a\nX: b\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost : a\r\n\r\n",
        b"GET / HTTP/1.1\r\n: a\r\n\r\n",
        b"GET / HTTP/1.1\r\nNo-Colon\r\n\r\n",
        b"GET / HTTP/1.1\r\nX: a\r\n folded\r\n\r\n",
        b"GET / HTTP/1.1\r\nX: caf\xc3\xa9\r\n\r\n",
        b"GET / HTTP/1.1\r\nX: a\x01b\r\n\r\n",
        b"GET / HTTP/1.1\r\nX: a\rb\r\n\r\n",
        b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
        b"GET / HTTP/1.1\r\nConnection: upgrade\r\n\r\n",
        b"GET / HTTP/1.1\r\nProxy-Connection: close\r\n\r\n",
        b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n",
        b"POST / HTTP/1.1\r\nContent-Length: +1\r\n\r\n",
        b"POST / HTTP/1.1\r\nContent-Length: 1 1\r\n\r\n",
        # An underscore in a name: llhttp's reader drops the field (fsmfast.proxy.downstream).
        b"GET / HTTP/1.1\r\nX_A: 1\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nTransfer_Encoding: chunked\r\n\r\n",
        b"POST / HTTP/1.1\r\nContent-Length: 1234567890123456789\r\n\r\n",
    ],
)
def test_declines_what_is_not_plain(impl: ModuleType, data: bytes) -> None:
    assert read(impl, data) is None


def test_content_length_with_spaces_around(impl: ModuleType) -> None:
    # RFC 9110 §5.5: spaces and tabs around a value are not part of it; the field keeps the
    # trailing ones, as llhttp reports it (scan_request trims them).
    data = b"POST / HTTP/1.1\r\nContent-Length:   5 \t \r\n\r\nhello"
    got = read(impl, data)
    assert got == (len(data) - 5, b"POST", b"/", True, [(b"Content-Length", b"5 \t ")], True)
    assert llhttp_reads(data[: got[0]]) == got[1:]  # type: ignore[index]
    response = b"HTTP/1.1 200 OK\r\nContent-Length: 5  \r\n\r\nhello"
    assert read_response(impl, response) == (len(response) - 5, 200, 5, True)


def test_underscore_names_are_plain_in_responses(impl: ModuleType) -> None:
    # Only a request's underscore fields are dropped (nginx relays an upstream's as they are).
    response = b"HTTP/1.1 200 OK\r\nX_Upstream: a\r\nContent-Length: 0\r\n\r\n"
    assert read_response(impl, response) == (len(response), 200, 0, True)


def test_every_byte_at_every_place_of_a_value(impl: ModuleType) -> None:
    # The compiled reader checks values eight bytes at a time: every byte value, at each offset in
    # and around a word, is accepted exactly when it is visible ASCII, a space or a tab.
    allowed = set(range(0x20, 0x7F)) | {0x09}
    for place in range(19):
        for byte in range(256):
            value = bytearray(b"abcdefghijklmnopqrs")
            value[place] = byte
            head = b"GET / HTTP/1.1\r\nX: " + bytes(value) + b"\r\n\r\n"
            response = b"HTTP/1.1 200 " + bytes(value) + b"\r\nContent-Length: 0\r\n\r\n"
            assert (read(impl, head) is not None) is (byte in allowed), (place, byte)
            assert (read_response(impl, response) is not None) is (byte in allowed), (place, byte)


def test_limits_decline_rather_than_refuse(impl: ModuleType) -> None:
    data = b"GET / HTTP/1.1\r\n" + b"".join(b"X-%d: v\r\n" % i for i in range(5)) + b"\r\n"
    assert read(impl, data, max_headers=5) is not None
    assert read(impl, data, max_headers=4) is None
    assert read(impl, data, max_head=len(data)) is not None
    assert read(impl, data, max_head=len(data) - 1) is None


def test_bounds_and_types(impl: ModuleType) -> None:
    with pytest.raises(ValueError):
        read(impl, b"GET / HTTP/1.1\r\n\r\n", 99)
    with pytest.raises(ValueError):
        read(impl, b"GET / HTTP/1.1\r\n\r\n", -1)
    with pytest.raises(TypeError):
        read(impl, "GET / HTTP/1.1\r\n\r\n")  # type: ignore[arg-type]
    assert read(impl, b"GET / HTTP/1.1\r\n\r\n", 18) is None  # the end: nothing there yet


# -- properties -------------------------------------------------------------------------------------

ows = st.sampled_from([b"", b" ", b"\t", b"  "])
names = st.one_of(
    st.sampled_from(
        [
            b"Host",
            b"content-length",
            b"Connection",
            b"CONNECTION",
            b"Expect",
            b"Upgrade",
            b"Transfer-Encoding",
            b"Proxy-Connection",
            b"Keep-Alive",
            b"X-Forwarded-For",
        ]
    ),
    st.text(TCHAR, min_size=1, max_size=10).map(str.encode),
)
values = st.one_of(
    st.text(VCHAR + " \t", max_size=20).map(str.encode),
    st.sampled_from([b"close", b"keep-alive", b"x, close", b"Keep-Alive, foo", b"upgrade", b"12", b"0", b"chunked"]),
)
fields = st.lists(st.tuples(names, ows, values), max_size=8).map(
    lambda fs: b"".join(n + b":" + o + v + b"\r\n" for n, o, v in fs)
)
request_lines = st.builds(
    lambda m, t, v: m + b" " + t + b" HTTP/" + v + b"\r\n",
    st.sampled_from([b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"OPTIONS", b"PATCH", b"PROPFIND", b"get"]),
    st.one_of(
        st.text(TCHAR + "/?=&;:@%()!$*+,~", max_size=20).map(lambda s: b"/" + s.encode()),
        st.sampled_from([b"*", b"http://a/b", b"/a b", b"/a#b"]),
    ),
    st.sampled_from([b"1.1", b"1.0", b"1.2", b"2.0"]),
)
heads = st.builds(lambda line, fs: line + fs + b"\r\n", request_lines, fields)
# Mostly accepted: what a client usually sends, so the comparison with llhttp has material.
plain_heads = st.builds(
    lambda m, t, v, fs: m + b" " + t + b" HTTP/" + v + b"\r\n" + fs + b"\r\n",
    st.sampled_from([b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"OPTIONS", b"PATCH"]),
    st.text(TCHAR + "/?=&;:@%()!$*+,~", max_size=20).map(lambda s: b"/" + s.encode()),
    st.sampled_from([b"1.1", b"1.0"]),
    st.lists(
        st.tuples(
            st.one_of(
                st.sampled_from([b"Host", b"Connection", b"Accept"]),
                st.text(TCHAR, min_size=1, max_size=10).map(str.encode),
            ),
            ows,
            values,
        ),
        max_size=8,
    ).map(lambda fs: b"".join(n + b":" + o + v + b"\r\n" for n, o, v in fs)),
)


@st.composite
def mutated_heads(draw: st.DrawFn) -> bytes:
    head = bytearray(draw(heads))
    for _ in range(draw(st.integers(0, 3))):
        i = draw(st.integers(0, len(head) - 1))
        head[i] = draw(st.sampled_from([0, 9, 10, 13, 32, 58, 0x7F, 0xC3, ord("A"), ord("/")]))
    return bytes(head)


PROPERTY = settings(max_examples=400, deadline=None)


@pytest.mark.parametrize("mod", IMPLS)
@PROPERTY
@given(st.one_of(plain_heads, heads, mutated_heads()))
def test_what_it_reads_llhttp_reads_alike(mod: ModuleType, head: bytes) -> None:
    got = mod.read_request_head(head, 0, 8192, 100)
    if got is None:
        return
    end, method, target, http11, headers, keep_alive = got
    assert end == head.find(b"\r\n\r\n") + 4
    assert llhttp_reads(head[:end]) == (method, target, http11, headers, keep_alive)


@needs_extension
@PROPERTY
@given(st.one_of(plain_heads, heads, mutated_heads()), st.binary(max_size=6), st.integers(0, 3000), st.integers(0, 12))
def test_twins_agree(head: bytes, prefix: bytes, max_head: int, max_headers: int) -> None:
    data = prefix + head + b"GET"
    for start in (0, len(prefix)):
        args = (data, start, max_head, max_headers)
        assert cython_impl.read_request_head(*args) == pure.read_request_head(*args)


# -- responses --------------------------------------------------------------------------------------


class ResponseRecorder:
    def __init__(self) -> None:
        self.done = False
        self.keep_alive: bool | None = None
        self.parser = httptools.HttpResponseParser(self)

    def on_headers_complete(self) -> None:
        self.done = True
        self.keep_alive = self.parser.should_keep_alive()


def llhttp_reads_response(head: bytes, length: int) -> tuple[int, bool] | None:
    rec = ResponseRecorder()
    try:
        rec.parser.feed_data(head)
    except httptools.HttpParserError:
        return None
    return (rec.parser.get_status_code(), bool(rec.keep_alive)) if rec.done else None


def read_response(impl: ModuleType, data: bytes, start: int = 0, max_head: int = 8192) -> object:
    return impl.read_response_head(data, start, max_head)


def test_reads_a_plain_response(impl: ModuleType) -> None:
    head = b"HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Length: 12\r\n\r\n"
    assert read_response(impl, head + b"hello world\n") == (len(head), 200, 12, True)
    assert read_response(impl, b"xx" + head, 2) == (len(head) + 2, 200, 12, True)
    short = b"HTTP/1.0 404\r\nContent-Length: 0\r\n\r\n"
    assert read_response(impl, short) == (len(short), 404, 0, False)
    assert read_response(impl, b"HTTP/1.0 503 \r\nConnection: keep-alive\r\nContent-Length: 1\r\n\r\n")[3] is True  # type: ignore[index]
    assert read_response(impl, b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\n")[3] is False  # type: ignore[index]


@pytest.mark.parametrize(
    "data",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n",  # not whole yet
        b"HTTP/1.1 200 OK\r\n\r\n",  # no length: ends at EOF
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"HTTP/1.1 100 Continue\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 101 Switching Protocols\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n",
        b"HTTP/1.1 600 Odd\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 2000 OK\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 20 OK\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1  200 OK\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 \xc3\xa9\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\nContent-Length: 0\n\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1,1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n folded\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nConnection: upgrade\r\n\r\n",
    ],
)
def test_declines_responses_that_are_not_plain(impl: ModuleType, data: bytes) -> None:
    assert read_response(impl, data) is None


statuses = st.one_of(st.integers(100, 999).map(lambda n: b"%d" % n), st.sampled_from([b"20", b"2000", b"abc", b""]))
reasons = st.one_of(st.just(b""), st.text(VCHAR + " \t", max_size=12).map(lambda r: b" " + r.encode()))
response_fields = st.lists(
    st.tuples(
        st.one_of(
            st.sampled_from([b"Content-Length", b"content-length", b"Connection", b"Transfer-Encoding", b"Server"]),
            st.text(TCHAR, min_size=1, max_size=10).map(str.encode),
        ),
        ows,
        st.one_of(values, st.integers(0, 10**6).map(lambda n: b"%d" % n)),
    ),
    max_size=6,
).map(lambda fs: b"".join(n + b":" + o + v + b"\r\n" for n, o, v in fs))
responses = st.builds(
    lambda v, code, reason, fs: b"HTTP/" + v + b" " + code + reason + b"\r\n" + fs + b"\r\n",
    st.sampled_from([b"1.1", b"1.1", b"1.0", b"2.0"]),
    statuses,
    reasons,
    response_fields,
)

# Mostly accepted: a status with a body and one Content-Length, among other fields.
plain_responses = st.builds(
    lambda v, code, reason, before, length, after: (
        b"HTTP/" + v + b" %d" % code + reason + b"\r\n" + before + b"Content-Length: %d\r\n" % length + after + b"\r\n"
    ),
    st.sampled_from([b"1.1", b"1.0"]),
    st.integers(200, 599).filter(lambda c: c not in (204, 304)),
    reasons,
    response_fields.filter(lambda fs: b"content-length" not in fs.lower()),
    st.integers(0, 10**9),
    st.sampled_from([b"", b"Connection: close\r\n", b"Connection: keep-alive\r\n", b"Server: t\r\n"]),
)


@st.composite
def mutated_responses(draw: st.DrawFn) -> bytes:
    head = bytearray(draw(responses))
    for _ in range(draw(st.integers(1, 3))):
        i = draw(st.integers(0, len(head) - 1))
        head[i] = draw(st.sampled_from([0, 9, 10, 13, 32, 58, 0x7F, 0xC3, ord("A"), ord("1")]))
    return bytes(head)


@pytest.mark.parametrize("mod", IMPLS)
@PROPERTY
@given(st.one_of(plain_responses, responses, mutated_responses()))
def test_what_it_reads_llhttp_reads_alike_in_responses(mod: ModuleType, head: bytes) -> None:
    got = mod.read_response_head(head, 0, 8192)
    if got is None:
        return
    end, status, length, keep_alive = got
    assert end == head.find(b"\r\n\r\n") + 4
    assert llhttp_reads_response(head[:end], length) == (status, keep_alive)
    lengths = [
        v.strip()
        for n, v in (line.split(b":", 1) for line in head[:end].split(b"\r\n")[1:] if line)
        if n.lower() == b"content-length"
    ]
    assert lengths == [b"%d" % length] or (lengths == [lengths[0]] and int(lengths[0]) == length)


@needs_extension
@PROPERTY
@given(st.one_of(plain_responses, responses, mutated_responses()), st.binary(max_size=6), st.integers(0, 3000))
def test_response_twins_agree(head: bytes, prefix: bytes, max_head: int) -> None:
    data = prefix + head + b"body"
    for start in (0, len(prefix)):
        args = (data, start, max_head)
        assert cython_impl.read_response_head(*args) == pure.read_response_head(*args)


# -- the connection around the reader -----------------------------------------------------------------


@pytest.mark.parametrize("close", [False, True])
def test_empty_lines_between_requests_are_skipped(close: bool) -> None:
    # A CRLF after a request (some clients send one) is skipped like llhttp skips it: it neither starts
    # a head (whose timer would then run on an idle connection) nor counts as data after Connection: close.
    proxy = MemoryProxy(upstream_connections=1)
    try:
        extra = b"Connection: close\r\n" if close else b""
        proxy.feed(b"GET /a HTTP/1.1\r\nHost: h.test\r\n" + extra + b"\r\n\r\n")
        assert not proxy.client.in_head and not proxy.client.stop_reading
        assert proxy.client_output().count(b"HTTP/1.1 200") == 1
        if not close:
            proxy.feed(b"\r\nGET /b HTTP/1.1\r\nHost: h.test\r\n\r\n")
            assert [p.target for p in proxy.parsed] == [b"/a", b"/b"]
            assert proxy.client_output().count(b"HTTP/1.1 200") == 2
    finally:
        proxy.close()
