"""HTTPRoute ``timeouts``: one loop timer per request of a rule that sets them.

- ``request``: from the moment the request head is routed until the response is complete
  (Gateway API: the time the gateway has to respond to the client), queueing behind
  pipelined requests included;
- ``backendRequest``: per upstream attempt, from the start of sending it until its response
  is complete (re-armed when a stale pooled connection is retried).

On expiry before the response head went out the client gets 504; after it, the response
cannot be changed any more and the connection is aborted, like any truncated response. The
worker's ``--response-timeout`` (upstream silence) still applies as well.

The timer is a loop ``call_later`` handle: precise to the millisecond, unlike the worker's
quarter-second tick, and cancelled as soon as the exchange ends. Requests of rules without
timeouts never create one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fsmfast.config.duration import format_duration

if TYPE_CHECKING:
    import asyncio

    from fsmfast.proxy.exchange import Exchange
    from fsmfast.snapshot import Timeouts


class RouteTimer:
    __slots__ = ("backend", "ex", "handle", "loop", "request_at", "request_s")

    def __init__(self, ex: Exchange, loop: asyncio.AbstractEventLoop, timeouts: Timeouts) -> None:
        self.ex = ex
        self.loop = loop
        self.request_s = timeouts.request
        self.backend = timeouts.backend_request
        self.request_at = loop.time() + timeouts.request if timeouts.request else None
        self.handle: asyncio.TimerHandle | None = None
        if self.request_at is not None:
            self.handle = loop.call_at(self.request_at, self._fire, "request")

    def backend_started(self) -> None:
        """An upstream attempt begins: its own limit runs from now (the request's keeps running)."""
        if self.backend is None:
            return
        at = self.loop.time() + self.backend
        if self.handle is not None:
            self.handle.cancel()
        if self.request_at is not None and self.request_at <= at:
            self.handle = self.loop.call_at(self.request_at, self._fire, "request")
        else:
            self.handle = self.loop.call_at(at, self._fire, "backendRequest")

    def cancel(self) -> None:
        if self.handle is not None:
            self.handle.cancel()
            self.handle = None

    def _fire(self, which: str) -> None:
        self.handle = None
        seconds = self.request_s if which == "request" else self.backend
        self.ex.route_timed_out(f"route timeout {which} {format_duration(seconds or 0)} expired")
