"""Why llhttp refused a request head, as the answer the gateway gives (a ``LocalReply``).

httptools raises one exception class for most of llhttp's errors and tells them apart only by
message, so the message is read here, in one place: the stage that reads and validates heads.
Each message this matches is pinned by tests/unit/test_head_errors.py against the installed
httptools, so an upgrade that rewords one fails there by name instead of silently turning a 505
into a 400.
"""

from __future__ import annotations

from fsmfast.pipeline.decision import LocalReply

# llhttp's messages (llhttp/src/native/...: "Invalid method encountered", "Invalid HTTP version",
# "Invalid major version", "Invalid minor version", "Pause on PRI/Upgrade" for the HTTP/2 preface).
_PREFACE = "PRI"
_METHOD = "invalid method"
_VERSION = ("Invalid HTTP version", "Invalid major version", "Invalid minor version")


def refusal(message: str, headers: list[tuple[bytes, bytes]], in_body: bool) -> LocalReply:
    """The answer to a head (or chunked body, ``in_body``) llhttp refused with ``message``.

    ``headers`` are the fields llhttp reported before it stopped: a Transfer-Encoding other than
    ``chunked`` without a Content-Length is what nginx answers 501 for, whatever llhttp said.
    """
    if not in_body:
        te = next((v for n, v in headers if n.lower() == b"transfer-encoding"), None)
        if (
            te is not None
            and te.strip(b" \t").lower() != b"chunked"
            and not any(n.lower() == b"content-length" for n, _ in headers)
        ):
            return LocalReply(501, "Transfer-Encoding other than chunked is not supported", "not_implemented")
    if _PREFACE in message:
        return LocalReply(400, "HTTP/2 connection preface on an HTTP/1.1 port", "bad_request")
    if _METHOD in message.lower():
        return LocalReply(400, "invalid method", "bad_request")
    if any(m in message for m in _VERSION):
        return LocalReply(505, "unsupported HTTP version", "http_version_not_supported")
    return LocalReply(400, f"malformed request: {message}", "bad_request")
