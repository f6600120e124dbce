"""A per-connection byte-rate throttle (RateLimitPolicy ``ports[].bps``, issue 20): its arithmetic,
``ByteRate``, and the shim that applies it to every connection of a port, ``Throttled``.

What is counted is the bytes of the client's connection on the wire, each direction, per connection:
on an HTTPS or TLS port the encrypted bytes (TLS records and the handshake), on a TCP or HTTP port the
bytes as sent; whatever the port serves (HTTP, a WebSocket after its upgrade, a TCP or TLS tunnel,
before its upstream connects too). FSM applies Pipy's ``throttleDataRate`` to both directions of the
chain in the same way.

The arithmetic: a token bucket of one second's worth of bytes, refilled at ``bps`` bytes a second, one
per direction. It is kept as one number, the time its debt is paid (GCRA's "theoretical arrival time"):
the bytes that may go at ``now`` are ``bps * min(1, now - paid)``, and sending ``n`` bytes moves
``paid`` on by ``n / bps`` from no earlier than ``now - 1`` (a full bucket). A connection starts full,
so its first second's worth goes at once (at 2048 B/s, 8 KiB takes 3 s: 2 KiB at once, then 2 KiB a
second); over any span of ``T`` seconds at most ``bps * (T + 1)`` bytes go.

The shim: the port's protocol factory (``fsmfast.proxy.ports.connection_for``) wraps the protocol the
port serves with (a ``ClientConnection``, the ``TLSLink`` of an HTTPS or TLS-terminate port, a
``Tunnel``) in a ``Throttled``, which the loop talks to; the wrapped protocol gets a
``ThrottledTransport`` in front of the real one. Ports without a byte rate get neither: nothing runs
for them per connection.

- Client to gateway: a read is passed on as far as the bucket allows; the rest of it is held, the
  real transport stops reading, and a ``call_later`` passes the rest on as the bucket refills, then
  reading resumes. The kernel's socket buffers fill and TCP flow control slows the client.
- Gateway to client: a write goes to the real transport as far as the bucket allows; the rest is held
  and the wrapped protocol is told ``pause_writing()``, which stops it reading its upstream (the same
  back-pressure as a full write buffer); ``resume_writing()`` once the held bytes went out.
- Never more is held than one read and what the wrapped protocol wrote after being told to pause (it
  stops reading its upstream at once, so at most what it had already read). While bytes are held, every
  write tells the wrapped protocol to pause again: an HTTP connection passes the news to the request
  being answered, and a later request on the same connection must hear it too.
- A pause for the rate and the wrapped protocol's own pause (its back-pressure), or the real
  transport's full write buffer, are two reasons kept as two flags: the real transport reads, the
  wrapped protocol writes, only when neither holds.
- ``close()`` and ``write_eof()`` wait for the held bytes; ``abort()`` drops them. After the connection
  is lost the timers are cancelled.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterable
from typing import Any


class ByteRate:
    """One direction of one connection: ``bps`` bytes a second (an integer, at least 1), bursts of at
    most one second's worth. Times are CLOCK_MONOTONIC seconds (``loop.time()``)."""

    __slots__ = ("_paid", "bps")

    def __init__(self, bps: int) -> None:
        if isinstance(bps, bool) or not isinstance(bps, int) or bps < 1:
            raise ValueError(f"bps {bps!r} is not a whole number of bytes a second, at least 1")
        self.bps = bps
        self._paid = -math.inf  # long paid: a full bucket

    def allowance(self, now: float) -> int:
        """How many bytes may be written at ``now`` without waiting (0 while in debt)."""
        credit = now - self._paid
        if credit <= 0:
            return 0
        # The floor, so that the bytes allowed never exceed the credit, but for a thousandth of a byte:
        # the rounding of times in the millions of seconds must not lose a whole byte that
        # ``ready_in`` promised. At most one second's worth.
        return self.bps if credit >= 1.0 else int(credit * self.bps + 0.001)

    def ready_in(self, nbytes: int, now: float) -> float:
        """Seconds from ``now`` until ``nbytes`` (at most one second's worth counts) may be written."""
        wait = self._paid + min(nbytes, self.bps) / self.bps - now
        return wait if wait > 0 else 0.0

    def pause_for(self, nbytes: int, now: float) -> float:
        """Count ``nbytes`` written at ``now``; the seconds to wait before writing (reading) more, 0
        when the bucket still holds credit."""
        self._paid = max(self._paid, now - 1.0) + nbytes / self.bps
        wait = self._paid - now
        return wait if wait > 0 else 0.0


