"""The Cython twin ``fsmfast._parser`` against the pure-Python spec ``fsmfast.codec.http1``.

Table tests run over both implementations (fixture ``impl``); property tests check that the two
agree byte for byte on random input and that what ``build_request_head`` writes parses back.
"""

from __future__ import annotations

import inspect
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import httptools
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fsmfast
from fsmfast.codec import http1 as pure

try:
    from fsmfast import _parser as cython_impl

    _MISSING = ""
except ImportError as exc:  # pragma: no cover - depends on the build
    cython_impl = None  # type: ignore[assignment]
    _MISSING = f"fsmfast._parser is not built ({exc}); run `python setup.py build_ext --inplace`"

needs_extension = pytest.mark.skipif(cython_impl is None, reason=_MISSING or "built")
IMPLS = [
    pytest.param(pure, id="pure"),
    pytest.param(cython_impl, id="cython", marks=needs_extension),
]
FRAME_NONE, FRAME_CHUNKED, FRAME_CLOSE = pure.FRAME_NONE, pure.FRAME_CHUNKED, pure.FRAME_CLOSE
Headers = list[tuple[bytes, bytes]]


@pytest.fixture(params=IMPLS)
def impl(request: pytest.FixtureRequest) -> ModuleType:
    return request.param  # type: ignore[no-any-return]


def request_head(
    impl: ModuleType,
    headers: Headers,
    *,
    client_ip: bytes = b"10.0.0.9",
    proto: bytes = b"http",
    host: bytes = b"",
    framing: int = FRAME_NONE,
    rid: int = 0,
) -> bytes:
    return impl.build_request_head(  # type: ignore[no-any-return]
        b"GET", b"/p?q=1", headers, client_ip, proto, host, framing, PREFIX, rid
    )


PREFIX = b"0123456789abcdef"  # a worker's request-id prefix


def expected_request(
    kept: Headers,
    xff: bytes = b"10.0.0.9",
    proto: bytes = b"http",
    host: bytes = b"",
    framing: bytes = b"",
    request_id: bytes = b"",
) -> bytes:
    lines = b"".join(n + b": " + v + b"\r\n" for n, v in kept)
    xfh = b"X-Forwarded-Host: " + host + b"\r\n" if host else b""
    xfh += b"X-Request-Id: " + request_id + b"\r\n" if request_id else b""
    return (
        b"GET /p?q=1 HTTP/1.1\r\n"
        + lines
        + b"X-Forwarded-For: "
        + xff
        + b"\r\nX-Forwarded-Proto: "
        + proto
        + b"\r\n"
        + xfh
        + framing
        + b"\r\n"
    )


# --- API ------------------------------------------------------------------------------------------


PUBLIC = [
    "FRAME_NONE",
    "FRAME_CHUNKED",
    "FRAME_CLOSE",
    "HOP_BY_HOP",
    "GATEWAY_OWNED",
    "ResponseHead",
    "parse_content_length",
    "connection_tokens",
    "build_request_head",
    "build_response_head",
    "chunk",
    "scan_request",
    "response_framing",
    "parse_response_head",
    "scan_response_head",
    "relay_response_head",
    "valid_host",
    "valid_request_id",
    "valid_traceparent",
    "scan_request_line",
    "read_request_head",
    "read_response_head",
    "normalize_target",
    "normalize_host",
]


@needs_extension
def test_same_public_api() -> None:
    def public(mod: ModuleType) -> set[str]:
        return {n for n in vars(mod) if not n.startswith("_") and n != "annotations"}

    assert public(cython_impl) == public(pure) == set(PUBLIC)
    for name in PUBLIC:
        a, b = getattr(cython_impl, name), getattr(pure, name)
        if name == "ResponseHead":
            assert isinstance(a(), a) and isinstance(b(), b)
        elif callable(b):
            assert list(inspect.signature(a).parameters) == list(inspect.signature(b).parameters), name
        else:
            assert a == b, name


def test_codec_exports_the_extension_by_default_and_the_spec_when_forced() -> None:
    root = str(Path(fsmfast.__file__).resolve().parent.parent)
    code = "from fsmfast import codec; print(codec.impl.__name__, codec.USING_EXTENSION)"

    def run(**extra: str) -> str:
        env = {k: v for k, v in os.environ.items() if k != "FSMFAST_NO_EXTENSIONS"}
        env["PYTHONPATH"] = root
        env.update(extra)
        out = subprocess.run(
            [sys.executable, "-c", code], env=env, cwd=root, capture_output=True, text=True, timeout=60, check=True
        )
        return out.stdout.strip()

    assert run(FSMFAST_NO_EXTENSIONS="1") == "fsmfast.codec.http1 False"
    if cython_impl is None:
        pytest.skip(_MISSING)
    assert run() == "fsmfast._parser True"


# --- parse_content_length ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (b"0", 0),
        (b"123", 123),
        (b"007", 7),
        (b"", -1),
        (b"+5", -1),
        (b"-1", -1),
        (b" 5", -1),
        (b"5 ", -1),
        (b"5\t", -1),
        (b"1,2", -1),
        (b"0x10", -1),
        (b"1_0", -1),
        (b"1.0", -1),
        (b"5\x00", -1),
        ("٣".encode(), -1),  # ARABIC-INDIC DIGIT THREE: int() would take it as a str
        ("12".encode("utf-16-le"), -1),
        (b"9" * 18, 999_999_999_999_999_999),
        (b"0" * 18, 0),
        (b"1" + b"0" * 18, -1),  # 19 digits
        (b"9" * 19, -1),
        (b"9" * 40, -1),
    ],
)
def test_parse_content_length(impl: ModuleType, value: bytes, expected: int) -> None:
    assert impl.parse_content_length(value) == expected


# --- connection_tokens ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ([], set()),
        ([(b"Host", b"a")], set()),
        ([(b"Connection", b"close")], {b"close"}),
        ([(b"CONNECTION", b"Keep-Alive, X-Foo")], {b"keep-alive", b"x-foo"}),
        ([(b"connection", b" \tX-A\t ,  x-b ,, ,\t")], {b"x-a", b"x-b"}),
        ([(b"Connection", b"a"), (b"X", b"y"), (b"cOnNeCtIoN", b"B,a")], {b"a", b"b"}),
        ([(b"Connection", b"")], set()),
        ([(b"Connection ", b"a"), (b"Proxy-Connection", b"b")], set()),  # only the exact name counts
        ([(b"Connection", b"a b, c\x80\xc3\x89")], {b"a b", b"c\x80\xc3\x89"}),  # lower() is ASCII only
        ([(b"Connection", b"@AZ[`az{\xc0\xda")], {b"@az[`az{\xc0\xda"}),  # the edges of A-Z
    ],
)
def test_connection_tokens(impl: ModuleType, headers: Headers, expected: set[bytes]) -> None:
    tokens = impl.connection_tokens(headers)
    assert isinstance(tokens, frozenset)
    assert tokens == expected


# --- build_request_head --------------------------------------------------------------------------

ACCEPT = (b"Accept", b"*/*")


