"""Responses the gateway writes itself (errors), precomputed where they never change."""

from __future__ import annotations

from http import HTTPStatus

REASONS: dict[int, bytes] = {s.value: s.phrase.encode() for s in HTTPStatus}
REASONS[421] = b"Misdirected Request"


def reason_phrase(status: int) -> bytes:
    return REASONS.get(status, b"Unknown")


def error_response(
    status: int,
    body: str,
    *,
    http11: bool = True,
    close: bool = False,
    location: bytes = b"",
    head: bool = False,
    headers: tuple[tuple[bytes, bytes], ...] = (),
) -> bytes:
    """A complete plain-text response. The body is one line saying why, for curl users.

    ``location`` makes it a redirect (HTTPRoute RequestRedirect). ``head``: the answer to a HEAD
    request, which has no content (RFC 9110 §9.3.2); its Content-Length still gives the size a GET
    would have got, as nginx's own error pages do.
    """
    payload = body.encode("utf-8", "replace") + b"\n"
    lines = [
        b"HTTP/1.1 " if http11 else b"HTTP/1.0 ",
        b"%d %s\r\n" % (status, reason_phrase(status)),
        b"Location: %s\r\n" % location if location else b"",
        *(b"%s: %s\r\n" % field for field in headers),
        b"Content-Type: text/plain; charset=utf-8\r\n",
        b"Content-Length: %d\r\n" % len(payload),
        b"Connection: close\r\n" if close else (b"" if http11 else b"Connection: keep-alive\r\n"),
        b"\r\n",
    ]
    if head:
        return b"".join(lines)
    lines.append(payload)
    return b"".join(lines)


CONTINUE_100 = b"HTTP/1.1 100 Continue\r\n\r\n"
