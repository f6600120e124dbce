"""What a listener certificate Secret holds: names for SNI, expiry, and whether it loads.

Only the standard library: ``ssl._ssl._test_decode_cert`` decodes a PEM certificate file into
the same dict ``getpeercert()`` returns (subject, subjectAltName, notAfter), and ``load_pair``
loads the pair into an ``SSLContext`` exactly as the worker does (the worker calls it too), so
whatever a worker would fail on (a chain certificate that does not parse, a key that is not a
private key, of another type, or of another certificate, a key too small for OpenSSL's security
level) fails the build first. Both read files only, so the PEM goes to a private (0700)
temporary directory for the duration of the call.
"""

from __future__ import annotations

import os
import ssl
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import msgspec

from fsmfast.tls.pem import BEGIN_CERT

# `fsmfast check` warns when a served certificate expires sooner than this.
EXPIRY_WARNING_DAYS = 30


class CertInfo(msgspec.Struct, frozen=True):
    subject: str
    names: tuple[str, ...]  # lower-case DNS subjectAltNames, then the CN if not among them
    not_after: float  # seconds since the epoch


CERT_FIELD = "tls.crt"
KEY_FIELD = "tls.key"


class Inspection(msgspec.Struct, frozen=True):
    """``info`` is None when the certificate cannot be read; ``problem`` says why the pair cannot
    be served, about the Secret key ``field`` (``tls.crt`` or ``tls.key``): it reads after the
    field's name ("tls.key does not match the certificate in tls.crt")."""

    info: CertInfo | None
    problem: str | None = None
    field: str | None = None

    @property
    def message(self) -> str | None:
        return f"{self.field} {self.problem}" if self.problem else None


@contextmanager
def _files(**contents: bytes) -> Iterator[dict[str, str]]:
    with tempfile.TemporaryDirectory(prefix="fsmfast-cert-") as tmp:
        paths = {}
        for name, data in contents.items():
            path = os.path.join(tmp, name)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            paths[name] = path
        yield paths


def rdn_string(name: tuple[tuple[tuple[str, str], ...], ...]) -> str:
    """A decoded subject as RFC 4514 text, most specific RDN first (``CN=client,O=example``)."""
    short = {
        "commonName": "CN",
        "organizationName": "O",
        "organizationalUnitName": "OU",
        "countryName": "C",
        "stateOrProvinceName": "ST",
        "localityName": "L",
        "domainComponent": "DC",
        "userId": "UID",
        "streetAddress": "STREET",
    }
    parts = []
    for rdn in reversed(name):
        parts.append("+".join(f"{short.get(k, k)}={_escape(v)}" for k, v in rdn))
    return ",".join(parts)


def _escape(value: str) -> str:
    out = []
    for i, ch in enumerate(value):
        if ch in ',+"\\<>;' or (ch == "#" and i == 0) or (ch == " " and i in (0, len(value) - 1)):
            out.append("\\" + ch)
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            # Never a raw control character: the subject may end up in a header or a log line.
            out.append(f"\\{ord(ch):02x}")
        else:
            out.append(ch)
    return "".join(out)


def _decoded(cert_path: str) -> dict[str, Any]:
    # CPython's private certificate decoder (what getpeercert() returns, from a file); typeshed omits it.
    decoded: dict[str, Any] = ssl._ssl._test_decode_cert(cert_path)  # type: ignore[attr-defined]
    return decoded


def decode_blocks(blocks: list[str]) -> list[dict[str, Any] | None]:
    """Each PEM certificate block (``pem.cert_blocks``) as ``getpeercert()`` returns it (subject,
    issuer, serialNumber, notBefore, notAfter, subjectAltName), None where one does not parse."""
    out: list[dict[str, Any] | None] = []
    with _files(**{f"c{i}": block.encode() for i, block in enumerate(blocks)}) as paths:
        for i in range(len(blocks)):
            try:
                out.append(_decoded(paths[f"c{i}"]))
            except (ssl.SSLError, ValueError, OSError):
                out.append(None)
    return out


def _decode(cert_path: str) -> CertInfo:
    decoded = _decoded(cert_path)
    names: list[str] = [v.lower() for k, v in decoded.get("subjectAltName", ()) if k == "DNS"]
    cn = next((v for rdn in decoded.get("subject", ()) for k, v in rdn if k == "commonName"), None)
    if cn and cn.lower() not in names:
        names.append(cn.lower())
    return CertInfo(
        subject=rdn_string(decoded.get("subject", ())),
        names=tuple(names),
        not_after=float(ssl.cert_time_to_seconds(decoded["notAfter"])),
    )


