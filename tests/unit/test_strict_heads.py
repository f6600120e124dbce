"""The strictness rules of a request head hold whichever reader reads it.

A head whole in one read goes to the plain reader (``read_request_head``); the same head split
across reads goes to llhttp and the checks around it (``ClientConnection._check_line``,
``on_header``, ``scan_request``). Each case below is fed to the proxy core in memory
(``tests.support.memproxy``) whole, a byte at a time, and cut at every offset into two reads,
and every way must give the same answer and forward the same head. The corpus
(``tests/requests``) checks the same rules against a running gateway.
"""

from __future__ import annotations

import re

import pytest

from tests.support.memproxy import MemoryProxy, check_framing

CASES = {
    # Names with "_" are dropped, never forwarded (nginx's underscores_in_headers off).
    "underscore": (
        b"GET /u HTTP/1.1\r\nHost: a.test\r\nX_Forwarded_For: 6.6.6.6\r\nTransfer_Encoding: chunked\r\nX-B: 1\r\n\r\n",
        200,
    ),
    # The version must be HTTP/<digit>.<digit>: llhttp takes RTSP/1.0.
    "rtsp": (b"GET /r RTSP/1.0\r\nHost: a.test\r\n\r\n", 400),
    "http-2-digit-major": (b"GET /r HTTP/11.1\r\nHost: a.test\r\n\r\n", 400),
    # Host: a port from 1 to 65535, no empty value.
    "port-0": (b"GET /p HTTP/1.1\r\nHost: a.test:0\r\n\r\n", 400),
    "port-65536": (b"GET /p HTTP/1.1\r\nHost: a.test:65536\r\n\r\n", 400),
    "port-empty": (b"GET /p HTTP/1.1\r\nHost: a.test:\r\n\r\n", 400),
    "port-65535": (b"GET /p HTTP/1.1\r\nHost: a.test:65535\r\n\r\n", 200),
    "host-empty": (b"GET /h HTTP/1.1\r\nHost:\r\n\r\n", 400),
    "host-blank-http10": (b"GET /h HTTP/1.0\r\nHost:   \r\n\r\n", 400),
    # Spaces and tabs around a Content-Length are not part of it.
    "cl-spaces": (b"POST /c HTTP/1.1\r\nHost: a.test\r\nContent-Length:   5  \r\n\r\nhello", 200),
    "cl-tabs": (b"POST /c HTTP/1.1\r\nHost: a.test\r\nContent-Length:\t5\t\r\n\r\nhello", 200),
    "cl-space-inside": (b"POST /c HTTP/1.1\r\nHost: a.test\r\nContent-Length: 5 5\r\n\r\nhello", 400),
}


def _run(pieces: list[bytes]) -> tuple[int, list[tuple[bytes, bytes, bytes, list[tuple[bytes, bytes]]]]]:
    proxy = MemoryProxy()
    try:
        for piece in pieces:
            proxy.feed(piece)
        check_framing(proxy)
        out = proxy.client_output()
        status = int(out[9:12]) if out.startswith(b"HTTP/1.") else 0
        forwarded = [(r.method, r.target, r.body, _without_request_id(r.headers)) for r in proxy.forwarded]
        return status, forwarded
    finally:
        proxy.close()


def _without_request_id(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """The headers but the X-Request-Id the gateway made, which differs from request to request
    (checked here: exactly one, 32 lowercase hex digits)."""
    ids = [v for n, v in headers if n.lower() == b"x-request-id"]
    assert len(ids) == 1 and re.fullmatch(rb"[0-9a-f]{32}", ids[0]), headers
    return [(n, v) for n, v in headers if n.lower() != b"x-request-id"]


def _splits(data: bytes) -> list[list[bytes]]:
    head_end = data.index(b"\r\n\r\n") + 4
    ways = [[data], [data[i : i + 1] for i in range(len(data))]]
    ways += [[data[:cut], data[cut:]] for cut in range(1, head_end)]
    return ways


@pytest.mark.parametrize("case", sorted(CASES))
def test_every_split_of_the_head_gets_the_same_answer(case: str) -> None:
    data, status = CASES[case]
    whole = _run([data])
    assert whole[0] == status, whole
    for pieces in _splits(data):
        assert _run(pieces) == whole, [len(p) for p in pieces]
    forwarded = whole[1]
    if status != 200:
        assert forwarded == []
        return
    assert len(forwarded) == 1
    names = [n.lower() for n, _ in forwarded[0][3]]
    assert not any(b"_" in n for n in names), names
    assert names.count(b"x-forwarded-for") == 1
    assert dict((n.lower(), v) for n, v in forwarded[0][3])[b"x-forwarded-for"] == b"127.0.0.1"
    if data.startswith(b"POST"):
        assert forwarded[0][2] == b"hello"
        assert (b"content-length", b"5") in [(n.lower(), v) for n, v in forwarded[0][3]]
