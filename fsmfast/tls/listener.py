"""Server-side TLS for terminating listeners: contexts, SNI selection, handshake logging.

How a handshake works
---------------------
Every TLS connection starts on a *dispatcher* context that has no certificate, only an SNI
callback. The callback picks the Gateway listener (most specific ``hostname`` covering the
SNI, else the port's first listener) and, within it, the certificate (exact SAN/CN, then a
wildcard, else the listener's first certificate; no SNI also means the first certificate),
and switches the connection to that certificate's context. Contexts are built once per
snapshot and reused across reloads while their material is unchanged, so no handshake and no
request ever builds one; a SIGHUP that changes a Secret only changes the contexts new
handshakes switch to, and open connections keep theirs.

Session resumption across workers
---------------------------------
OpenSSL encrypts session tickets with keys held by the context the connection *started* on
(``session_ctx``), not the one the SNI callback switched to. Python's ``ssl`` has no API to
set ticket keys (``SSL_CTX_set_tlsext_ticket_keys`` and ``SSL_CTX_set_tlsext_ticket_key_cb``
are not wrapped), and each new context gets random keys. So the dispatcher of ports without
client certificates, ``SHARED``, is created when this module is imported: the master imports
the worker code before it forks (``arbiter._start``), so every worker, respawned ones too,
inherits the same context and the same keys, and a ticket issued by one worker resumes on
any other, across reloads as well (the dispatcher holds no certificate and never changes).
The gap: those keys are never rotated while the master lives (rotation needs that missing
API); restarting the master rotates them.

Ports that require client certificates get their own dispatcher per worker (built from the
port's trust), because the verify mode is taken from the starting context too: tickets there
resume only on the same worker, and never on a port with another trust.

Why the handshake is driven from here rather than by ``create_server(ssl=...)``: the worker's
server for a port then never changes when a reload switches the port between HTTP and HTTPS,
and the handshake knows its port and peer address, so a refused client certificate is logged
with who and why (uvloop only logs TLS handshake errors in debug mode). The connection itself
is a ``fsmfast.tls.link.TLSLink``: it sends the alert of a refused handshake before it
closes, so the client hears "certificate required" or "unknown ca", not a bare EOF.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from typing import Any, TypeVar, cast

from fsmfast.snapshot import Certificate, Listener, ListenerTLS
from fsmfast.tls.certs import load_pair, rdn_string, server_context
from fsmfast.tls.link import Opened, TLSLink
from fsmfast.tls.upstream import direct_io

log = logging.getLogger("fsmfast.tls")

T = TypeVar("T")

ALPN_HTTP = ("http/1.1",)
# Handshakes in progress: a slow or silent client gets this long.
HANDSHAKE_TIMEOUT = 10.0


def _clear_strict(ctx: ssl.SSLContext) -> None:
    # Python 3.13 defaults: VERIFY_X509_STRICT rejects CAs without keyUsage, like the
    # founding blog's. Client certificates are verified the same way as upstream ones.
    strict = getattr(ssl, "VERIFY_X509_STRICT", 0)
    if strict:
        ctx.verify_flags &= ~strict


class Handshake:
    """What one connection's handshake learnt, kept on its SSLObject (``fsmfast``)."""

    __slots__ = ("listener", "peer", "port", "server_name")

    def __init__(self, port: PortTLS, peer: str) -> None:
        self.port = port
        self.peer = peer
        self.listener: ListenerRuntime | None = None
        self.server_name: str | None = None


class _ServerObject(ssl.SSLObject):
    """An SSLObject that logs why its handshake failed (uvloop only does in debug mode)."""

    fsmfast: Handshake | None
    _sslobj: Any  # CPython's private C object (ssl.SSLObject's own), which typeshed does not declare

    def do_handshake(self) -> None:
        try:
            self._sslobj.do_handshake()
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            raise
        except ssl.SSLError as exc:
            _log_refusal(self.fsmfast, exc)
            raise


# OpenSSL's reasons for bytes that are not a TLS ClientHello (random data gives the first two).
NOT_TLS = frozenset(
    (
        "WRONG_VERSION_NUMBER",
        "PACKET_LENGTH_TOO_LONG",
        "HTTP_REQUEST",
        "HTTPS_PROXY_REQUEST",
        "UNKNOWN_PROTOCOL",
        "UNEXPECTED_MESSAGE",
        "UNEXPECTED_RECORD",
        "RECORD_LAYER_FAILURE",
        "BAD_PACKET_LENGTH",
    )
)