def _no_password() -> bytes:
    # Without a callback OpenSSL would prompt on the terminal for an encrypted key.
    raise ValueError("encrypted private key")


def as_text(pem: bytes) -> str:
    """Secret bytes as the snapshot carries them to the worker (``Certificate.cert_pem``)."""
    return pem.decode("ascii", "replace")


def load_pair(ctx: ssl.SSLContext, cert_pem: str, key_pem: str) -> None:
    """Load a listener certificate chain and its key into ``ctx``: the worker's one way to do it,
    and the build's check. Raises ssl.SSLError (ValueError for an encrypted key)."""
    with _files(crt=cert_pem.encode(), key=key_pem.encode()) as paths:
        ctx.load_cert_chain(paths["crt"], paths["key"], password=_no_password)


def server_context() -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


def _reason(exc: ssl.SSLError) -> str:
    """OpenSSL's reason in words, `` (bad base64 decode)``, or nothing when it gave none."""
    return f" ({exc.reason.lower().replace('_', ' ')})" if exc.reason else ""


# OpenSSL's security level refuses the certificate itself (Debian's default level is 2).
_WEAK = frozenset({"EE_KEY_TOO_SMALL", "CA_KEY_TOO_SMALL", "CA_MD_TOO_WEAK"})
# ssl_set_pkey files a key under its type: a key of another type than the certificate's never
# meets it (NO_CERTIFICATE_ASSIGNED), a type TLS cannot sign with has no slot at all.
_OTHER_TYPE = frozenset({"NO_CERTIFICATE_ASSIGNED", "UNKNOWN_CERTIFICATE_TYPE"})


def _chain_parses(cert_pem: str) -> bool:
    # Only to say which half of a failed load_pair is at fault: the same PEM loop as
    # SSL_CTX_use_certificate_chain_file (every block must parse; text around them is ignored).
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cadata=cert_pem)
    except (ssl.SSLError, ValueError):
        return False
    return True


def inspect(cert_pem: bytes, key_pem: bytes) -> Inspection:
    """Read the leaf of ``cert_pem`` and load the pair as the worker will (``load_pair``)."""
    cert_text, key_text = as_text(cert_pem), as_text(key_pem)
    if BEGIN_CERT not in cert_text:
        return Inspection(None, f"is not a PEM certificate (no {BEGIN_CERT} line)", CERT_FIELD)
    with _files(crt=cert_text.encode()) as paths:
        try:
            info = _decode(paths["crt"])
        except (ssl.SSLError, ValueError, KeyError, OSError):
            return Inspection(None, "does not parse as a PEM certificate", CERT_FIELD)
    try:
        load_pair(server_context(), cert_text, key_text)
    except ssl.SSLError as exc:
        if exc.reason == "KEY_VALUES_MISMATCH":
            return Inspection(info, f"does not match the certificate in {CERT_FIELD}", KEY_FIELD)
        if exc.reason in _OTHER_TYPE:
            why = f"is a private key of another type than the certificate's public key in {CERT_FIELD}"
            return Inspection(info, why, KEY_FIELD)
        if exc.reason in _WEAK:
            return Inspection(info, f"is refused by OpenSSL's security level{_reason(exc)}", CERT_FIELD)
        if not _chain_parses(cert_text):
            return Inspection(info, f"has a chain certificate that does not parse{_reason(exc)}", CERT_FIELD)
        if "PRIVATE KEY-----" not in key_text:
            # A public key or a certificate pasted into tls.key: say so rather than "unusable".
            return Inspection(info, "is not a PEM private key (no -----BEGIN ... PRIVATE KEY----- line)", KEY_FIELD)
        return Inspection(info, f"is not a usable PEM private key{_reason(exc)}", KEY_FIELD)
    except ValueError:
        return Inspection(info, "is an encrypted private key (not supported)", KEY_FIELD)
    return Inspection(info)


def rfc3339(epoch: float) -> str:
    """A certificate time as RFC 3339 UTC, as it is shown everywhere (``2026-12-15T10:22:20Z``)."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def expiry_problem(info: CertInfo, now: float | None = None) -> tuple[str, bool] | None:
    """(message, is_error): an expired certificate is an error, one expiring soon a warning."""
    now = time.time() if now is None else now
    stamp = rfc3339(info.not_after)
    if info.not_after <= now:
        return f"certificate {info.subject} expired at {stamp}", True
    days = (info.not_after - now) / 86400
    if days < EXPIRY_WARNING_DAYS:
        return f"certificate {info.subject} expires in {days:.0f} days ({stamp})", False
    return None