@pytest.mark.parametrize(
    ("headers", "kept"),
    [
        pytest.param([], [], id="empty"),
        pytest.param(
            [
                (b"Connection", b"close"),
                (b"Keep-Alive", b"timeout=5"),
                (b"TE", b"trailers"),
                (b"Trailer", b"X-Sum"),
                (b"Transfer-Encoding", b"chunked"),
                (b"Upgrade", b"websocket"),
                (b"Proxy-Connection", b"keep-alive"),
                (b"Content-Length", b"5"),
                ACCEPT,
            ],
            [ACCEPT],
            id="hop-by-hop",
        ),
        pytest.param(
            [(b"cOnNeCtIoN", b"x"), (b"KEEP-ALIVE", b"1"), (b"tE", b"t"), (b"trAILER", b"t"), (b"uPGRADE", b"h2c")],
            [],
            id="hop-by-hop-mixed-case",
        ),
        pytest.param(
            [(b"X-Foo", b"1"), (b"Connection", b"X-Foo, x-BAR"), (b"x-bar", b"2"), (b"X-Baz", b"3")],
            [(b"X-Baz", b"3")],
            id="listed-in-connection",
        ),
        pytest.param(
            [(b"Connection", b"x-a"), (b"X-A", b"1"), (b"Connection", b"X-B"), (b"x-b", b"2"), (b"x-c", b"3")],
            [(b"x-c", b"3")],
            id="several-connection-headers",
        ),
        pytest.param(
            [(b"Connection", b" \tx-a\t ,  X-B ,,"), (b"x-a", b"1"), (b"x-b", b"2"), ACCEPT],
            [ACCEPT],
            id="connection-whitespace",
        ),
        pytest.param([(b"Expect", b"100-continue"), (b"EXPECT", b"x"), ACCEPT], [ACCEPT], id="expect-dropped"),
        pytest.param(
            [(b"A", b"1"), (b"B", b"2"), (b"a", b"3"), (b"Cookie", b"x=1"), (b"Cookie", b"y=2"), (b"A", b"")],
            [(b"A", b"1"), (b"B", b"2"), (b"a", b"3"), (b"Cookie", b"x=1"), (b"Cookie", b"y=2"), (b"A", b"")],
            id="duplicates-and-order",
        ),
        pytest.param(
            [
                (b"Tf", b"1"),
                (b"Hosts", b"1"),
                (b"Connectio", b"1"),
                (b"Connections", b"1"),
                (b"keep_alive", b"1"),
                (b"Content-Lengths", b"1"),
                (b"x-forwarded-fox", b"1"),
                (b"X-Forwarded-Hosts", b"1"),
                (b"Expects", b"1"),
                (b"\xc3\x89tag", b"\xff"),
            ],
            [
                (b"Tf", b"1"),
                (b"Hosts", b"1"),
                (b"Connectio", b"1"),
                (b"Connections", b"1"),
                (b"keep_alive", b"1"),
                (b"Content-Lengths", b"1"),
                (b"x-forwarded-fox", b"1"),
                (b"X-Forwarded-Hosts", b"1"),
                (b"Expects", b"1"),
                (b"\xc3\x89tag", b"\xff"),
            ],
            id="near-misses-kept",
        ),
        pytest.param(
            [(b"Connection", b", ".join(b"x-%d" % i for i in range(40)))] + [(b"X-%d" % i, b"v") for i in range(45)],
            [(b"X-%d" % i, b"v") for i in range(40, 45)],
            id="many-connection-tokens",
        ),
        pytest.param(
            [(b"H-%d" % i, b"v" * i) for i in range(100)] + [(b"Connection", b"h-7")],
            [(b"H-%d" % i, b"v" * i) for i in range(100) if i != 7],
            id="many-headers",
        ),
    ],
)
def test_request_strips_hop_by_hop(impl: ModuleType, headers: Headers, kept: Headers) -> None:
    assert request_head(impl, headers) == expected_request(kept)


def test_connection_cannot_strip_what_the_gateway_owns(impl: ModuleType) -> None:
    headers = [
        (b"Connection", b"Host, X-Forwarded-For, x-forwarded-proto, X-FORWARDED-HOST, X-Other"),
        (b"Host", b"app.example"),
        (b"X-Forwarded-For", b"1.1.1.1"),
        (b"X-Forwarded-Proto", b"https"),
        (b"X-Forwarded-Host", b"evil.example"),
        (b"X-Other", b"gone"),
    ]
    head = request_head(impl, headers, host=b"app.example")
    assert head == expected_request([(b"Host", b"app.example")], xff=b"1.1.1.1, 10.0.0.9", host=b"app.example")


@pytest.mark.parametrize(
    ("headers", "xff"),
    [
        ([], b"10.0.0.9"),
        ([(b"X-Forwarded-For", b"1.1.1.1")], b"1.1.1.1, 10.0.0.9"),
        ([(b"x-forwarded-for", b"1.1.1.1, 2.2.2.2")], b"1.1.1.1, 2.2.2.2, 10.0.0.9"),
        (
            [(b"X-Forwarded-For", b"a"), ACCEPT, (b"X-FORWARDED-FOR", b"b"), (b"x-Forwarded-for", b"c")],
            b"a, b, c, 10.0.0.9",
        ),
        ([(b"X-Forwarded-For", b"")], b", 10.0.0.9"),
    ],
)
def test_x_forwarded_for_appends(impl: ModuleType, headers: Headers, xff: bytes) -> None:
    kept = [ACCEPT] if ACCEPT in headers else []
    assert request_head(impl, headers) == expected_request(kept, xff=xff)


@pytest.mark.parametrize("host", [b"", b"app.example:8443"])
def test_x_forwarded_proto_and_host_are_replaced(impl: ModuleType, host: bytes) -> None:
    headers = [(b"X-Forwarded-Proto", b"http"), (b"x-forwarded-host", b"spoofed"), (b"X-Forwarded-Proto", b"ftp")]
    head = request_head(impl, headers, proto=b"https", host=host)
    assert head == expected_request([], proto=b"https", host=host)
    assert head.count(b"X-Forwarded-Proto") == 1
    assert head.count(b"X-Forwarded-Host") == (1 if host else 0)


@pytest.mark.parametrize(
    ("framing", "line"),
    [
        (FRAME_NONE, b""),
        (FRAME_CLOSE, b""),
        (FRAME_CHUNKED, b"Transfer-Encoding: chunked\r\n"),
        (0, b"Content-Length: 0\r\n"),
        (123, b"Content-Length: 123\r\n"),
        (10**18, b"Content-Length: 1000000000000000000\r\n"),
    ],
)
def test_request_framing(impl: ModuleType, framing: int, line: bytes) -> None:
    headers = [(b"Content-Length", b"99"), (b"Transfer-Encoding", b"gzip, chunked")]
    assert request_head(impl, headers, framing=framing) == expected_request([], framing=line)


# --- build_response_head -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("http11", "keep_alive", "status_line", "connection"),
    [
        (True, True, b"HTTP/1.1 200 OK\r\n", b""),
        (True, False, b"HTTP/1.1 200 OK\r\n", b"Connection: close\r\n"),
        (False, True, b"HTTP/1.0 200 OK\r\n", b"Connection: keep-alive\r\n"),
        (False, False, b"HTTP/1.0 200 OK\r\n", b"Connection: close\r\n"),
    ],
)
def test_response_versions_and_keep_alive(
    impl: ModuleType, http11: bool, keep_alive: bool, status_line: bytes, connection: bytes
) -> None:
    headers = [(b"Server", b"up"), (b"Connection", b"keep-alive"), (b"Keep-Alive", b"timeout=5")]
    head = impl.build_response_head(http11, 200, b"OK", headers, 5, keep_alive)
    assert head == status_line + b"Server: up\r\nContent-Length: 5\r\n" + connection + b"\r\n"