# Why reading (writing) is stopped; either keeps it stopped.
_RATE = 1  # the bucket: bytes are held until it refills
_INNER = 2  # reading: the wrapped protocol paused it; writing: the real transport's buffer is full
_CLOSING = 4  # reading: the wrapped protocol closed, and the held bytes still go out
# Timers fire to the millisecond: a bucket this close to holding what waits lets it go (counted in
# full, so the rate over time is unchanged).
_EARLY = 0.002


def _release(rate: ByteRate, held: int, now: float) -> int:
    """A timer fired: how many of the ``held`` bytes go now (counted against ``rate``)."""
    n = min(rate.allowance(now + _EARLY), held)
    if n:
        rate.pause_for(n, now)
    return n


# What the real transport is asked once the held bytes went out.
_CLOSE, _WRITE_EOF = 1, 2


class Throttled:
    """The protocol the loop talks to on a throttled port: the byte rate of client-to-gateway bytes,
    and the real transport's news for the ``ThrottledTransport`` (see the module docstring)."""

    __slots__ = ("_eof", "_held", "_off", "_timer", "inner", "loop", "rate", "real", "transport")

    def __init__(self, inner: Any, bps: int, loop: asyncio.AbstractEventLoop) -> None:
        self.inner = inner
        self.loop = loop
        self.rate = ByteRate(bps)
        self.real: Any = None  # the TCP transport (uvloop's quack like asyncio's)
        self.transport = ThrottledTransport(self, ByteRate(bps))
        self._held = b""  # the part of the last read the bucket did not allow yet
        self._off = 0  # why the real transport is not read (_RATE, _INNER, _CLOSING)
        self._timer: asyncio.TimerHandle | None = None
        self._eof = False  # the client's EOF came while bytes were held

    def connection_made(self, transport: Any) -> None:
        self.real = transport
        self.inner.connection_made(self.transport)

    def data_received(self, data: bytes) -> None:
        if self._held or self._off & _CLOSING:
            # Read although paused (a transport may finish the read it was in): behind what waits.
            if not self._off & _CLOSING:
                self._held += data
            return
        rate = self.rate
        now = self.loop.time()
        n = rate.allowance(now)
        size = len(data)
        if n >= size:
            rate.pause_for(size, now)
            self.inner.data_received(data)
            return
        if n:
            rate.pause_for(n, now)
        self._held = data[n:]
        self._pause(_RATE)
        self._arm(now)
        if n:
            self.inner.data_received(data[:n])

    def eof_received(self) -> bool | None:
        if not self._held:
            return self.inner.eof_received()  # type: ignore[no-any-return]
        self._eof = True  # passed on after the held bytes; the transport stays open until then
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop()
        self.transport._stop()
        self.real = None
        self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self.transport._pause(_INNER)

    def resume_writing(self) -> None:
        self.transport._resume(_INNER)

    # -- client to gateway ----------------------------------------------------------------

    def _arm(self, now: float) -> None:
        if self._timer is None:
            self._timer = self.loop.call_later(self.rate.ready_in(len(self._held), now), self._pass_on)

    def _pass_on(self) -> None:
        """The timer: what the bucket now allows of the held bytes goes to the wrapped protocol."""
        self._timer = None
        held = self._held
        if not held or self._off & _INNER or self.real is None:
            return  # the wrapped protocol's resume_reading re-arms
        now = self.loop.time()
        n = _release(self.rate, len(held), now)
        if n < len(held):
            self._held = held[n:]
            self._arm(now)
            if n:
                self.inner.data_received(held[:n])
            return
        self._held = b""
        if not self._eof:
            self._resume(_RATE)
            self.inner.data_received(held)
            return
        # The client's EOF came behind these bytes: nothing more to read, the EOF is passed on now.
        self._eof = False
        self.inner.data_received(held)
        real = self.real
        if real is not None and not real.is_closing() and not self.inner.eof_received():
            real.close()  # what the transport does when a protocol does not keep it open

    def _pause(self, why: int) -> None:
        real = self.real
        if not self._off and real is not None and not real.is_closing():
            real.pause_reading()
        self._off |= why

    def _resume(self, why: int) -> None:
        if not self._off & why:
            return
        self._off &= ~why
        real = self.real
        if not self._off and real is not None and not real.is_closing():
            real.resume_reading()

    def _stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._held = b""
        self._eof = False