# OpenSSL's reasons for a client that sent no certificate where the port requires one.
NO_CLIENT_CERTIFICATE = frozenset(("PEER_DID_NOT_RETURN_A_CERTIFICATE", "TLSV13_ALERT_CERTIFICATE_REQUIRED"))


def failure_reason(exc: BaseException) -> str:
    """Why a listener's handshake failed, as one of the few values of the ``reason`` label of
    fsmfast_tls_handshake_errors_total (fsmfast.metrics.blob.TLS_FAILURES), whatever OpenSSL's text."""
    if isinstance(exc, ssl.SSLError):
        if isinstance(exc, (ssl.SSLEOFError, ssl.SSLZeroReturnError)):
            return "closed"
        if isinstance(exc, ssl.SSLCertVerificationError) or exc.reason in NO_CLIENT_CERTIFICATE:
            return "client_certificate"
        if exc.reason in NOT_TLS:
            return "not_tls"
        return "protocol"  # versions, ciphers, an alert from the client (our certificate, say)
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, ConnectionError):
        return "closed"  # reset or closed mid-handshake (TCP health checks and scanners included)
    return "other"


def _log_refusal(hs: Handshake | None, exc: ssl.SSLError) -> None:
    if isinstance(exc, (ssl.SSLEOFError, ssl.SSLZeroReturnError)):
        return  # the client went away (a TCP health check, a scanner): nothing to explain
    who = f"{hs.peer} on port {hs.port.port}" if hs is not None else "a client"
    sni = f" (SNI {hs.server_name})" if hs is not None and hs.server_name else " (no SNI)"
    if isinstance(exc, ssl.SSLCertVerificationError) or exc.reason in NO_CLIENT_CERTIFICATE:
        # A client's own mistake, but one an operator setting up mutual TLS looks for: info.
        why = _describe(exc)
        log.info("TLS handshake with %s%s refused: client certificate: %s", who, sni, why)
    elif exc.reason in NOT_TLS:
        # Not TLS at all (a scanner, plain HTTP on a TLS port): routine noise, like nginx's info
        # level that its default error_log level hides.
        log.debug("TLS handshake with %s%s failed: %s", who, sni, _describe(exc))
    else:
        # A TLS client that cannot agree with us (version, ciphers, our certificate): worth seeing.
        # Floods of either are summarized by fsmfast.logs.RateLimit.
        log.info("TLS handshake with %s%s failed: %s", who, sni, _describe(exc))


def _describe(exc: ssl.SSLError) -> str:
    if exc.reason == "PEER_DID_NOT_RETURN_A_CERTIFICATE":
        return "none presented (this port requires one)"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"verify failed: {exc.verify_message or exc.reason}"
    return (exc.reason or str(exc)).lower().replace("_", " ")


class Dispatcher(ssl.SSLContext):
    """The context a handshake starts on: no certificate, an SNI callback, tagged objects."""

    def wrap_bio(
        self,
        incoming: ssl.MemoryBIO,
        outgoing: ssl.MemoryBIO,
        server_side: bool = False,
        server_hostname: str | bytes | None = None,
        session: ssl.SSLSession | None = None,
    ) -> _ServerObject:
        # SSLObject._create is CPython's private constructor (wrap_bio's own), absent from typeshed.
        created: _ServerObject = _ServerObject._create(  # type: ignore[attr-defined]
            incoming, outgoing, server_side, server_hostname, session, self
        )
        obj = direct_io(created)
        obj.fsmfast = None  # PortTLS tags it before the handshake starts
        return obj


def _on_sni(obj: ssl.SSLObject, server_name: str | None, _ctx: ssl.SSLContext) -> int | None:
    hs: Handshake | None = getattr(obj, "fsmfast", None)
    if hs is None:
        return ssl.ALERT_DESCRIPTION_INTERNAL_ERROR
    try:
        name = server_name.rstrip(".").lower() if server_name else None
        listener = hs.port.listener_for(name)
        hs.server_name = name
        hs.listener = listener
        obj.context = listener.context_for(name)
    except Exception:
        log.exception("TLS SNI selection failed on port %d", hs.port.port)
        return ssl.ALERT_DESCRIPTION_INTERNAL_ERROR
    return None