@pytest.mark.parametrize(
    ("headers", "kept"),
    [
        pytest.param(
            [
                (b"Date", b"d"),
                (b"Transfer-Encoding", b"chunked"),
                (b"content-length", b"3"),
                (b"Trailer", b"x"),
                (b"Upgrade", b"h2"),
                (b"TE", b"x"),
                (b"Proxy-Connection", b"x"),
                (b"Set-Cookie", b"a=1"),
                (b"set-cookie", b"b=2"),
            ],
            [(b"Date", b"d"), (b"Set-Cookie", b"a=1"), (b"set-cookie", b"b=2")],
            id="hop-by-hop-dups-order",
        ),
        pytest.param(
            # Unlike requests, a response's Connection may name anything, Host and X-Forwarded-* too.
            [(b"Connection", b"X-Forwarded-For, host , X-Up"), (b"X-Forwarded-For", b"1"), (b"Host", b"h"),
             (b"x-up", b"1"), (b"Expect", b"kept"), (b"X-Forwarded-Proto", b"kept")],
            [(b"Expect", b"kept"), (b"X-Forwarded-Proto", b"kept")],
            id="listed-in-connection",
        ),
    ],
)  # fmt: skip
def test_response_strips_hop_by_hop(impl: ModuleType, headers: Headers, kept: Headers) -> None:
    head = impl.build_response_head(True, 404, b"Not Found", headers, FRAME_CHUNKED, True)
    lines = b"".join(n + b": " + v + b"\r\n" for n, v in kept)
    assert head == b"HTTP/1.1 404 Not Found\r\n" + lines + b"Transfer-Encoding: chunked\r\n\r\n"


@pytest.mark.parametrize(
    ("status", "reason", "framing", "expected"),
    [
        (204, b"No Content", FRAME_NONE, b"HTTP/1.1 204 No Content\r\n\r\n"),
        (200, b"", FRAME_CLOSE, b"HTTP/1.1 200 \r\n\r\n"),
        (599, b"X", 0, b"HTTP/1.1 599 X\r\nContent-Length: 0\r\n\r\n"),
        (100, b"Continue", 123456789, b"HTTP/1.1 100 Continue\r\nContent-Length: 123456789\r\n\r\n"),
    ],
)
def test_response_status_and_framing(
    impl: ModuleType, status: int, reason: bytes, framing: int, expected: bytes
) -> None:
    assert impl.build_response_head(True, status, reason, [], framing, True) == expected


# --- chunk ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "head"), [(0, b"0\r\n"), (1, b"1\r\n"), (15, b"f\r\n"), (255, b"ff\r\n"), (4096, b"1000\r\n")]
)
def test_chunk(impl: ModuleType, size: int, head: bytes) -> None:
    data = b"x" * size
    pieces = impl.chunk(data)
    assert pieces == [head, data, b"\r\n"]
    assert pieces[1] is data


# --- input validation ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "error"),
    [
        (None, TypeError),
        (5, TypeError),
        ([(b"a",)], ValueError),
        ([(b"a", b"b", b"c")], ValueError),
        ([("a", b"b")], TypeError),
        ([(b"a", None)], TypeError),
    ],
)
def test_bad_headers_raise(impl: ModuleType, headers: object, error: type[Exception]) -> None:
    with pytest.raises(error):
        request_head(impl, headers)  # type: ignore[arg-type]
    with pytest.raises(error):
        impl.build_response_head(True, 200, b"OK", headers, FRAME_NONE, True)


@pytest.mark.parametrize("bad", [None, "GET"])
def test_bad_scalars_raise(impl: ModuleType, bad: object) -> None:
    with pytest.raises(TypeError):
        impl.build_request_head(bad, b"/", [], b"1", b"http", b"", FRAME_NONE, PREFIX, 0)
    with pytest.raises(TypeError):
        impl.build_request_head(b"GET", b"/", [], bad, b"http", b"", FRAME_NONE, PREFIX, 0)
    with pytest.raises(TypeError):
        impl.build_response_head(True, 200, bad, [], FRAME_NONE, True)


@needs_extension
@pytest.mark.parametrize(
    "headers",
    [[(b"Connection", bytearray(b"x"))], [("Connection", b"x")], [b"ab"], [(b"a", memoryview(b"b"))]],
)
def test_extension_wants_bytes_pairs(headers: list[object]) -> None:
    """Stricter than the spec, which half-accepts some of these by accident of b"".join."""
    for call in (
        lambda: cython_impl.connection_tokens(headers),
        lambda: cython_impl.build_request_head(b"GET", b"/", headers, b"1", b"http", b"", FRAME_NONE, PREFIX, 0),
        lambda: cython_impl.build_response_head(True, 200, b"OK", headers, FRAME_NONE, True),
    ):
        with pytest.raises(TypeError):
            call()


def test_header_iterables_and_list_items(impl: ModuleType) -> None:
    pairs = [(b"A", b"1"), (b"Connection", b"b")]
    expected = expected_request([(b"A", b"1")])
    assert request_head(impl, tuple(pairs)) == expected  # type: ignore[arg-type]
    assert request_head(impl, [list(p) for p in pairs]) == expected  # type: ignore[misc]


# --- properties ----------------------------------------------------------------------------------

TCHAR = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
VCHAR = "".join(chr(c) for c in range(0x21, 0x7F))
# --- X-Request-Id and W3C traceparent ------------------------------------------------------------

TRACEPARENT = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"  # the W3C spec's example
TRACESTATE = (b"tracestate", b"congo=t61rcWkgMzE,rojo=00f067aa0ba902b7")


@pytest.mark.parametrize(
    ("rid", "text"),
    [
        (1, b"0000000000000001"),
        (0x2A, b"000000000000002a"),
        (0x0123456789ABCDEF, b"0123456789abcdef"),
        (0xA0B1C2D3E4F56789, b"a0b1c2d3e4f56789"),
        (2**64 - 1, b"ffffffffffffffff"),
    ],
)
def test_generated_request_id_replaces_the_clients(impl: ModuleType, rid: int, text: bytes) -> None:
    headers = [(b"X-Request-Id", b"not valid"), ACCEPT, (b"x-request-id", b"second")]
    assert request_head(impl, headers, rid=rid) == expected_request([ACCEPT], request_id=PREFIX + text)


def test_the_clients_request_id_is_kept_where_it_was(impl: ModuleType) -> None:
    headers = [(b"x-REQUEST-id", b"abc-123 "), ACCEPT]
    assert request_head(impl, headers) == expected_request(headers)


def test_connection_cannot_strip_the_request_id(impl: ModuleType) -> None:
    headers = [(b"Connection", b"X-Request-Id"), (b"X-Request-Id", b"abc"), ACCEPT]
    assert request_head(impl, headers) == expected_request([(b"X-Request-Id", b"abc"), ACCEPT])
    assert request_head(impl, headers, rid=7) == expected_request([ACCEPT], request_id=PREFIX + b"%016x" % 7)