class ThrottledTransport:
    """The wrapped protocol's transport: the byte rate of gateway-to-client bytes, and everything else
    passed to the real transport (see the module docstring)."""

    __slots__ = ("_ending", "_held", "_off", "_timer", "rate", "shim")

    def __init__(self, shim: Throttled, rate: ByteRate) -> None:
        self.shim = shim
        self.rate = rate
        self._held = b""  # written, waiting for the bucket
        self._off = 0  # why the wrapped protocol is told not to write (_RATE, _INNER)
        self._timer: asyncio.TimerHandle | None = None
        self._ending = 0  # _CLOSE or _WRITE_EOF, once the held bytes went out

    # -- writing ---------------------------------------------------------------------------

    def write(self, data: bytes | bytearray | memoryview) -> None:
        real = self.shim.real
        if real is None or self._ending:
            return  # as a closing transport: what is written after close() is dropped
        if self._held:
            self._held += data
            self.shim.inner.pause_writing()  # again: the HTTP request now answered may not know yet
            return
        rate = self.rate
        now = self.shim.loop.time()
        n = rate.allowance(now)
        size = len(data)
        if n >= size:
            rate.pause_for(size, now)
            real.write(data)
            return
        if n:
            rate.pause_for(n, now)
            real.write(data[:n])
        self._held = bytes(data[n:])
        self._arm(now)
        self._off |= _RATE
        self.shim.inner.pause_writing()  # told even when already paused (see write's first branch)

    def writelines(self, pieces: Iterable[bytes | bytearray | memoryview]) -> None:
        if type(pieces) is not list:
            pieces = list(pieces)
        if not self._held and self.shim.real is not None and not self._ending:
            size = 0
            for piece in pieces:
                size += len(piece)
            now = self.shim.loop.time()
            if self.rate.allowance(now) >= size:
                self.rate.pause_for(size, now)
                self.shim.real.writelines(pieces)
                return
        self.write(b"".join(pieces))

    def _arm(self, now: float) -> None:
        if self._timer is None:
            self._timer = self.shim.loop.call_later(self.rate.ready_in(len(self._held), now), self._send)

    def _send(self) -> None:
        """The timer: what the bucket now allows of the held bytes goes to the real transport."""
        self._timer = None
        real = self.shim.real
        held = self._held
        if real is None or not held:
            return
        now = self.shim.loop.time()
        n = _release(self.rate, len(held), now)
        if n < len(held):
            self._held = held[n:]
            self._arm(now)
            if n:
                real.write(held[:n])
            return
        self._held = b""
        real.write(held)
        ending, self._ending = self._ending, 0
        if ending == _CLOSE:
            real.close()
            return
        if ending == _WRITE_EOF:
            real.write_eof()
        self._resume(_RATE)

    def _pause(self, why: int) -> None:
        was = self._off
        self._off |= why
        if not was:
            self.shim.inner.pause_writing()

    def _resume(self, why: int) -> None:
        if not self._off & why:
            return
        self._off &= ~why
        if not self._off and self.shim.real is not None:
            self.shim.inner.resume_writing()

    def _stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._held = b""
        self._ending = 0

    def get_write_buffer_size(self) -> int:
        real = self.shim.real
        return len(self._held) + (real.get_write_buffer_size() if real is not None else 0)

    # -- ending ----------------------------------------------------------------------------

    def close(self) -> None:
        shim = self.shim
        real = shim.real
        if real is None or self._ending == _CLOSE:
            return
        if not self._held:
            real.close()
            return
        # The held bytes still go out, at the rate; nothing more is read (a closed transport reads no more).
        self._ending = _CLOSE
        shim._stop()
        shim._pause(_CLOSING)

    def write_eof(self) -> None:
        real = self.shim.real
        if real is None or self._ending:
            return
        if self._held:
            self._ending = _WRITE_EOF
        else:
            real.write_eof()

    def abort(self) -> None:
        self._stop()
        self.shim._stop()
        real = self.shim.real
        if real is not None:
            real.abort()

    def is_closing(self) -> bool:
        real = self.shim.real
        return self._ending == _CLOSE or real is None or bool(real.is_closing())

    def can_write_eof(self) -> bool:
        real = self.shim.real
        return real is not None and bool(real.can_write_eof())

    # -- reading ---------------------------------------------------------------------------

    def pause_reading(self) -> None:
        self.shim._pause(_INNER)

    def resume_reading(self) -> None:
        shim = self.shim
        shim._resume(_INNER)
        if shim._held and shim.real is not None:
            shim._arm(shim.loop.time())  # held while the wrapped protocol did not read

    def is_reading(self) -> bool:
        shim = self.shim
        return not shim._off & (_INNER | _CLOSING) and shim.real is not None and not shim.real.is_closing()

    # -- the rest: the real transport's ----------------------------------------------------

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        real = self.shim.real
        return real.get_extra_info(name, default) if real is not None else default

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        real = self.shim.real
        if real is not None:
            real.set_write_buffer_limits(high, low)

    def get_write_buffer_limits(self) -> tuple[int, int]:
        real = self.shim.real
        return real.get_write_buffer_limits() if real is not None else (0, 0)

    def set_protocol(self, protocol: Any) -> None:
        # A WebSocket upgrade hands the connection to a tunnel: the throttle stays, the protocol changes.
        self.shim.inner = protocol

    def get_protocol(self) -> Any:
        return self.shim.inner
