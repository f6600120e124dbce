"""TLS records of an established connection, through ``ssl.SSLObject``: the pure-Python twin.

Same API and behaviour as the compiled ``fsmfast.tls._records.Records``, which calls OpenSSL
directly; ``fsmfast.tls.link`` picks one per connection.
"""

from __future__ import annotations

import ssl

# What one read may ask for: a few 16 KiB records. Larger asks cost an allocation of that size.
READ_SIZE = 65536


class Records:
    """Plaintext in and out of one established TLS connection; ciphertext as bytes for its transport.

    ``unseal`` takes what the peer sent and returns the plaintext it completes (b"" when a
    record is still partial or only handshake messages came); ``closed`` turns true at the
    peer's close_notify. ``seal`` returns the records of some plaintext, preceded by anything
    OpenSSL queued on its own. ``outgoing`` is that queue alone (a TLS 1.3 key update answer,
    a session ticket): ``wants_write`` says when it is not empty. Errors are ``ssl.SSLError``.
    """

    __slots__ = ("_incoming", "_outgoing", "closed", "sslobj", "wants_write")

    def __init__(self, sslobj: ssl.SSLObject, incoming: ssl.MemoryBIO, outgoing: ssl.MemoryBIO) -> None:
        self.sslobj = sslobj
        self._incoming = incoming
        self._outgoing = outgoing
        self.closed = False
        self.wants_write = outgoing.pending > 0

    def unseal(self, data: bytes) -> bytes:
        if data:
            self._incoming.write(data)
        chunks = []
        read = self.sslobj.read
        try:
            while True:
                chunk = read(READ_SIZE)
                if not chunk:  # close_notify: SSLObject.read returns b"" from then on
                    self.closed = True
                    break
                chunks.append(chunk)
        except ssl.SSLWantReadError:
            pass
        except ssl.SSLZeroReturnError:  # close_notify after ours was sent
            self.closed = True
        except ssl.SSLError as exc:
            raise ssl.SSLError(exc.errno, f"TLS read failed: {_reason(exc)}") from exc
        finally:
            # Reading can make OpenSSL answer (a key update, an alert): the caller sends it.
            self.wants_write = self._outgoing.pending > 0
        if not chunks:
            return b""
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def seal(self, data: bytes) -> bytes:
        if len(data):
            try:
                self.sslobj.write(data)
            except ssl.SSLError as exc:
                raise ssl.SSLError(exc.errno, f"TLS write failed: {_reason(exc)}") from exc
        return self.outgoing()

    def outgoing(self) -> bytes:
        self.wants_write = False
        return self._outgoing.read()

    def close_notify(self) -> bytes:
        """Our close_notify (once; later calls return b""), after anything still queued."""
        try:
            self.sslobj.unwrap()
        except ssl.SSLError:  # want-read (the peer's close_notify not yet seen), or already failed
            pass
        return self.outgoing()


def _reason(exc: ssl.SSLError) -> str:
    # OpenSSL's reason text, as the compiled twin reports it ("decryption failed or bad record mac").
    reason = exc.reason
    return reason.lower().replace("_", " ") if reason else str(exc)