def test_request_id_argument_errors(impl: ModuleType) -> None:
    for bad in (-1, 2**64):
        with pytest.raises(OverflowError):
            request_head(impl, [], rid=bad)
    with pytest.raises(TypeError):
        impl.build_request_head(b"GET", b"/", [], b"1", b"http", b"", FRAME_NONE, "0123", 5)
    # No id to send: the prefix is not looked at.
    assert impl.build_request_head(b"GET", b"/", [], b"1", b"http", b"", FRAME_NONE, None, 0) == (
        b"GET / HTTP/1.1\r\nX-Forwarded-For: 1\r\nX-Forwarded-Proto: http\r\n\r\n"
    )
    # Any prefix (a worker's has 16 hex digits), and ids past 2**32.
    assert impl.build_request_head(b"GET", b"/", [], b"1", b"http", b"", FRAME_NONE, b"ab", 2**32 + 10) == (
        b"GET / HTTP/1.1\r\nX-Forwarded-For: 1\r\nX-Forwarded-Proto: http\r\nX-Request-Id: ab000000010000000a\r\n\r\n"
    )


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        (b"a", True),
        (b"0123456789abcdef0123456789abcdef", True),
        (b"Root=1-5759e988-bd862e3fe1be46a994272793", True),
        (b"AbC.-_x", True),
        (b"a:b+c/d=e.f-G9", True),
        (b"x" * 128, True),
        (b"x" * 129, False),
        (b"", False),
        (b" a", False),
        (b"a,b", False),
        (b"a;b", False),
        (b"a\\b", False),
        (b"\xe9", False),
        (b"a\x00", False),
    ],
)
def test_valid_request_id(impl: ModuleType, value: bytes, ok: bool) -> None:
    assert impl.valid_request_id(value) is ok


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        (TRACEPARENT, True),
        (b" \t" + TRACEPARENT + b" ", True),
        (b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00", True),
        (b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-ff", True),
        # A later version: the known fields, then anything after a "-".
        (b"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-03", True),
        (b"cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-the-future-holds", True),
        (b"cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01.more", False),
        (b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-", False),
        (b"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", False),
        (b"00-00000000000000000000000000000000-00f067aa0ba902b7-01", False),
        (b"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", False),
        (b"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", False),
        (b"0G-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", False),
        (b"00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01", False),
        (b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1", False),
        (b"00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", False),
        (b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0x", False),
        (b"", False),
    ],
)
def test_valid_traceparent(impl: ModuleType, value: bytes, ok: bool) -> None:
    assert impl.valid_traceparent(value) is ok


def test_valid_traceparent_passes_byte_for_byte(impl: ModuleType) -> None:
    headers = [(b"TraceParent", TRACEPARENT + b" "), ACCEPT, TRACESTATE]
    assert request_head(impl, headers, rid=1) == expected_request(headers, request_id=PREFIX + b"%016x" % 1)


@pytest.mark.parametrize(
    "parents",
    [
        [b"00-00000000000000000000000000000000-00f067aa0ba902b7-01"],
        [TRACEPARENT[:-1]],
        [TRACEPARENT, TRACEPARENT],  # two: which one?
    ],
)
def test_invalid_traceparent_goes_with_tracestate(impl: ModuleType, parents: list[bytes]) -> None:
    headers = [TRACESTATE, *[(b"traceparent", v) for v in parents], ACCEPT, (b"TraceState", b"b=1")]
    assert request_head(impl, headers) == expected_request([ACCEPT])


def test_tracestate_alone_passes(impl: ModuleType) -> None:
    headers = [TRACESTATE, ACCEPT]
    assert request_head(impl, headers) == expected_request(headers)


SPECIAL = sorted(
    pure.HOP_BY_HOP
    | pure.GATEWAY_OWNED
    | {b"expect", b"tf", b"hosts", b"connectio", b"keep_alive", b"x-forwarded-fox", b"x-a", b"x-b"}
    | {b"traceparent", b"tracestate", b"x-request-ids", b"traceparents"}
)


def random_case(name: bytes, bits: int) -> bytes:
    return bytes(c - 32 if 97 <= c <= 122 and (bits >> (i % 60)) & 1 else c for i, c in enumerate(name))


tokens = st.text(TCHAR, min_size=1, max_size=12).map(str.encode)
known_names = st.builds(random_case, st.sampled_from(SPECIAL), st.integers(0, 2**60))
names = st.one_of(known_names, tokens)
# traceparent-shaped values: valid ones, and ones a byte or a length away from valid.
_HEXLC = "0123456789abcdef"
traceparent_values = st.builds(
    lambda version, trace, parent, flags, more, cut, junk: (
        (b"%s-%s-%s-%s" % (version, trace, parent, flags) + more)[: cut if cut >= 0 else None] + junk
    ),
    st.sampled_from([b"00", b"01", b"cc", b"ff", b"0A", b"x0"]),
    st.one_of(st.just(b"0" * 32), st.text(_HEXLC, min_size=32, max_size=32).map(str.encode)),
    st.one_of(st.just(b"0" * 16), st.text(_HEXLC, min_size=16, max_size=16).map(str.encode)),
    st.text(_HEXLC + "G", min_size=2, max_size=2).map(str.encode),
    st.sampled_from([b"", b"-", b"-x", b".x"]),
    st.one_of(st.just(-1), st.integers(0, 60)),
    st.sampled_from([b"", b" ", b"\t", b"A"]),
)
request_id_values = st.one_of(
    st.text("abcXYZ019._:+/=-", min_size=0, max_size=130).map(str.encode), st.sampled_from([b"a b", b"a_b"])
)
values = st.one_of(st.text(VCHAR + " \t", max_size=30).map(str.encode), traceparent_values, request_id_values)
ows = st.sampled_from([b"", b" ", b"\t", b" \t "])
connection_values = st.lists(st.tuples(ows, st.one_of(names, st.just(b"")), ows), max_size=20).map(
    lambda items: b",".join(a + t + b for a, t, b in items)
)
header = st.one_of(
    st.tuples(names, values),
    st.tuples(st.builds(random_case, st.just(b"connection"), st.integers(0, 2**60)), connection_values),
)
methods = st.sampled_from([b"GET", b"POST", b"PUT", b"DELETE", b"PATCH", b"OPTIONS", b"HEAD"])
targets = st.text(TCHAR + "/?=&;:@", max_size=30).map(lambda s: b"/" + s.encode())
client_ips = st.sampled_from([b"127.0.0.1", b"10.1.2.3", b"::1", b"2001:db8::7", b"-"])
protos = st.sampled_from([b"http", b"https"])
hosts = st.one_of(st.just(b""), st.text(TCHAR + ".:", min_size=1, max_size=20).map(str.encode))
framings = st.one_of(st.sampled_from([FRAME_NONE, FRAME_CHUNKED, FRAME_CLOSE]), st.integers(0, 2**63 - 1))
rids = st.one_of(st.just(0), st.integers(1, 2**64 - 1))
# Arbitrary bytes too, for the twin comparison only: commas, non-ASCII, empty names.
any_connection_values = st.lists(st.tuples(ows, st.one_of(names, st.binary(max_size=8)), ows), max_size=20).map(
    lambda items: b",".join(a + t + b for a, t, b in items)
)
any_header_lists = st.lists(
    st.one_of(
        header,
        st.tuples(st.binary(max_size=18), st.binary(max_size=20)),
        st.tuples(st.builds(random_case, st.just(b"connection"), st.integers(0, 2**60)), any_connection_values),
    ),
    max_size=40,
)

PROPERTY = settings(max_examples=200, deadline=None)


@needs_extension
@PROPERTY
@given(
    st.one_of(
        st.binary(max_size=24), st.from_regex(rb"\A[0-9]{0,22}\Z"), st.text("0123456789٣๓", max_size=20).map(str.encode)
    )
)
def test_twin_parse_content_length(value: bytes) -> None:
    assert cython_impl.parse_content_length(value) == pure.parse_content_length(value)


@needs_extension
@PROPERTY
@given(any_header_lists)
def test_twin_connection_tokens(headers: Headers) -> None:
    assert cython_impl.connection_tokens(headers) == pure.connection_tokens(headers)


@needs_extension
@PROPERTY
@given(methods, targets, any_header_lists, client_ips, protos, hosts, framings, rids)
def test_twin_request_head(
    method: bytes,
    target: bytes,
    headers: Headers,
    client_ip: bytes,
    proto: bytes,
    host: bytes,
    framing: int,
    rid: int,
) -> None:
    args = (method, target, headers, client_ip, proto, host, framing, PREFIX, rid)
    assert cython_impl.build_request_head(*args) == pure.build_request_head(*args)


@needs_extension
@PROPERTY
@given(st.one_of(traceparent_values, st.binary(max_size=60)), st.one_of(request_id_values, st.binary(max_size=8)))
def test_twin_validators(traceparent: bytes, request_id: bytes) -> None:
    assert cython_impl.valid_traceparent(traceparent) is pure.valid_traceparent(traceparent)
    assert cython_impl.valid_request_id(request_id) is pure.valid_request_id(request_id)


@needs_extension
@PROPERTY
@given(
    st.booleans(),
    st.one_of(st.integers(100, 999), st.integers(-(2**63), 2**63 - 1)),
    values,
    any_header_lists,
    framings,
    st.booleans(),
)
def test_twin_response_head(
    http11: bool, status: int, reason: bytes, headers: Headers, framing: int, keep_alive: bool
) -> None:
    args = (http11, status, reason, headers, framing, keep_alive)
    assert cython_impl.build_response_head(*args) == pure.build_response_head(*args)


@needs_extension
@PROPERTY
@given(st.binary(max_size=5000))
def test_twin_chunk(data: bytes) -> None:
    assert cython_impl.chunk(data) == pure.chunk(data)


class Collect:
    """httptools request-parser protocol that records what it sees."""

    def __init__(self) -> None:
        self.url = b""
        self.headers: Headers = []
        self.body = b""
        self.headers_done = False
        self.complete = False

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.headers_done = True

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        self.complete = True


@pytest.mark.parametrize("mod", IMPLS)
@PROPERTY
@given(
    methods,
    targets,
    st.lists(header, max_size=30),
    client_ips,
    protos,
    hosts,
    st.one_of(st.sampled_from([FRAME_NONE, FRAME_CHUNKED, FRAME_CLOSE]), st.integers(0, 3000)),
    rids,
)
def test_request_head_parses_back(
    mod: ModuleType,
    method: bytes,
    target: bytes,
    raw: Headers,
    client_ip: bytes,
    proto: bytes,
    host: bytes,
    framing: int,
    rid: int,
) -> None:
    headers = [(n, v.strip(b" \t")) for n, v in raw]  # llhttp trims the whitespace around a value
    head = mod.build_request_head(method, target, headers, client_ip, proto, host, framing, PREFIX, rid)

    seen = Collect()
    parser = httptools.HttpRequestParser(seen)
    parser.feed_data(head)
    assert seen.headers_done
    assert parser.get_method() == method
    assert seen.url == target

    # Expected, restated independently of either implementation.
    listed = {t.strip(b" \t").lower() for n, v in headers if n.lower() == b"connection" for t in v.split(b",")}
    dropped = pure.HOP_BY_HOP | {b"expect", b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host"}
    if rid:
        dropped |= {b"x-request-id"}
    parents = [v for n, v in headers if n.lower() == b"traceparent"]
    if parents and (len(parents) > 1 or not pure.valid_traceparent(parents[0])):
        dropped |= {b"traceparent", b"tracestate"}
    forwarded = [
        (n, v)
        for n, v in headers
        if n.lower() not in dropped and (n.lower() in (b"host", b"x-request-id") or n.lower() not in listed)
    ]
    xff = b", ".join([v for n, v in headers if n.lower() == b"x-forwarded-for"] + [client_ip])
    added = [(b"X-Forwarded-For", xff.strip(b" \t")), (b"X-Forwarded-Proto", proto)]
    if host:
        added.append((b"X-Forwarded-Host", host))
    if rid:
        added.append((b"X-Request-Id", PREFIX + b"%016x" % rid))
    if framing >= 0:
        added.append((b"Content-Length", b"%d" % framing))
    elif framing == FRAME_CHUNKED:
        added.append((b"Transfer-Encoding", b"chunked"))
    assert seen.headers == forwarded + added

    # The framing the parser sees: feed a body in that framing and watch the message end where it should.
    if framing == FRAME_CHUNKED:
        assert not seen.complete
        parser.feed_data(b"3\r\nabc\r\n0\r\n\r\n")
        assert seen.complete and seen.body == b"abc"
    elif framing > 0:
        assert not seen.complete
        parser.feed_data(b"y" * (framing - 1))
        assert not seen.complete
        parser.feed_data(b"y")
        assert seen.complete and seen.body == b"y" * framing
    else:  # Content-Length: 0, or no framing header: no body (RFC 9112 §6.3 item 7)
        assert seen.complete and seen.body == b""


# -- the request and response scanners -------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ([(b"Host", b"a"), (b"Content-Length", b"5")], (b"a", 5, None, None, None, None, None)),
        ([(b"HOST", b"a"), (b"host", b"b")], (b"a", -1, None, None, None, (400, "more than one Host header"), None)),
        ([(b"content-length", b"5"), (b"Content-Length", b"5")], (None, 5, None, None, None, None, None)),
        (
            [(b"content-length", b"5"), (b"Content-Length", b"6")],
            (None, 5, None, None, None, (400, "conflicting Content-Length headers"), None),
        ),
        ([(b"content-length", b"+5")], (None, -1, None, None, None, (400, "invalid Content-Length"), None)),
        # Spaces and tabs around the value are not part of it (RFC 9110 §5.5); inside it they are.
        ([(b"Content-Length", b"5  \t")], (None, 5, None, None, None, None, None)),
        ([(b"Content-Length", b" \t5 ")], (None, 5, None, None, None, None, None)),
        ([(b"Content-Length", b"5 5")], (None, -1, None, None, None, (400, "invalid Content-Length"), None)),
        ([(b"Content-Length", b"  ")], (None, -1, None, None, None, (400, "invalid Content-Length"), None)),
        ([(b"Host", b"")], (None, -1, None, None, None, (400, "invalid Host header"), None)),
        ([(b"Host", b"a:0")], (None, -1, None, None, None, (400, "invalid Host header"), None)),
        (
            [(b"Transfer-Encoding", b"chunked"), (b"EXPECT", b"100-continue")],
            (None, -1, b"chunked", b"100-continue", None, None, None),
        ),
        (
            [(b"Transfer-Encoding", b"a"), (b"transfer-encoding", b"chunked")],
            (None, -1, b"a", None, None, (400, "more than one Transfer-Encoding header"), None),
        ),
        ([(b"Upgrade", b"websocket"), (b"upgrade", b"h2c")], (None, -1, None, None, b"websocket", None, None)),
        ([(b"Host", b"a b")], (None, -1, None, None, None, (400, "invalid Host header"), None)),
        (
            [(b"Host", b"a"), (b"X-Big", b"v" * 96)],
            (b"a", -1, None, None, None, (431, "a header field exceeds 100 bytes"), None),
        ),
        ([(b"X-Big", b"v" * 95)], (None, -1, None, None, None, None, None)),
        ([], (None, -1, None, None, None, None, None)),
        # X-Request-Id: one valid value is the request's id (spaces and tabs around it not counted).
        ([(b"X-Request-Id", b"abc-123")], (None, -1, None, None, None, None, b"abc-123")),
        ([(b"x-request-id", b" a.b:c+d/e=f-G \t")], (None, -1, None, None, None, None, b"a.b:c+d/e=f-G")),
        ([(b"X-REQUEST-ID", b"r" * 80)], (None, -1, None, None, None, None, b"r" * 80)),
        ([(b"X-Request-Id", b"r?")], (None, -1, None, None, None, None, None)),
        ([(b"X-Request-Id", b"")], (None, -1, None, None, None, None, None)),
        ([(b"X-Request-Id", b"a b")], (None, -1, None, None, None, None, None)),
        ([(b"X-Request-Id", b'a"b')], (None, -1, None, None, None, None, None)),
        ([(b"X-Request-Id", b"a_b")], (None, -1, None, None, None, None, b"a_b")),
        ([(b"X-Request-Id", b"caf\xc3\xa9")], (None, -1, None, None, None, None, None)),
        # Two are one too many, even when equal: the gateway's own replaces them.
        ([(b"X-Request-Id", b"a"), (b"X-Request-Id", b"a")], (None, -1, None, None, None, None, None)),
        ([(b"X-Request-Ids", b"a"), (b"X-Request-I", b"b")], (None, -1, None, None, None, None, None)),
        (
            [(b"X-Request-Id", b"abc"), (b"Content-Length", b"x")],
            (None, -1, None, None, None, (400, "invalid Content-Length"), None),
        ),
    ],
)
def test_scan_request(impl: ModuleType, headers: Headers, expected: tuple[object, ...]) -> None:
    assert impl.scan_request(headers, 100) == expected


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ([(b"Content-Length", b" 12 ")], (12, False)),
        ([(b"Transfer-Encoding", b"gzip, Chunked")], (-1, True)),
        ([(b"Transfer-Encoding", b"chunked, gzip")], (-1, False)),
        ([(b"transfer-encoding", b"  chunked\t")], (-1, True)),
        ([(b"Content-Length", b"x")], (-1, False)),
        ([], (-1, False)),
    ],
)
def test_response_framing(impl: ModuleType, headers: Headers, expected: tuple[int, bool]) -> None:
    assert impl.response_framing(headers) == expected


