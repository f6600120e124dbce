"""Upstream TLS: one client SSLContext per (policy, endpoint), built from the snapshot.

Why one context per endpoint: the context carries the session to resume (see
``ResumingContext``), and a session belongs to one server. Trust is never shared between
services: each context loads only its own policy's CA.

Verification is the same on every supported Python. 3.13 turned on VERIFY_X509_STRICT in
``create_default_context``; the founding blog's CA (``openssl req -x509`` without a
keyUsage extension) fails that check, so contexts are built by hand with the strict flag
cleared.
"""

from __future__ import annotations

import os
import ssl
import tempfile
from typing import TypeVar, cast

from fsmfast.snapshot import UpstreamTLS

_SSLObject = TypeVar("_SSLObject", bound=ssl.SSLObject)


def direct_io(obj: _SSLObject) -> _SSLObject:
    """Give ``obj`` its C object's read, write and pending as instance attributes.

    ssl.SSLObject's three are one-line Python wrappers around ``_sslobj``, each a Python frame
    that costs more than the C call it wraps. The record layer's pure-Python twin
    (``fsmfast.tls.records``, used where the compiled one cannot reach OpenSSL) calls them for
    every record; instance attributes shadow the class's methods, so it calls the C methods
    instead. Behaviour is the same.
    """
    # _sslobj is CPython's private C object, which typeshed does not declare; shadowing the methods is the point.
    inner = obj._sslobj  # type: ignore[attr-defined]
    obj.read = inner.read  # type: ignore[method-assign]
    obj.write = inner.write  # type: ignore[method-assign]
    obj.pending = inner.pending  # type: ignore[method-assign]
    return obj


class ResumingContext(ssl.SSLContext):
    """Client context that offers the last good session of its endpoint.

    ``wrap_bio`` is where the session to resume and the SNI (the configured name; None: no
    SNI, never the endpoint IP) are decided, whoever calls it: the upstream pool's TLS link,
    or a loop's ``create_connection(ssl=...)`` (which passes no session, and the IP as host).
    """

    sni: str | None
    session_to_resume: ssl.SSLSession | None

    def wrap_bio(
        self,
        incoming: ssl.MemoryBIO,
        outgoing: ssl.MemoryBIO,
        server_side: bool = False,
        server_hostname: str | bytes | None = None,
        session: ssl.SSLSession | None = None,
    ) -> ssl.SSLObject:
        return direct_io(
            super().wrap_bio(
                incoming,
                outgoing,
                server_side=server_side,
                server_hostname=self.sni,
                session=session or self.session_to_resume,
            )
        )


def _load_client_cert(ctx: ssl.SSLContext, cert_pem: str, key_pem: str) -> None:
    # load_cert_chain only reads files: write both to a private temp dir, load, remove.
    with tempfile.TemporaryDirectory(prefix="fsmfast-") as tmp:
        cert_path = os.path.join(tmp, "tls.crt")
        key_path = os.path.join(tmp, "tls.key")
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(key_pem)
        with open(cert_path, "w") as f:
            f.write(cert_pem)
        ctx.load_cert_chain(cert_path, key_path)


def client_context(tls: UpstreamTLS) -> ResumingContext:
    """Build the context for one endpoint. Raises ssl.SSLError/ValueError on bad material."""
    ctx = ResumingContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.sni = tls.server_name
    ctx.session_to_resume = None
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.verify_mode = ssl.CERT_REQUIRED
    # Hostname checking needs a name; without one only the chain is verified (FSM parity),
    # and with subjectAltNames the name is SNI only and SANs are checked after the handshake.
    ctx.check_hostname = bool(tls.server_name) and not tls.subject_alt_names
    strict = getattr(ssl, "VERIFY_X509_STRICT", 0)
    if strict:
        ctx.verify_flags &= ~strict
    if tls.system_ca:
        ctx.load_default_certs(ssl.Purpose.SERVER_AUTH)
    if tls.ca_pem:
        ctx.load_verify_locations(cadata=tls.ca_pem)
    if tls.client_cert_pem and tls.client_key_pem:
        _load_client_cert(ctx, tls.client_cert_pem, tls.client_key_pem)
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


def check_subject_alt_names(tls: UpstreamTLS, sslobj: ssl.SSLObject) -> str | None:
    """BackendTLSPolicy subjectAltNames: the peer must carry at least one. None when ok."""
    if not tls.subject_alt_names:
        return None
    cert = sslobj.getpeercert()
    # typeshed types every getpeercert() value as the union of all fields' types.
    sans = cast("tuple[tuple[str, str], ...]", cert.get("subjectAltName", ()) if cert else ())
    dns = [v.lower() for k, v in sans if k == "DNS"]
    uris = [v for k, v in sans if k == "URI"]
    for want in tls.subject_alt_names:
        if want.type == "URI" and want.value in uris:
            return None
        if want.type == "Hostname" and any(_dns_match(pattern, want.value.lower()) for pattern in dns):
            return None
    wanted = ", ".join(s.value for s in tls.subject_alt_names)
    return f"certificate subjectAltName does not match any of: {wanted}"


def _dns_match(pattern: str, name: str) -> bool:
    if pattern == name:
        return True
    # RFC 6125: a wildcard covers exactly one left-most label.
    if pattern.startswith("*."):
        head, _, rest = name.partition(".")
        return bool(head) and rest == pattern[2:]
    return False


def describe_error(exc: BaseException) -> str:
    """OpenSSL's own words, e.g. ``certificate verify failed: unable to get local issuer
    certificate``, without Python's ``[SSL: ...] (_ssl.c:1006)`` decoration."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        detail = exc.verify_message or exc.reason or str(exc)
        return f"certificate verify failed: {detail}"
    if isinstance(exc, ssl.SSLError):
        reason = exc.reason or ""
        if reason:
            return reason.lower().replace("_", " ")
        return str(exc)
    return str(exc) or exc.__class__.__name__
