"""Responses the gateway writes itself (errors), precomputed where they never change."""

from __future__ import annotations

from http import HTTPStatus

REASONS: dict[int, bytes] = {s.value: s.phrase.encode() for s in HTTPStatus}
REASONS[421] = b"Misdirected Request"


def reason_phrase(status: int) -> bytes:
    return REASONS.get(status, b"Unknown")


def error_response(status: int, body: str, *, http11: bool = True, close: bool = False, location: bytes = b"") -> bytes:
    """A complete plain-text response. The body is one line saying why, for curl users.

    ``location`` makes it a redirect (HTTPRoute RequestRedirect).
    """
    payload = body.encode("utf-8", "replace") + b"\n"
    head = [
        b"HTTP/1.1 " if http11 else b"HTTP/1.0 ",
        b"%d %s\r\n" % (status, reason_phrase(status)),
        b"Location: %s\r\n" % location if location else b"",
        b"Content-Type: text/plain; charset=utf-8\r\n",
        b"Content-Length: %d\r\n" % len(payload),
        b"Connection: close\r\n" if close else (b"" if http11 else b"Connection: keep-alive\r\n"),
        b"\r\n",
    ]
    return b"".join(head) + payload


CONTINUE_100 = b"HTTP/1.1 100 Continue\r\n\r\n"