@pytest.mark.parametrize(
    ("head", "start", "expected"),
    [
        (b"HTTP/1.1 200 OK\r\nA: b\r\nC:d \r\n", 0, (200, b"OK", [(b"A", b"b"), (b"C", b"d")])),
        (b"HTTP/1.1 204 \r\n", 0, (204, b"", [])),
        (b"HTTP/1.1 200\r\n", 0, (200, b"", [])),
        (
            b"HTTP/1.0 404 Not Found Here\r\nX: 1\r\n folded\tmore \r\nY:\r\n",
            0,
            (404, b"Not Found Here", [(b"X", b"1 folded\tmore"), (b"Y", b"")]),
        ),
        (b"junkHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n", 4, (103, b"Early Hints", [(b"Link", b"</a>")])),
    ],
)
def test_parse_response_head(impl: ModuleType, head: bytes, start: int, expected: tuple[object, ...]) -> None:
    buf = head + b"\r\n" + b"body bytes after the head"
    assert impl.parse_response_head(buf, start, len(head) - 2) == expected


@needs_extension
@PROPERTY
@given(any_header_lists)
def test_twin_scan_request_and_response_framing(headers: Headers) -> None:
    for limit in (8192, 20):
        assert cython_impl.scan_request(headers, limit) == pure.scan_request(headers, limit)
    assert cython_impl.response_framing(headers) == pure.response_framing(headers)


