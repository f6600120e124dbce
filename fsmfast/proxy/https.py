"""HTTP over a terminated TLS connection: the listener check (421) and the client certificate.

The SNI of the handshake chose one Gateway listener (``fsmfast.tls.listener``). A request
whose Host belongs to another listener of the port gets 421 Misdirected Request (Gateway
API: the listener's hostname must match both SNI and Host), so a client that reuses a
connection across names cannot reach a listener whose certificate or client-certificate
requirement it never negotiated. A Host no listener serves falls through to the router's 404.

When the port has a client-certificate header (Gateway annotation
``fsmfast.io/client-cert-header``), any copy sent by the client is removed and the verified
certificate's subject (RFC 4514) is added, so the upstream can trust the header.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from fsmfast.codec import normalize_host
from fsmfast.proxy.downstream import ClientConnection
from fsmfast.tls.listener import ListenerRuntime, PortTLS, client_subject, failure_reason, handshake_of

if TYPE_CHECKING:
    from fsmfast.proxy.exchange import Exchange
    from fsmfast.worker.context import Context


class HTTPSConnection(ClientConnection):
    def __init__(self, ctx: Context, port: int, port_tls: PortTLS, cert_header: bytes | None) -> None:
        super().__init__(ctx, port, b"https")
        self.port_tls = port_tls
        self.cert_header = cert_header
        self._cert_header_lower = cert_header.lower() if cert_header is not None else None
        self.listener: ListenerRuntime = port_tls.default
        self.cert_subject: bytes | None = None
        self.over_tls = True
        self.admit_every = cert_header is not None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        hs, sslobj = handshake_of(transport)
        if hs is not None and hs.listener is not None:
            self.listener = hs.listener
        subject = client_subject(sslobj)
        self.cert_subject = subject.encode("utf-8", "replace") if subject else None
        info: dict[str, Any] = {"sni": hs.server_name if hs is not None else None}
        if sslobj is not None:
            info["tls"] = sslobj.version()
        if subject:
            info["client_cert"] = subject
        self.tls_log = info

    def tls_failed(self, exc: BaseException) -> None:
        """The TLS handshake failed (the link tells; fsmfast.tls.link): counted, as the connection
        never got to HTTP."""
        self.ctx.stats.tls_failed(self.port, failure_reason(exc))

    def admit(self, ex: Exchange, host: bytes) -> bool:
        # Called by ClientConnection._route for a Host this connection has not admitted yet, and for
        # every request when the certificate header is configured.
        owner = self.port_tls.owner(normalize_host(host).decode("latin-1"))
        if owner is not None and owner is not self.listener:
            sni = self.tls_log.get("sni") if self.tls_log else None
            ex.set_local(
                421,
                f"host {host.decode('latin-1')!r} is served by another listener of this port than the one this"
                f" connection negotiated (TLS server name {sni or 'none'}); open a new connection for it",
                "misdirected_request",
            )
            return False
        name = self._cert_header_lower
        if name is not None:
            headers = [(n, v) for n, v in ex.headers if n.lower() != name]
            # cert_header is set whenever its lowercase form is (checked too, for the type checker).
            if self.cert_subject is not None and self.cert_header is not None:
                headers.append((self.cert_header, self.cert_subject))
            ex.headers = headers
        return True
