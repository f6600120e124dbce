"""The states of an ``Exchange`` (see fsmfast.proxy.exchange for the machine), the two
exceptions that end one early (its parser stop and an upstream failure), and how pieces go
out over TLS.

A module of their own: the compiled modules (fsmfast/_compiled.py) import each other's types
while they initialize, before their module bodies run; what they share besides types lives here.
"""

from __future__ import annotations

QUEUED, CONNECTING, SENDING, RESPONDING, DONE = range(5)

TLS_RECORD = 16384  # the most plaintext one TLS record carries


def one_record(pieces: list[bytes]) -> bytes | None:
    """``pieces`` joined when they fit in one TLS record, else None.

    uvloop's SSL transport encrypts each piece given to ``writelines`` as a record of its own: a
    response head and its 12-byte body would cost two ``SSL_write`` calls (the larger part of the
    per-request TLS work) and two records on the wire. Joined, they are one.
    """
    size = 0
    for piece in pieces:
        size += len(piece)
        if size > TLS_RECORD:
            return None
    return b"".join(pieces)


class StopParsing(Exception):
    """Raised from a parser callback once the exchange has answered for itself (a 413)."""


class UpstreamError(Exception):
    """Why an upstream could not serve: ``code`` for the access log, ``status`` for the client."""

    def __init__(self, code: str, message: str, status: int = 502) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status