response_headers = st.lists(st.tuples(tokens, values), max_size=30)


@PROPERTY
@given(st.integers(100, 599), st.text(VCHAR + " ", max_size=20).map(str.encode), response_headers)
def test_response_head_round_trip(status: int, reason: bytes, headers: Headers) -> None:
    """A head built from headers parses back to them (values without surrounding space),
    identically in both implementations, and llhttp agrees on the status."""
    lines = b"".join(n + b": " + v + b"\r\n" for n, v in headers)
    head = b"HTTP/1.1 %d %s\r\n%s" % (status, reason, lines)
    end = len(head)
    buf = head + b"\r\n"
    want = (status, reason, [(n, v.strip(b" \t")) for n, v in headers])
    assert pure.parse_response_head(buf, 0, end) == want
    if cython_impl is not None:
        assert cython_impl.parse_response_head(buf, 0, end) == want


# -- hostile-input checks: Host, request line, request-target -----------------------------------


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        (b"example.com", True),
        (b"Example.COM:8080", True),
        (b"a_b-c.example.", True),
        (b"127.0.0.1:80", True),
        (b"[::1]", True),
        (b"[2001:db8::7]:443", True),
        (b"a.com:1", True),
        (b"a.com:65535", True),
        (b"a.com:08080", True),  # 8080: a number, leading zeros and all
        (b"[::1]:65535", True),
        # An empty Host and ports no client connects to (nginx refuses the first, takes the rest).
        (b"", False),
        (b"a.com:", False),
        (b"a.com:0", False),
        (b"a.com:00000", False),
        (b"a.com:65536", False),
        (b"a.com:99999", False),
        (b"[::1]:", False),
        (b"[::1]:0", False),
        (b"[::1]:70000", False),
        (b"a b", False),
        (b"a/b", False),
        (b"a.com,b.com", False),
        (b"a..com", False),
        (b"a.com:80:80", False),
        (b"a.com:123456", False),
        (b"a.com:8x", False),
        (b":80", False),
        (b"[]", False),
        (b"[::1", False),
        (b"[::1]x", False),
        (b"[g::1]", False),
        (b"u@a.com", False),
        (b"a%2ecom", False),
        (b"\xffa.com", False),
    ],
)
def test_valid_host(impl: ModuleType, value: bytes, ok: bool) -> None:
    assert impl.valid_host(value) is ok


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", 16),
        (b"\r\n\r\nGET / HTTP/1.1\r\n", 20),
        (b"GET /x?a=b", 0),
        (b"GET  / HTTP/1.1\r\n", -1),
        (b"GET /  HTTP/1.1\r\n", -1),
        (b" GET / HTTP/1.1\r\n", -1),
        (b"GET  /", 0),
        (b"GET / HTTP/1.1\r\nX: a  b\r\n\r\n", 16),
        (b"", 0),
        (b"\r\n", 0),
    ],
)
def test_scan_request_line(impl: ModuleType, data: bytes, expected: int) -> None:
    assert impl.scan_request_line(data) == expected


