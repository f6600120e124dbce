"""What a listener certificate Secret holds: names for SNI, expiry, and whether the key fits.

Only the standard library: ``ssl._ssl._test_decode_cert`` decodes a PEM certificate file into
the same dict ``getpeercert()`` returns (subject, subjectAltName, notAfter), and loading the
pair into an ``SSLContext`` is OpenSSL's own key/certificate match check. Both read files
only, so the PEM goes to a private (0700) temporary directory for the duration of the call.
"""

from __future__ import annotations

import os
import ssl
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager

import msgspec

from fsmfast.config.pem import BEGIN_CERT

# `fsmfast check` warns when a served certificate expires sooner than this.
EXPIRY_WARNING_DAYS = 30


class CertInfo(msgspec.Struct, frozen=True):
    subject: str
    names: tuple[str, ...]  # lower-case DNS subjectAltNames, then the CN if not among them
    not_after: float  # seconds since the epoch


class Inspection(msgspec.Struct, frozen=True):
    """``info`` is None when the certificate cannot be read; ``problem`` says why the pair cannot
    be served (unreadable certificate, unreadable key, or a key of another certificate)."""

    info: CertInfo | None
    problem: str | None = None


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


def _decode(cert_path: str) -> CertInfo:
    decoded = ssl._ssl._test_decode_cert(cert_path)  # type: ignore[attr-defined]
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


def inspect(cert_pem: bytes, key_pem: bytes) -> Inspection:
    """Read the leaf of ``cert_pem`` and check that ``key_pem`` is its private key."""
    if BEGIN_CERT.encode() not in cert_pem:
        return Inspection(None, f"tls.crt is not a PEM certificate (no {BEGIN_CERT} line)")
    with _files(crt=cert_pem, key=key_pem) as paths:
        try:
            info = _decode(paths["crt"])
        except (ssl.SSLError, ValueError, KeyError, OSError):
            return Inspection(None, "tls.crt does not parse as a PEM certificate")
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        try:
            ctx.load_cert_chain(paths["crt"], paths["key"], password=_no_password)
        except ssl.SSLError as exc:
            if exc.reason == "KEY_VALUES_MISMATCH":
                return Inspection(info, "tls.key does not match the certificate in tls.crt")
            return Inspection(info, "tls.key is not a usable PEM private key")
        except (ValueError, OSError):
            return Inspection(info, "tls.key is not a usable PEM private key (encrypted keys are not supported)")
    return Inspection(info)


def expiry_problem(info: CertInfo, now: float | None = None) -> tuple[str, bool] | None:
    """(message, is_error): an expired certificate is an error, one expiring soon a warning."""
    now = time.time() if now is None else now
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(info.not_after))
    if info.not_after <= now:
        return f"certificate {info.subject} expired at {stamp}", True
    days = (info.not_after - now) / 86400
    if days < EXPIRY_WARNING_DAYS:
        return f"certificate {info.subject} expires in {days:.0f} days ({stamp})", False
    return None
