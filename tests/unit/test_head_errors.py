"""The llhttp messages fsmfast.pipeline.head reads, pinned against the installed httptools.

Each row feeds raw bytes to llhttp itself (no gateway), takes the message it refuses them with,
and checks the answer ``refusal`` makes of it. A new httptools that rewords a message fails here,
naming the row, rather than quietly changing a status on the wire.
"""

from __future__ import annotations

import httptools
import pytest

from fsmfast.pipeline.head import refusal


class _Heads:
    """Collects what llhttp reports before it stops, as ClientConnection does."""

    def __init__(self) -> None:
        self.headers: list[tuple[bytes, bytes]] = []
        self.in_body = False

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.in_body = True


def _llhttp_refuses(raw: bytes) -> tuple[str, _Heads]:
    heads = _Heads()
    parser = httptools.HttpRequestParser(heads)
    with pytest.raises(httptools.HttpParserError) as info:
        parser.feed_data(raw)
    return str(info.value), heads


CASES = [
    ("h2-preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 400, "bad_request", "HTTP/2 connection preface"),
    ("invalid-method", b"G@T / HTTP/1.1\r\nHost: a\r\n\r\n", 400, "bad_request", "invalid method"),
    ("http-3.0", b"GET / HTTP/3.0\r\nHost: a\r\n\r\n", 505, "http_version_not_supported", "unsupported HTTP"),
    ("http-1.2", b"GET / HTTP/1.2\r\nHost: a\r\n\r\n", 505, "http_version_not_supported", "unsupported HTTP"),
    (
        "bad-chunk-size",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        400,
        "bad_request",
        "malformed request: ",
    ),
    ("bare-lf-in-head", b"GET / HTTP/1.1\nHost: a\r\n\r\n", 400, "bad_request", "malformed request: "),
]


@pytest.mark.parametrize(("raw", "status", "code", "text"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_llhttp_messages_map_to_the_same_answers(raw: bytes, status: int, code: str, text: str) -> None:
    message, heads = _llhttp_refuses(raw)
    reply = refusal(message, heads.headers, heads.in_body)
    assert (reply.status, reply.code) == (status, code), message
    assert reply.text.startswith(text), (message, reply.text)


def test_an_unsupported_transfer_encoding_is_501_before_the_body() -> None:
    # llhttp refuses `Transfer-Encoding: gzip` alone (no Content-Length) as invalid; nginx's answer is
    # 501 (RFC 9112 §6.1), as the gateway's own check gives when it reads such a head first.
    message, heads = _llhttp_refuses(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\nabc")
    reply = refusal(message, heads.headers, in_body=False)
    assert (reply.status, reply.code) == (501, "not_implemented"), message
    with_length = [*heads.headers, (b"Content-Length", b"3")]
    assert refusal(message, with_length, in_body=False).status == 400


def test_a_chunked_body_error_is_not_blamed_on_the_transfer_encoding() -> None:
    # Once the head is through, a bad chunk is a malformed body, even with a TE header seen.
    reply = refusal("Invalid character in chunk size", [(b"Transfer-Encoding", b"gzip")], in_body=True)
    assert (reply.status, reply.code) == (400, "bad_request")