@pytest.mark.parametrize(
    ("target", "path", "forwarded", "problem"),
    [
        (b"/", b"/", b"/", None),
        (b"/get?x=1", b"/get", b"/get?x=1", None),
        (b"/a//b", b"/a/b", b"/a/b", None),
        (b"/a/./b/", b"/a/b/", b"/a/b/", None),
        (b"/a/../b?q=/../", b"/b", b"/b?q=/../", None),
        (b"/a/%2e%2E/admin", b"/admin", b"/admin", None),
        (b"/%61dmin", b"/admin", b"/admin", None),
        (b"/a%2fb", b"/a%2Fb", b"/a%2Fb", None),
        (b"/a/.", b"/a/", b"/a/", None),
        (b"/a/..", b"/", b"/", None),
        (b"/.well-known/x", b"/.well-known/x", b"/.well-known/x", None),
        (b"/x?a|b{c}", b"/x", b"/x?a|b{c}", None),
        (b"/..", None, None, "request path goes above the root"),
        (b"/%2e%2e/etc", None, None, "request path goes above the root"),
        (b"/a%2F..%2Fadmin", None, None, "dot-segment next to an encoded separator in request path"),
        (b"/a%zz", None, None, "invalid percent-encoding in request path"),
        (b"/a%2", None, None, "invalid percent-encoding in request path"),
        (b"/a#frag", None, None, "invalid character in request-target"),
        (b"/x?y#frag", None, None, "invalid character in request-target"),
        (b"/a\\..\\b", None, None, "invalid character in request-target"),
        (b'/a"b', None, None, "invalid character in request-target"),
    ],
)
def test_normalize_target(
    impl: ModuleType, target: bytes, path: bytes | None, forwarded: bytes | None, problem: str | None
) -> None:
    got = impl.normalize_target(target)
    assert got[2] == problem
    if problem is None:
        assert got[:2] == (path, forwarded)
        # Idempotent: a normalized target needs nothing more, and is returned as is.
        again = impl.normalize_target(got[1])
        assert again[1] is got[1] and again[0] == path and again[2] is None


def test_normalize_target_keeps_the_object_when_nothing_changes(impl: ModuleType) -> None:
    target = b"/plain/path"
    path, forwarded, problem = impl.normalize_target(target)
    assert path is target and forwarded is target and problem is None


path_bytes = st.lists(
    st.sampled_from([b"/", b".", b"..", b"%2e", b"%2F", b"%5c", b"%41", b"%zz", b"a", b"~", b"?", b"#", b"\\", b"%"]),
    max_size=16,
).map(lambda parts: b"/" + b"".join(parts))


@needs_extension
@PROPERTY
@given(st.one_of(path_bytes, st.binary(max_size=30).map(lambda b: b"/" + b)))
def test_twin_normalize_target(target: bytes) -> None:
    assert cython_impl.normalize_target(target) == pure.normalize_target(target)


@needs_extension
@PROPERTY
@given(
    st.one_of(
        st.binary(max_size=24),
        st.from_regex(rb"\A(\[[0-9a-f:.]{0,8}\]|[a-z0-9._:-]{0,12})\Z"),
        # Ports around the range's ends, with and without leading zeros.
        st.from_regex(rb"\A(\[::1\]|a\.b|1\.2\.3\.4):(0{0,3}|6553[4-9]|6554\d|[0-9]{1,6})\Z"),
    )
)
def test_twin_valid_host(value: bytes) -> None:
    assert cython_impl.valid_host(value) == pure.valid_host(value)


@needs_extension
@PROPERTY
@given(st.lists(st.sampled_from([b" ", b"  ", b"\r\n", b"\n", b"GET", b"/x", b"HTTP/1.1", b"\r"]), max_size=10))
def test_twin_scan_request_line(parts: list[bytes]) -> None:
    data = b"".join(parts)
    assert cython_impl.scan_request_line(data) == pure.scan_request_line(data)


@PROPERTY
@given(path_bytes)
def test_normalized_path_has_no_dot_segments(target: bytes) -> None:
    """Whatever is accepted routes on a path without "." / ".." segments or "//", and is
    forwarded as exactly that path: routing and the upstream can never disagree."""
    path, forwarded, problem = pure.normalize_target(target)
    if problem is not None:
        return
    assert forwarded.split(b"?", 1)[0] == path
    assert b"//" not in path
    assert all(seg not in (b".", b"..") for seg in path.split(b"/"))


# -- response heads relayed from the upstream's buffer -------------------------------------------

RELAY_HEADS = [
    b"HTTP/1.1 200 OK\r\nServer: up\r\nContent-Length: 12\r\nConnection: keep-alive\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\nKeep-Alive: timeout=5\r\nX-A: 1\r\nX-A: 2\r\n",
    b"HTTP/1.1 204 \r\nConnection: X-Secret, close\r\nX-Secret: s\r\nx-secret: t\r\nVary: *\r\n",
    b"HTTP/1.0 404 Not Found Here\r\nX: 1\r\n folded\tmore \r\nContent-Length:  7 \r\n",  # obs-fold
    b"HTTP/1.1 200\r\nContent-Length: x\r\nTE: trailers\r\nUpgrade: h2c\r\nProxy-Connection: k\r\nTrailer: a\r\n",
    b"HTTP/1.1 301 Moved\r\nLocation: /b\r\n:bad\r\nno colon here\r\nEmpty:\r\n",
    b"HTTP/1.1 200 OK\r\n" + b"".join(b"H%d: %d\r\n" % (i, i) for i in range(70)),  # more than the stack holds
    b"HTTP/1.1 200 OK\r\nConnection: " + b", ".join(b"x-%d" % i for i in range(20)) + b"\r\nx-3: gone\r\nY: kept\r\n",
]


@pytest.mark.parametrize("head", RELAY_HEADS)
@pytest.mark.parametrize("offset", [0, 7])
def test_scan_and_relay_response_head_are_parse_then_build(impl: ModuleType, head: bytes, offset: int) -> None:
    buf = b"x" * offset + head + b"\r\nbody"
    start, end = offset, offset + len(head) - 2
    status, reason, headers = pure.parse_response_head(buf, start, end)
    length, chunked = pure.response_framing(headers)
    assert impl.scan_response_head(buf, start, end) == (status, length, chunked)
    for http11, framing, keep_alive in [(True, 12, True), (True, FRAME_CHUNKED, False), (False, FRAME_CLOSE, True)]:
        want = pure.build_response_head(http11, status, reason, headers, framing, keep_alive)
        assert impl.relay_response_head(buf, start, end, http11, framing, keep_alive) == want
        # The body that followed the blank line, carried in the same bytes (empty when it ends there).
        assert impl.relay_response_head(buf, start, end, http11, framing, keep_alive, len(buf)) == want + b"body"
        assert impl.relay_response_head(buf, start, end, http11, framing, keep_alive, end + 6) == want + b"bo"
        assert impl.relay_response_head(buf, start, end, http11, framing, keep_alive, end + 4) == want


def test_relay_response_head_refuses_a_body_past_the_buffer(impl: ModuleType) -> None:
    buf = RELAY_HEADS[0] + b"\r\nHello World!"
    end = len(RELAY_HEADS[0]) - 2
    assert impl.relay_response_head(buf, 0, end, True, 12, True, len(buf)).endswith(b"\r\n\r\nHello World!")
    with pytest.raises(ValueError, match="body_end"):
        impl.relay_response_head(buf, 0, end, True, 12, True, len(buf) + 1)


