"""Cheap, early checks that TLS material will load, so a bad Secret fails ``fsmfast check``
instead of the first request that needs it."""

from __future__ import annotations

import os
import re
import ssl
import tempfile

BEGIN_CERT = "-----BEGIN CERTIFICATE-----"
END_CERT = "-----END CERTIFICATE-----"
_BLOCK = re.compile(re.escape(BEGIN_CERT) + r".*?" + re.escape(END_CERT), re.DOTALL)


def cert_blocks(text: str) -> list[str]:
    """The certificate blocks of a chain or a CA bundle, in order (text between them dropped)."""
    return [match.group(0) + "\n" for match in _BLOCK.finditer(text)]


def _text(data: bytes) -> str | None:
    try:
        return data.decode("ascii")
    except UnicodeDecodeError:
        return None


def ca_problem(data: bytes) -> str | None:
    """Why ``data`` is not a PEM CA bundle, or None."""
    text = _text(data)
    if text is None:
        return "is not PEM text (not ASCII)"
    if BEGIN_CERT not in text:
        return f"is not a PEM certificate (no {BEGIN_CERT} line)"
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        ctx.load_verify_locations(cadata=text)
    except (ssl.SSLError, ValueError):
        return "does not parse as PEM certificates"
    return None


def _no_password() -> bytes:
    # Without a callback OpenSSL would prompt on the terminal for an encrypted key.
    raise ValueError("encrypted private key")


def pair_problem(cert: bytes, key: bytes) -> str | None:
    """Why ``cert``/``key`` do not load together as a client certificate, or None.

    ``load_cert_chain`` only reads files: they live in a private (0700) temporary directory
    for the duration of the call.
    """
    with tempfile.TemporaryDirectory(prefix="fsmfast-pem-") as tmp:
        paths = []
        for name, data in (("tls.crt", cert), ("tls.key", key)):
            path = os.path.join(tmp, name)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            paths.append(path)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        try:
            ctx.load_cert_chain(paths[0], paths[1], password=_no_password)
        except (ssl.SSLError, ValueError, OSError):
            return "tls.crt and tls.key do not load as a certificate and its private key"
    return None
