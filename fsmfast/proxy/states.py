"""The states of an ``Exchange`` (see fsmfast.proxy.exchange for the machine), the two
exceptions that end one early (its parser stop and an upstream failure).

A module of their own: the compiled modules (fsmfast/_compiled.py) import each other's types
while they initialize, before their module bodies run; what they share besides types lives here.
"""

from __future__ import annotations

QUEUED, CONNECTING, SENDING, RESPONDING, DONE = range(5)


class StopParsing(Exception):
    """Raised from a parser callback once the exchange has answered for itself (a 413)."""


class UpstreamError(Exception):
    """Why an upstream could not serve: ``code`` for the access log, ``status`` for the client.

    ``message`` says everything (the error log's); ``public`` is what any client may read: what
    failed, without the namespace, Service, endpoint address or a parser's internal message
    (the client's body carries ``message`` only where detailed errors are on).
    """

    def __init__(self, code: str, message: str, status: int = 502, *, public: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status
        self.public = public
