"""Fuzzing the request parser and the header rewriter together, with hypothesis.

Client byte streams are generated from a grammar of requests that mixes valid framing with
the smuggling tricks of ``tests/requests`` (duplicate or obfuscated Content-Length and
Transfer-Encoding, bad chunk sizes, bare LF, obs-fold, odd targets and versions), split into
random reads and fed to the proxy core in memory (``tests.support.memproxy``). The property:
whatever reaches an upstream is complete, has one framing, one Host, and is byte for byte a
request the gateway itself parsed: forwarded framing always equals parsed framing. A longer
coverage-guided run of the same invariant is ``tests/fuzz/fuzz_request_stream.py`` (atheris).
"""

from __future__ import annotations

import httptools
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fsmfast.codec import FRAME_CHUNKED, FRAME_NONE, build_request_head
from tests.support.memproxy import MemoryProxy, check_framing

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

methods = st.sampled_from([b"GET", b"POST", b"PUT", b"HEAD", b"OPTIONS", b"DELETE", b"get", b"FOO", b"CONNECT"])
segments = st.sampled_from([b"a", b"..", b".", b"", b"%2e%2e", b"%2F", b"admin", b"limited", b"x%zz", b"a#b"])
targets = st.one_of(
    st.lists(segments, max_size=5).map(lambda s: b"/" + b"/".join(s)),
    st.sampled_from([b"*", b"http://h.test/a", b"http://u@h.test/", b"h.test:80", b"/q?x=/../y"]),
)
versions = st.sampled_from([b"HTTP/1.1"] * 6 + [b"HTTP/1.0", b"HTTP/2.0", b"HTTP/1.2", b""])
cl_values = st.sampled_from([b"%d", b"+%d", b"%d ", b" %d", b"0x%d", b"%d,%d", b"%d_0", b"-%d"])
te_values = st.sampled_from(
    [
        b"chunked",
        b"chunked",
        b"CHUNKED",
        b" chunked",
        b"xchunked",
        b"chunked, identity",
        b"identity, chunked",
        b",chunked",
    ]
)
eols = st.sampled_from([b"\r\n"] * 12 + [b"\n", b"\r", b"\r\n "])


@st.composite
def chunked_body(draw: st.DrawFn, body: bytes) -> bytes:
    out = b""
    pos = 0
    while pos < len(body):
        n = draw(st.integers(1, len(body) - pos))
        size = draw(st.sampled_from([b"%x" % n] * 6 + [b"0x%x" % n, b"%x;ext=1" % n, b"%x " % n, b"-1", b"zz"]))
        out += size + b"\r\n" + body[pos : pos + n] + draw(st.sampled_from([b"\r\n"] * 8 + [b"", b"\n", b"XX"]))
        pos += n
    trailer = draw(st.sampled_from([b"", b"", b"Host: evil.test\r\n", b"Content-Length: 5\r\n", b"X-T: 1\r\n"]))
    return out + b"0\r\n" + trailer + b"\r\n"


@st.composite
def request(draw: st.DrawFn) -> bytes:
    method = draw(methods)
    target = draw(targets)
    version = draw(versions)
    eol = draw(eols)
    sep = draw(st.sampled_from([b" "] * 10 + [b"  ", b"\t"]))
    line = method + sep + target + (b" " + version if version else b"")
    headers: list[bytes] = []
    host = draw(st.sampled_from([b"h.test", b"h.test", b"h.test:8000", b"", b"a b", b"h.test,i.test", None]))
    if host is not None:
        headers.append(b"Host: " + host)
    if draw(st.booleans()) and host is not None:
        headers.append(b"Host: " + draw(st.sampled_from([b"h.test", b"other.test"])))
    body = draw(st.binary(max_size=40))
    framing = draw(st.sampled_from(["none", "cl", "cl", "te", "te", "both", "cl2", "te2"]))
    if framing in ("cl", "both", "cl2"):
        value = draw(cl_values)
        headers.append(b"Content-Length: " + value.replace(b"%d", b"%d" % len(body)))
        if framing == "cl2":
            headers.append(b"Content-Length: %d" % draw(st.sampled_from([len(body), len(body) + 1])))
    if framing in ("te", "both", "te2"):
        headers.append(b"Transfer-Encoding: " + draw(te_values))
        if framing == "te2":
            headers.append(b"Transfer-Encoding: chunked")
    for extra in draw(
        st.lists(
            st.sampled_from(
                [
                    b"X-A: 1",
                    b"X-A : 1",
                    b" folded",
                    b"Connection: close, Host",
                    b"Expect: 100-continue",
                    b"Upgrade: h2c",
                    b"Connection: upgrade",
                    b"X-B: a\x00b",
                    b"X_C: 1",
                ]
            ),
            max_size=3,
        )
    ):
        headers.insert(draw(st.integers(0, len(headers))), extra)
    head = line + eol + b"".join(h + b"\r\n" for h in headers) + b"\r\n"
    if framing in ("te", "both", "te2"):
        return head + draw(chunked_body(body))
    if framing == "none":
        return head
    return head + body