def test_relay_response_head_drops_hop_by_hop_and_listed_headers(impl: ModuleType) -> None:
    buf = RELAY_HEADS[2] + b"\r\n"
    assert impl.relay_response_head(buf, 0, len(buf) - 4, True, FRAME_NONE, True) == (
        b"HTTP/1.1 204 \r\nVary: *\r\n\r\n"
    )


# Heads read_response_head accepts (plain): the reader fills a ResponseHead for the relay that follows.
PLAIN_HEADS = [
    RELAY_HEADS[0],
    b"HTTP/1.1 200\r\nContent-Length: 0\r\n",
    b"HTTP/1.1 404 \r\nContent-Length: 3\r\nX-Pad: a b \t \r\nKeep-Alive: timeout=5\r\n",
    b"HTTP/1.0 503 Service Unavailable\r\nconnection: X-Drop, keep-alive\r\nx-drop: 1\r\nContent-Length: 1\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n" + b"".join(b"H%d:  v%d \r\n" % (i, i) for i in range(40)),
]


@pytest.mark.parametrize("head", PLAIN_HEADS)
@pytest.mark.parametrize("offset", [0, 9])
def test_relay_after_read_response_head_gives_the_same_head(impl: ModuleType, head: bytes, offset: int) -> None:
    other = b"x" * offset + head.replace(b"200", b"201", 1).replace(b"Content-Length", b"content-length") + b"\r\n"
    buf = b"x" * offset + head + b"\r\n"
    start, end = offset, offset + len(head) - 2
    status, reason, headers = pure.parse_response_head(buf, start, end)
    kept = impl.ResponseHead()
    assert kept.buf is None
    got = impl.read_response_head(buf, start, 65536, kept)
    assert got is not None and got[0] == end + 4 and got[1] == status and kept.buf is buf
    for http11, framing, keep_alive in [(True, 12, True), (False, FRAME_CLOSE, False)]:
        want = pure.build_response_head(http11, status, reason, headers, framing, keep_alive)
        impl.read_response_head(buf, start, 65536, kept)
        # Another buffer with the same bounds is read on its own, and the kept fields stay for this one.
        o_status, o_reason, o_headers = pure.parse_response_head(other, start, end)
        o_want = pure.build_response_head(http11, o_status, o_reason, o_headers, framing, keep_alive)
        assert impl.relay_response_head(other, start, end, http11, framing, keep_alive, 0, kept) == o_want
        assert kept.buf is buf
        # So are other bounds in the same buffer.
        assert impl.relay_response_head(buf, start, end - 2, http11, framing, keep_alive, 0, kept) == (
            impl.relay_response_head(buf, start, end - 2, http11, framing, keep_alive)
        )
        assert impl.relay_response_head(buf, start, end, http11, framing, keep_alive, 0, kept) == want
        assert kept.buf is None  # used up: the next relay reads the head itself
        assert impl.relay_response_head(buf, start, end, http11, framing, keep_alive, 0, kept) == want
        # The whole-response path: read, then relay with the body glued on.
        body = buf + b"12345"
        impl.read_response_head(body, start, 65536, kept)
        assert impl.relay_response_head(body, start, end, http11, framing, keep_alive, len(body), kept) == (
            want + b"12345"
        )
        # A head the reader refuses empties it.
        assert impl.read_response_head(b"HTTP/1.1 200 OK\r\n\r\n", 0, 65536, kept) is None and kept.buf is None


@pytest.mark.parametrize("bad", [b"HTTP/1.1\r\n", b"HTTP/1.1 2x0 OK\r\n"])
def test_scan_response_head_refuses_a_broken_status_line(impl: ModuleType, bad: bytes) -> None:
    with pytest.raises(ValueError):
        impl.scan_response_head(bad + b"\r\n", 0, len(bad))
    with pytest.raises(ValueError):
        impl.relay_response_head(bad + b"\r\n", 0, len(bad), True, FRAME_NONE, True)


folded_line = st.tuples(st.sampled_from([b" ", b"\t"]), values).map(lambda t: t[0] + t[1].lstrip(b" \t") + b"x")


@needs_extension
@PROPERTY
@given(
    st.integers(100, 599),
    st.text(VCHAR + " ", max_size=12).map(str.encode),
    st.lists(st.one_of(header.map(lambda h: h[0] + b":" + h[1]), folded_line), max_size=45),
    st.booleans(),
    framings,
    st.booleans(),
)
def test_twin_scan_and_relay_response_head(
    status: int, reason: bytes, lines: list[bytes], http11: bool, framing: int, keep_alive: bool
) -> None:
    head = b"HTTP/1.1 %d %s\r\n" % (status, reason) + b"".join(line + b"\r\n" for line in lines)
    buf = head + b"\r\n"
    end = len(head) - 2
    assert cython_impl.scan_response_head(buf, 0, end) == pure.scan_response_head(buf, 0, end)
    want = pure.relay_response_head(buf, 0, end, http11, framing, keep_alive)
    assert cython_impl.relay_response_head(buf, 0, end, http11, framing, keep_alive) == want
    # The same after each reader has read it (a plain head's fields are then kept and reused).
    c_kept, p_kept = cython_impl.ResponseHead(), pure.ResponseHead()
    read = cython_impl.read_response_head(buf, 0, 65536, c_kept)
    assert read == pure.read_response_head(buf, 0, 65536, p_kept)
    assert cython_impl.relay_response_head(buf, 0, end, http11, framing, keep_alive, 0, c_kept) == want
    assert pure.relay_response_head(buf, 0, end, http11, framing, keep_alive, 0, p_kept) == want
    # With a Content-Length most of these heads are plain: the kept fields then serve the relay.
    head = head + b"Content-Length: 3\r\n"
    buf, end = head + b"\r\n", len(head) - 2
    want = pure.relay_response_head(buf, 0, end, http11, framing, keep_alive)
    assert cython_impl.read_response_head(buf, 0, 65536, c_kept) == pure.read_response_head(buf, 0, 65536, p_kept)
    assert (c_kept.buf is None) == (p_kept.buf is None)
    assert cython_impl.relay_response_head(buf, 0, end, http11, framing, keep_alive, 0, c_kept) == want
    assert pure.relay_response_head(buf, 0, end, http11, framing, keep_alive, 0, p_kept) == want


# -- Host for matching ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (b"Foo.Example.COM", b"foo.example.com"),
        (b"foo.example.com:8080", b"foo.example.com"),
        (b"foo.example.com.", b"foo.example.com"),
        (b"foo.example.com.:80", b"foo.example.com"),
        (b"[2001:DB8::1]:443", b"[2001:db8::1]"),
        (b"[::1]:8000", b"[::1]"),
        (b"[::1]", b"[::1]"),
        (b"127.0.0.1:80", b"127.0.0.1"),
        (b"[::1", b"[::1"),
        (b"", b""),
        (b":80", b""),
        (b".", b""),
    ],
)
def test_normalize_host(impl: ModuleType, value: bytes, expected: bytes) -> None:
    assert impl.normalize_host(value) == expected


@needs_extension
@PROPERTY
@given(st.one_of(st.binary(max_size=30), st.text(TCHAR + ".:[]", max_size=30).map(str.encode)))
def test_twin_normalize_host(value: bytes) -> None:
    assert cython_impl.normalize_host(value) == pure.normalize_host(value)