def new_dispatcher(client_ca_pem: str | None = None) -> Dispatcher:
    ctx = Dispatcher(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.sni_callback = _on_sni
    if client_ca_pem is not None:
        # The verify mode is taken from this starting context; the trust store from the
        # certificate context the SNI callback switches to (both carry the port's CAs).
        ctx.verify_mode = ssl.CERT_REQUIRED
        _clear_strict(ctx)
        if client_ca_pem:
            ctx.load_verify_locations(cadata=client_ca_pem)
    return ctx


# Created at import, in the master before it forks: see "Session resumption" above.
SHARED = new_dispatcher()


class CertificateLoadError(ValueError):
    """A listener certificate that does not load in the worker: the snapshot is refused whole."""


ContextKey = tuple[str, str, tuple[str, ...], str | None]


class Contexts:
    """Certificate contexts and client-auth dispatchers of one worker, reused across snapshots."""

    def __init__(self) -> None:
        self.certs: dict[ContextKey, ssl.SSLContext] = {}
        self.dispatchers: dict[str, Dispatcher] = {}
        self._used_certs: set[ContextKey] = set()
        self._used_dispatchers: set[str] = set()

    def begin(self) -> None:
        self._used_certs = set()
        self._used_dispatchers = set()

    def end(self) -> None:
        """Forget what the snapshot just built does not use (open connections keep theirs)."""
        for key in list(self.certs):
            if key not in self._used_certs:
                del self.certs[key]
        for ca in list(self.dispatchers):
            if ca not in self._used_dispatchers:
                del self.dispatchers[ca]

    def certificate(self, cert: Certificate, alpn: tuple[str, ...], client_ca_pem: str | None) -> ssl.SSLContext:
        key = (cert.cert_pem, cert.key_pem, alpn, client_ca_pem)
        self._used_certs.add(key)
        ctx = self.certs.get(key)
        if ctx is None:
            ctx = server_context()
            try:
                # The build's check loads the pair the same way (fsmfast.tls.certs.inspect), so
                # this fails only if the two disagree (another OpenSSL, say); then the worker refuses
                # the whole snapshot, naming the Secret, rather than serving the port without it.
                load_pair(ctx, cert.cert_pem, cert.key_pem)
            except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
                raise CertificateLoadError(
                    f"certificate Secret {cert.name} (tls.crt, tls.key) does not load: {exc}"
                ) from exc
            if alpn:
                ctx.set_alpn_protocols(list(alpn))
            if client_ca_pem is not None:
                # getpeercert() reads the verify mode of this context: without it the
                # verified client certificate would look absent.
                ctx.verify_mode = ssl.CERT_REQUIRED
                _clear_strict(ctx)
                if client_ca_pem:
                    ctx.load_verify_locations(cadata=client_ca_pem)
            self.certs[key] = ctx
        return ctx

    def dispatcher(self, client_ca_pem: str | None) -> Dispatcher:
        if client_ca_pem is None:
            return SHARED
        self._used_dispatchers.add(client_ca_pem)
        ctx = self.dispatchers.get(client_ca_pem)
        if ctx is None:
            ctx = self.dispatchers[client_ca_pem] = new_dispatcher(client_ca_pem)
        return ctx


def _wildcard_key(name: str) -> str | None:
    """``a.example.com`` -> ``.example.com``: the key a ``*.example.com`` entry is stored under."""
    dot = name.find(".")
    return name[dot:] if dot > 0 else None


class ListenerRuntime:
    """One terminating Gateway listener: its certificates by name, and its TCPRoute if any."""

    __slots__ = ("default", "exact", "hostname", "name", "route", "wildcard")

    def __init__(self, spec: ListenerTLS, contexts: list[ssl.SSLContext], route: Any) -> None:
        self.name = spec.name
        self.hostname = spec.hostname
        self.route = route
        self.default = contexts[0]
        self.exact: dict[str, ssl.SSLContext] = {}
        self.wildcard: dict[str, ssl.SSLContext] = {}
        for cert, ctx in zip(spec.certificates, contexts, strict=True):
            for name in cert.names:
                if name.startswith("*."):
                    self.wildcard.setdefault(name[1:], ctx)
                else:
                    self.exact.setdefault(name, ctx)

    def context_for(self, server_name: str | None) -> ssl.SSLContext:
        if server_name is None:
            return self.default
        ctx = self.exact.get(server_name)
        if ctx is not None:
            return ctx
        # RFC 6125: a certificate wildcard covers exactly one label.
        suffix = _wildcard_key(server_name)
        if suffix is not None:
            ctx = self.wildcard.get(suffix)
            if ctx is not None:
                return ctx
        return self.default


def most_specific(exact: dict[str, T], wildcard: dict[str, T], fallback: T | None, name: str) -> T | None:
    """Gateway API hostname precedence over a table keyed by hostname: ``exact[name]``, else the
    longest ``*.suffix`` (kept in ``wildcard`` as ``.suffix``; it matches one or more labels), else
    ``fallback``. Listener ownership here, TLSRoutes by SNI in fsmfast.proxy.l4 (the router has its
    own, compiled, over bytes)."""
    found = exact.get(name)
    if found is not None:
        return found
    if wildcard:
        dot = name.find(".")
        while dot > 0:
            found = wildcard.get(name[dot:])
            if found is not None:
                return found
            dot = name.find(".", dot + 1)
    return fallback


class PortTLS:
    """The terminating listeners of one port and the dispatcher their handshakes start on."""

    __slots__ = ("any", "client_auth", "default", "dispatcher", "exact", "listeners", "port", "wildcard")

    def __init__(self, listener: Listener, contexts: Contexts, routes: dict[str, Any]) -> None:
        self.port = listener.port
        self.client_auth = listener.client_ca_pem is not None
        alpn = ALPN_HTTP if listener.protocol == "HTTPS" else ()
        self.listeners = [
            ListenerRuntime(
                spec,
                [contexts.certificate(c, alpn, listener.client_ca_pem) for c in spec.certificates],
                routes.get(spec.name),
            )
            for spec in listener.tls
        ]
        self.default = self.listeners[0]
        self.dispatcher = contexts.dispatcher(listener.client_ca_pem)
        self.exact: dict[str, ListenerRuntime] = {}
        self.wildcard: dict[str, ListenerRuntime] = {}
        self.any: ListenerRuntime | None = None
        for lr in self.listeners:
            if lr.hostname is None or lr.hostname == "*":
                self.any = self.any or lr
            elif lr.hostname.startswith("*."):
                self.wildcard.setdefault(lr.hostname[1:], lr)
            else:
                self.exact.setdefault(lr.hostname, lr)

    def owner(self, host: str) -> ListenerRuntime | None:
        """The listener serving ``host`` (exact, longest wildcard, then any), or None."""
        return most_specific(self.exact, self.wildcard, self.any, host)

    def listener_for(self, server_name: str | None) -> ListenerRuntime:
        if server_name is None:
            return self.default
        return self.owner(server_name) or self.default

    def handshake(self, loop: asyncio.AbstractEventLoop, app: Any) -> asyncio.BaseProtocol:
        """The protocol for a new connection: TLS (server side) wrapped around ``app``, whose
        ``tls_failed(exc)`` hears of a failed handshake (it counts it)."""
        # TLSLink implements asyncio.Protocol's methods but, a cdef class when compiled, cannot subclass it.
        return TLSLink(loop, app, self._open, HANDSHAKE_TIMEOUT, failed=app.tls_failed)  # type: ignore[return-value]

    def _open(self, transport: asyncio.BaseTransport) -> Opened:
        # Tagged before the first handshake step, so the SNI callback and the refusal log know
        # the port and the peer.
        peer = transport.get_extra_info("peername")
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        obj = self.dispatcher.wrap_bio(incoming, outgoing, server_side=True)
        obj.fsmfast = Handshake(self, f"{peer[0]}:{peer[1]}" if peer else "?")
        return obj, incoming, outgoing


def handshake_of(transport: asyncio.BaseTransport) -> tuple[Handshake | None, ssl.SSLObject | None]:
    sslobj = transport.get_extra_info("ssl_object")
    return (getattr(sslobj, "fsmfast", None) if sslobj is not None else None), sslobj


def client_subject(sslobj: ssl.SSLObject | None) -> str | None:
    """The verified client certificate's subject as RFC 4514 text, or None."""
    if sslobj is None:
        return None
    cert = sslobj.getpeercert()
    if not cert:
        return None
    # typeshed types every getpeercert() value as the union of all fields' types.
    return rdn_string(cast("tuple[tuple[tuple[str, str], ...], ...]", cert.get("subject", ()))) or None
