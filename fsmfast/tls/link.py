"""TLS over a TCP transport: the protocol of the TCP connection and the transport of the app's.

Both ends of the gateway speak TLS through this link, not through the loop's SSL protocol:
terminating listeners (``fsmfast.tls.listener``) and upstreams under an UpstreamTLSPolicy
(``fsmfast.proxy.upstream``). The handshake runs in Python's ``ssl`` over memory BIOs (SNI
callback, verification, sessions and alerts work as anywhere else); after it, records go
through ``Records``, which calls OpenSSL directly when it can (``fsmfast.tls._records``), so a
request costs one C call each way instead of the loop's chain of Python-level ones.

The life of a link is explicit: HANDSHAKE, then OPEN (records flow; the app has its
``connection_made``), then CLOSED. An app's ``close()`` sends close_notify and closes the TCP
transport once what is buffered is written, without waiting for the peer's close_notify (as
nginx); a TCP EOF or a TLS error ends the link, and the app hears ``connection_lost`` with the
error. A TLS connection cannot half-close: ``can_write_eof()`` is false, as for the loop's.

Flow control is the TCP transport's: ciphertext is written as soon as it is sealed, so its
buffer is the only one; its pause/resume_writing reach the app, and the app's
pause/resume_reading reach it.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable, Iterable
from typing import Any

from fsmfast._compiled import extension
from fsmfast.tls import records as _twin

# The compiled record layer, or None for the twin (fsmfast._compiled decides, as for every native piece).
_direct: Any = extension("fsmfast.tls._records")

HANDSHAKE = 0
OPEN = 1
CLOSED = 2

# The most plaintext one TLS record carries: pieces up to that size in all are sealed together.
TLS_RECORD = 16384

# What a link needs to start: the SSLObject and its two memory BIOs.
Opened = tuple[ssl.SSLObject, ssl.MemoryBIO, ssl.MemoryBIO]


def new_records(sslobj: ssl.SSLObject, incoming: ssl.MemoryBIO, outgoing: ssl.MemoryBIO) -> Any:
    """The compiled record layer where this interpreter allows it, else the twin."""
    if _direct is not None:
        try:
            return _direct.Records(sslobj, incoming, outgoing)
        except _direct.Unavailable:
            pass
    return _twin.Records(sslobj, incoming, outgoing)


def direct_unavailable() -> str | None:
    """Why records do not go to OpenSSL directly here, or None when they do."""
    if _direct is None:
        return "fsmfast.tls._records is not built or extensions are off"
    return _direct.UNAVAILABLE  # type: ignore[no-any-return]


class TLSLink:
    """One TLS connection. ``open`` makes its SSLObject once the TCP connection exists (a
    server's SNI callback wants to know the peer); ``ready``, if given, learns how the handshake
    ended; ``failed``, if given, is called with the error of a failed handshake, once (a listener
    counts it); ``handshake_timeout`` (seconds, or None) bounds it."""

    __slots__ = (
        "_incoming",
        "_open",
        "_outgoing",
        "_timeout",
        "_timer",
        "app",
        "closing",
        "direct",
        "error",
        "failed",
        "loop",
        "raw",
        "ready",
        "records",
        "sslobj",
        "state",
    )

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        app: Any,
        open: Callable[[asyncio.BaseTransport], Opened],
        handshake_timeout: float | None,
        ready: asyncio.Future[None] | None = None,
        failed: Callable[[BaseException], None] | None = None,
    ) -> None:
        self.loop = loop
        self.app = app
        self.failed = failed
        self._open: Callable[[asyncio.BaseTransport], Opened] | None = open
        self._timeout = handshake_timeout
        self._timer: asyncio.TimerHandle | None = None
        self.ready = ready
        self.raw: Any = None  # the TCP transport (uvloop's transports quack like asyncio's)
        self.sslobj: ssl.SSLObject | None = None
        self._incoming: ssl.MemoryBIO | None = None
        self._outgoing: ssl.MemoryBIO | None = None
        self.records: Any = None
        # The same object when it is the compiled record layer: the compiled link then calls it
        # in C (its .pxd types this attribute); None for the twin.
        self.direct: Any = None
        self.state = HANDSHAKE
        self.closing = False
        self.error: BaseException | None = None

    # -- the TCP connection's protocol -----------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.raw = transport
        open_bios, self._open = self._open, None  # once; and its closure is not kept alive
        assert open_bios is not None, "connection_made twice"
        try:
            self.sslobj, self._incoming, self._outgoing = open_bios(transport)
        except Exception as exc:
            self._handshake_failed(exc)
            return
        if self._timeout is not None:
            self._timer = self.loop.call_later(self._timeout, self._handshake_timed_out)
        self._handshake()

    def data_received(self, data: bytes) -> None:
        if self.state == OPEN:
            direct = self.direct
            try:
                if direct is not None:
                    plain = direct.unseal(data)
                    answer, closed = direct.wants_write, direct.closed
                else:
                    records = self.records
                    plain = records.unseal(data)
                    answer, closed = records.wants_write, records.closed
            except ssl.SSLError as exc:
                self._fail(exc)
                return
            if answer:
                self.raw.write(self.records.outgoing())
            if plain:
                self.app.data_received(plain)
            if closed and self.state == OPEN:
                self._peer_closed()
        elif self.state == HANDSHAKE and self._incoming is not None:
            self._incoming.write(data)
            self._handshake()

    def eof_received(self) -> bool:
        # Without close_notify a TCP EOF may be a truncation attack: it ends the link like a
        # broken connection, and the app is not told "end of stream" (the loop's SSL does the same).
        if self.state == HANDSHAKE:
            self._handshake_failed(ConnectionResetError("connection closed during the TLS handshake"))
        return False

    def connection_lost(self, exc: BaseException | None) -> None:
        self._cancel_timer()
        was = self.state
        self.state = CLOSED
        self.closing = True
        self.raw = None
        if was == HANDSHAKE:
            error = self.error or exc or ConnectionResetError("connection closed during the TLS handshake")
            if self.error is None:
                self._tell_failed(error)  # reset mid-handshake: no EOF came first
            self._wake(error)
            return
        app = self.app
        if app is not None:
            app.connection_lost(self.error or exc)

    def pause_writing(self) -> None:
        if self.state == OPEN:
            self.app.pause_writing()

    def resume_writing(self) -> None:
        if self.state == OPEN:
            self.app.resume_writing()

    # -- the app's transport ---------------------------------------------------------------

    def write(self, data: bytes) -> None:
        self._send(data)

    def writelines(self, pieces: Iterable[bytes]) -> None:
        # A response head and a short body become one record (one seal, one TCP write) rather than
        # a record each; larger pieces are sealed one by one instead of copied into one buffer.
        if type(pieces) is not list:
            pieces = list(pieces)
        size = 0
        for piece in pieces:
            size += len(piece)
        if size <= TLS_RECORD or self.state != OPEN or self.closing:
            self._send(pieces[0] if len(pieces) == 1 else b"".join(pieces))
            return
        seal = self.records.seal
        try:
            sealed = [seal(piece) for piece in pieces]
        except ssl.SSLError as exc:
            self._fail(exc)
            return
        self.raw.writelines(sealed)

    def _send(self, data: bytes) -> None:
        if self.state != OPEN or self.closing:
            return  # as a closed transport: what is written after close() is dropped
        direct = self.direct
        try:
            cipher = direct.seal(data) if direct is not None else self.records.seal(data)
        except ssl.SSLError as exc:
            self._fail(exc)
            return
        self.raw.write(cipher)

    def close(self) -> None:
        if self.closing:
            return
        self.closing = True
        raw = self.raw
        if raw is None:
            return
        if self.state == OPEN:
            try:
                tail = self.records.close_notify()
            except ssl.SSLError:
                tail = b""
            if tail:
                raw.write(tail)
        elif self.state == HANDSHAKE:
            self._handshake_failed(ConnectionAbortedError("closed during the TLS handshake"))
            return
        raw.close()

    def abort(self) -> None:
        self.closing = True
        if self.raw is not None:
            self.raw.abort()

    def is_closing(self) -> bool:
        return self.closing or self.raw is None or self.raw.is_closing()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        sslobj = self.sslobj
        if sslobj is not None and self.state != HANDSHAKE:
            if name == "ssl_object":
                return sslobj
            if name == "sslcontext":
                return sslobj.context
            if name == "peercert":
                return sslobj.getpeercert()
            if name == "cipher":
                return sslobj.cipher()
            if name == "compression":
                return sslobj.compression()
        raw = self.raw
        return raw.get_extra_info(name, default) if raw is not None else default

    def pause_reading(self) -> None:
        if self.raw is not None:
            self.raw.pause_reading()

    def resume_reading(self) -> None:
        if self.raw is not None:
            self.raw.resume_reading()

    def is_reading(self) -> bool:
        return self.raw is not None and self.raw.is_reading()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        if self.raw is not None:
            self.raw.set_write_buffer_limits(high, low)

    def get_write_buffer_size(self) -> int:
        return self.raw.get_write_buffer_size() if self.raw is not None else 0

    def can_write_eof(self) -> bool:
        return False

    def write_eof(self) -> None:
        raise NotImplementedError("a TLS connection cannot half-close")

    def set_protocol(self, protocol: Any) -> None:
        self.app = protocol

    def get_protocol(self) -> Any:
        return self.app

    # -- handshake -------------------------------------------------------------------------

    def _handshake(self) -> None:
        sslobj = self.sslobj
        assert sslobj is not None
        try:
            sslobj.do_handshake()
        except ssl.SSLWantReadError:
            self._send_queued()
            return
        except Exception as exc:  # SSLError, CertificateError; an SNI callback's alert too
            self._send_queued()  # the alert: the peer learns why ("unknown ca", "certificate required")
            self._handshake_failed(exc)
            return
        self._send_queued()
        self._cancel_timer()
        assert self._incoming is not None and self._outgoing is not None
        self.records = new_records(sslobj, self._incoming, self._outgoing)
        if _direct is not None and type(self.records) is _direct.Records:
            self.direct = self.records
        self.state = OPEN
        self.failed = None
        self.app.connection_made(self)
        self._wake(None)
        # The peer's first records may have come with its last handshake flight (a client's
        # request right after its Finished, a server's session tickets).
        if self.state == OPEN and self._incoming.pending:
            self.data_received(b"")

    def _send_queued(self) -> None:
        outgoing, raw = self._outgoing, self.raw
        if outgoing is not None and outgoing.pending and raw is not None and not raw.is_closing():
            raw.write(outgoing.read())

    def _handshake_failed(self, exc: BaseException) -> None:
        self._cancel_timer()
        if self.error is None:
            self._tell_failed(exc)
        self.error = exc
        self.closing = True
        self._wake(exc)
        if self.raw is not None:
            self.raw.close()  # close, not abort: the alert just written still goes out

    def _tell_failed(self, exc: BaseException) -> None:
        failed, self.failed = self.failed, None  # once
        if failed is not None:
            failed(exc)

    def _handshake_timed_out(self) -> None:
        self._timer = None
        if self.state != HANDSHAKE:
            return
        self._handshake_failed(TimeoutError(f"TLS handshake took longer than {self._timeout:g}s"))
        if self.raw is not None:
            self.raw.abort()

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _wake(self, exc: BaseException | None) -> None:
        ready = self.ready
        if ready is None or ready.done():
            return
        if exc is None:
            ready.set_result(None)
        else:
            ready.set_exception(exc)

    # -- the end ---------------------------------------------------------------------------

    def _peer_closed(self) -> None:
        # close_notify: the app hears end of stream, then ours goes back and the link closes
        # (the loop's SSL ignores a true eof_received too: TLS 1.2 cannot half-close).
        self.app.eof_received()
        self.close()

    def _fail(self, exc: BaseException) -> None:
        """A record could not be opened or sealed: the connection is over, the app hears why."""
        self.error = exc
        self.closing = True
        if self.raw is not None:
            self.raw.abort()
