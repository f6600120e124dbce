"""The states of an ``Exchange`` and its transition table, the two exceptions that end one
early (its parser stop and an upstream failure).

``TRANSITIONS`` is the machine: (state, event) -> next state, every move the exchange makes
(fsmfast/proxy/exchange.py, and websocket.py for the 101). An event is what drives the move,
named where the exchange takes it; where a guard picks between two moves (a lost connection is
retried or answered), each outcome is its own event. With state checks on (``FSMFAST_DEBUG_STATES=1``,
read once at import, or ``fsmfast.proxy.exchange.check_states(True)``) every transition is checked
against the table before it is taken; off, the compiled exchange pays a C ``if`` on a C flag.

A module of their own: the compiled modules (fsmfast/_compiled.py) import each other's types
while they initialize, before their module bodies run; what they share besides types lives here.
"""

from __future__ import annotations

import os
from collections.abc import Callable

QUEUED, CONNECTING, SENDING, RESPONDING, DONE, WAITING = range(6)
NAMES = ("QUEUED", "CONNECTING", "SENDING", "RESPONDING", "DONE", "WAITING")

# Every transition, in the order the diagram lists them (see ``diagram``). A local reply is any
# answer the gateway makes itself: a 404, a redirect, a 503 without endpoints, an upstream failure
# before the response head (502/504), a stalled body (408), a route timeout (504), a 413.
TRANSITIONS: dict[tuple[int, str], int] = {
    (QUEUED, "upstream_ready"): SENDING,  # at the head of the queue, an idle pooled connection is reused
    (QUEUED, "connect"): CONNECTING,  # at the head of the queue, no idle connection: a new one opens
    (QUEUED, "reply"): DONE,  # a local reply decided at the head (404, redirect, 503) or while waiting (413, 504)
    (QUEUED, "client_lost"): DONE,
    (CONNECTING, "upstream_ready"): SENDING,
    (CONNECTING, "reply"): DONE,  # connect refused, failed, timed out, TLS failure; route timeout; 413
    (CONNECTING, "client_lost"): DONE,
    (CONNECTING, "backoff"): WAITING,  # a retry policy's retry of a failed connect waits out its backoff
    (SENDING, "response_head"): RESPONDING,
    (SENDING, "retry"): CONNECTING,  # a pooled connection the server had closed: once, on a fresh one
    (SENDING, "reply"): DONE,  # upstream reset, invalid response, timeout (502/504); 408; route timeout; 413
    (SENDING, "upgrade"): DONE,  # a 101 to a WebSocket handshake: the tunnel takes over
    (SENDING, "client_lost"): DONE,
    (SENDING, "backoff"): WAITING,  # a retriable status, reset or timeout, before anything reached the client
    (RESPONDING, "response_complete"): DONE,
    (RESPONDING, "upstream_eof"): DONE,  # EOF ends a close-delimited body
    (RESPONDING, "abort"): DONE,  # the response cannot be finished: the client connection is aborted
    (RESPONDING, "client_lost"): DONE,
    (WAITING, "upstream_ready"): SENDING,  # the retry's endpoint had an idle connection
    (WAITING, "connect"): CONNECTING,
    (WAITING, "reply"): DONE,  # no endpoint left to try (503); route timeout; 413
    (WAITING, "client_lost"): DONE,
}

# Read once: the compiled exchange holds it as a C flag (see fsmfast.proxy.exchange.check_states).
CHECK_STATES = os.environ.get("FSMFAST_DEBUG_STATES", "") not in ("", "0")

# Called with (exchange, state, event, next state) on every checked transition (tests record them).
watchers: list[Callable[[object, int, str, int], None]] = []


class StateError(AssertionError):
    """A transition the table does not have: a bug in the exchange, caught by a debug build."""


def transition(ex: object, state: int, event: str, to: int) -> None:
    """Checks one transition against the table (called only with state checks on)."""
    allowed = TRANSITIONS.get((state, event))
    if allowed != to:
        expected = f"the table says {NAMES[allowed]}" if allowed is not None else "the table has no such move"
        raise StateError(f"exchange {NAMES[state]} --{event}--> {NAMES[to]}: {expected}")
    for watch in watchers:
        watch(ex, state, event, to)


def diagram() -> str:
    """The table as the lines of the diagram in fsmfast/proxy/exchange.py's docstring."""
    width = max(len(NAMES[state]) for state, _ in TRANSITIONS)
    longest = max(len(event) for _, event in TRANSITIONS)
    return "\n".join(
        f"    {NAMES[state]:<{width}} --{event}{'-' * (longest - len(event))}--> {NAMES[to]}"
        for (state, event), to in TRANSITIONS.items()
    )


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