@st.composite
def streams(draw: st.DrawFn) -> list[bytes]:
    data = b"".join(draw(st.lists(request(), min_size=1, max_size=4)))
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=4)))
    pieces = []
    last = 0
    for cut in [*cuts, len(data)]:
        if cut > last:
            pieces.append(data[last:cut])
            last = cut
    return pieces


@FUZZ
@given(streams())
def test_forwarded_framing_equals_parsed_framing(pieces: list[bytes]) -> None:
    proxy = MemoryProxy()
    try:
        for piece in pieces:
            proxy.feed(piece)
        check_framing(proxy)
    finally:
        proxy.close()


@FUZZ
@given(
    st.lists(
        st.sampled_from(
            [
                b"GET /a HTTP/1.1\r\nHost: h.test\r\n\r\n",
                b"POST /b HTTP/1.1\r\nHost: h.test\r\nContent-Length: 3\r\n\r\nabc",
                b"POST /c HTTP/1.1\r\nHost: h.test\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n",
            ]
        ),
        min_size=1,
        max_size=5,
    ),
    st.integers(1, 50),
)
def test_well_formed_pipelines_all_reach_the_upstream(requests: list[bytes], piece: int) -> None:
    """The other half: nothing valid is lost, however the stream is cut into reads."""
    data = b"".join(requests)
    proxy = MemoryProxy()
    try:
        for i in range(0, len(data), piece):
            proxy.feed(data[i : i + piece])
        check_framing(proxy)
        assert [r.complete for r in proxy.forwarded] == [True] * len(requests)
        assert proxy.client_output().count(b"HTTP/1.1 200 OK") == len(requests)
    finally:
        proxy.close()


header_names = st.sampled_from(
    [
        b"Host",
        b"Content-Length",
        b"Transfer-Encoding",
        b"Connection",
        b"X-Forwarded-For",
        b"Upgrade",
        b"TE",
        b"X-A",
        b"content-length",
        b"TRANSFER-ENCODING",
        b"Expect",
        b"Keep-Alive",
        b"Trailer",
    ]
)
header_values = st.sampled_from(
    [
        b"chunked",
        b"5",
        b"close, Content-Length",
        b"Transfer-Encoding",
        b"h.test",
        b"",
        b"x",
        b"keep-alive, Host, X-A",
        b"1, 2",
    ]
)


@FUZZ
@given(
    st.lists(st.tuples(header_names, header_values), max_size=12),
    st.one_of(st.just(FRAME_NONE), st.just(FRAME_CHUNKED), st.integers(0, 50)),
)
def test_rewritten_head_has_exactly_the_gateways_framing(headers: list[tuple[bytes, bytes]], framing: int) -> None:
    """Whatever framing headers the client sent, the head the gateway writes carries exactly
    the framing it decided on, once (the header rewriter alone, both twins via fsmfast.codec)."""
    head = build_request_head(b"POST", b"/x", headers, b"127.0.0.1", b"http", b"h.test", framing, b"", 0)
    seen: list[tuple[bytes, bytes]] = []

    class Collect:
        def on_header(self, name: bytes, value: bytes) -> None:
            seen.append((name.lower(), value))

    parser = httptools.HttpRequestParser(Collect())
    parser.feed_data(head)
    framing_headers = [(n, v) for n, v in seen if n in (b"content-length", b"transfer-encoding")]
    if framing == FRAME_NONE:
        assert framing_headers == []
    elif framing == FRAME_CHUNKED:
        assert framing_headers == [(b"transfer-encoding", b"chunked")]
    else:
        assert framing_headers == [(b"content-length", b"%d" % framing)]
