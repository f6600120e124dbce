"""The access log's formats: nginx's combined line (escapes, absent headers, L4 connections, the cut to one
atomic write) and the choice of format when the log is made."""

from __future__ import annotations

import asyncio
import json
import os
import re
import time
from collections.abc import Iterator
from datetime import datetime

import pytest

from fsmfast.proxy import accesslog
from fsmfast.proxy.accesslog import AccessLog, combined_line, escape

WHEN = b"05/Dec/2026:10:33:17 +0100"
ENTRY = {
    "client": "192.0.2.7",
    "method": "GET",
    "path": "/a?b=1",
    "http": "1.1",
    "status": 200,
    "bytes": 12,
    "request_id": "9259e8be60d8fc8e0000000000000001",
}


@pytest.mark.parametrize(
    ("raw", "logged"),
    [
        (b"plain text/1.0 (x; y)", b"plain text/1.0 (x; y)"),
        (b'say "hi"', b"say \\x22hi\\x22"),
        (b"back\\slash", b"back\\x5Cslash"),
        (b"tab\there", b"tab\\x09here"),
        (b"\x00\x1f\x7f", b"\\x00\\x1F\\x7F"),
        (b"caf\xc3\xa9", b"caf\\xC3\\xA9"),
        (b"~!#$%&'()*+,-./:;<=>?@[]^_`{|}", b"~!#$%&'()*+,-./:;<=>?@[]^_`{|}"),
    ],
)
def test_escape_is_nginxs(raw: bytes, logged: bytes) -> None:
    # ngx_http_log_escape: control bytes, '"', '\', DEL and above as \xHH (upper-case hex).
    assert escape(raw) == logged


def test_combined_line() -> None:
    headers = [
        (b"Host", b"h.test"),
        (b"user-agent", b"curl/8.5.0"),
        (b"REFERER", b"https://a.example/"),
        (b"Referer", b"https://second.example/"),  # the first one is logged, as nginx's $http_referer
    ]
    line = combined_line(dict(ENTRY), headers, WHEN)
    assert line == (
        b'192.0.2.7 - - [05/Dec/2026:10:33:17 +0100] "GET /a?b=1 HTTP/1.1" 200 12 "https://a.example/" '
        b'"curl/8.5.0" "9259e8be60d8fc8e0000000000000001"\n'
    )


def test_absent_fields_are_dashes() -> None:
    refused = {"client": "192.0.2.7", "method": "-", "path": "-", "http": "1.1", "status": 400, "bytes": 0}
    assert combined_line(refused, [], WHEN) == b'192.0.2.7 - - [05/Dec/2026:10:33:17 +0100] "-" 400 0 "-" "-" "-"\n'
    l4 = {"client": "192.0.2.7", "protocol": "tls-passthrough", "port": 443, "bytes": 5120, "reason": None}
    assert combined_line(l4, None, WHEN) == (
        b'192.0.2.7 - - [05/Dec/2026:10:33:17 +0100] "tls-passthrough 443" - 5120 "-" "-" "-"\n'
    )


def test_the_request_line_keeps_its_bytes() -> None:
    # The JSON fields hold the bytes decoded as latin-1; the combined line shows the bytes, escaped.
    entry = dict(ENTRY, path="/caf\xc3\xa9\x01", http="1.0")
    assert b'"GET /caf\\xC3\\xA9\\x01 HTTP/1.0"' in combined_line(entry, [], WHEN)


@pytest.mark.parametrize("byte", [b"a", b"\xff"])
def test_a_long_line_is_cut_to_one_atomic_write(byte: bytes) -> None:
    # \xff is four bytes once escaped: the cut goes further until the line fits.
    entry = dict(ENTRY, path="/" + (byte * 7000).decode("latin-1"))
    headers = [(b"User-Agent", byte * 6000), (b"Referer", byte * 6000)]
    line = combined_line(entry, headers, WHEN)
    assert len(line) <= accesslog.LINE_MAX and line.endswith(b'"9259e8be60d8fc8e0000000000000001"\n')
    fields = re.findall(rb'"([^"]*)"', line)
    assert fields[0].endswith(b"...[cut from %d]" % len(b"GET /" + byte * 7000 + b" HTTP/1.1"))
    assert fields[1].endswith(b"...[cut from 6000]") and fields[2].endswith(b"...[cut from 6000]")


def test_an_unknown_format_is_refused() -> None:
    loop = asyncio.new_event_loop()
    try:
        with pytest.raises(ValueError, match="xml"):
            AccessLog(loop, fmt="xml")
    finally:
        loop.close()


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    r, w = os.pipe()
    yield r, w
    os.close(r)
    os.close(w)


@pytest.mark.parametrize("fmt", ["json", "combined"])
def test_the_format_is_chosen_when_the_log_is_made(pipe: tuple[int, int], fmt: str) -> None:
    r, w = pipe
    loop = asyncio.new_event_loop()
    try:
        log = AccessLog(loop, fd=w, fmt=fmt)
        before = time.time()
        log.write(dict(ENTRY), [(b"User-Agent", b"ua")])
        log.write(dict(ENTRY, status=404), [])
        log.flush()
        lines = os.read(r, 65536).splitlines()
    finally:
        loop.close()
    assert len(lines) == 2
    if fmt == "json":
        first = json.loads(lines[0])
        assert first["request_id"] == ENTRY["request_id"] and "ts" in first
        return
    when = re.search(rb"\[([^]]+)\]", lines[0])
    assert when is not None
    logged = datetime.strptime(when.group(1).decode(), "%d/%b/%Y:%H:%M:%S %z")
    assert abs(logged.timestamp() - before) < 5
    assert logged.utcoffset() == datetime.fromtimestamp(before).astimezone().utcoffset()
    assert lines[0].endswith(b' 200 12 "-" "ua" "9259e8be60d8fc8e0000000000000001"')
    assert lines[1].endswith(b' 404 12 "-" "-" "9259e8be60d8fc8e0000000000000001"')
