"""Small responses leave a TLS connection as one record, not one per piece.

uvloop's SSL transport encrypts each piece handed to ``writelines`` separately; the gateway
joins the pieces of a small write first (``fsmfast.proxy.states.one_record``). Checked on the
proxy core in memory: what the client transport is handed for one proxied response.
"""

from __future__ import annotations

import pytest

from fsmfast.proxy.states import TLS_RECORD, one_record
from tests.support.memproxy import MemoryProxy

REQUEST = b"GET /x HTTP/1.1\r\nHost: h.test\r\n\r\n"
RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"


def test_one_record_joins_up_to_a_record() -> None:
    assert one_record([b"ab", b"", b"c"]) == b"abc"
    assert one_record([b"x" * (TLS_RECORD - 1), b"y"]) == b"x" * (TLS_RECORD - 1) + b"y"
    assert one_record([b"x" * TLS_RECORD, b"y"]) is None
    assert one_record([]) == b""


@pytest.mark.parametrize(("tls", "pieces"), [(True, 1), (False, 2)])
def test_a_small_response_is_one_write_on_tls(tls: bool, pieces: int) -> None:
    proxy = MemoryProxy(upstream_connections=1)
    try:
        proxy.client.over_tls = tls
        proxy.client.data_received(REQUEST)
        conn, transport, _ = proxy.upstreams[0]
        assert transport.data().startswith(b"GET /x HTTP/1.1\r\n")
        conn.data_received(RESPONSE)
        written = proxy.client_t.written
        assert len(written) == pieces, written
        head, body = b"".join(written).split(b"\r\n\r\n", 1)
        assert head.startswith(b"HTTP/1.1 200 OK\r\n") and body == b"hello"
    finally:
        proxy.close()
