"""Certificates for the tests: the founding blog's (from :mod:`fsmfast.demo.pki`, which the demo uses too) and
the variants only tests need (a SAN certificate, a client certificate, a second CA), made with the openssl CLI
the way the blog makes its own.

Every function writes into ``dir`` (created if needed) under its own file names, so several sets can share
one directory without clobbering each other.
"""

from __future__ import annotations

import shlex
from pathlib import Path

from fsmfast.demo.pki import Pki, blog_pki, openssl

__all__ = ["Pki", "blog_pki", "client_cert", "other_ca", "san_pki", "short_lived"]


def _new_ca(dir: Path, prefix: str, cn: str) -> tuple[Path, Path]:
    """The blog's CA commands (``openssl genrsa 2048 > ca-key.pem`` and a self-signed ``req -x509``)."""
    key = dir / f"{prefix}ca-key.pem"
    cert = dir / f"{prefix}ca-cert.pem"
    openssl(dir, "genrsa 2048", stdout=key)
    openssl(dir, f"req -new -x509 -nodes -days 365000 -key {key.name} -out {cert.name} -subj '/CN={cn}'")
    return cert, key


def _signed_cert(
    dir: Path,
    ca_cert: Path,
    ca_key: Path,
    prefix: str,
    cn: str,
    extfile_lines: list[str] | None = None,
    days: int = 365,
) -> tuple[Path, Path]:
    """The blog's leaf commands: genrsa, a CSR with only a CN, then ``x509 -req`` signed by the CA.

    ``extfile_lines`` adds an ``-extfile`` (e.g. a subjectAltName); without it the certificate is exactly
    the blog's: no extensions at all.
    """
    key = dir / f"{prefix}key.pem"
    csr = dir / f"{prefix}req.csr"
    cert = dir / f"{prefix}cert.pem"
    ca, ca_key_arg = shlex.quote(str(ca_cert)), shlex.quote(str(ca_key))
    openssl(dir, f"genrsa -out {key.name} 2048")
    openssl(dir, f"req -new -key {key.name} -out {csr.name} -subj '/CN={cn}'")
    command = f"x509 -req -in {csr.name} -CA {ca} -CAkey {ca_key_arg} -CAcreateserial -out {cert.name} -days {days}"
    if extfile_lines:
        ext = dir / f"{prefix}ext.cnf"
        ext.write_text("\n".join(extfile_lines) + "\n")
        command += f" -extfile {ext.name}"
    openssl(dir, command)
    return cert, key


def san_pki(dir: Path, ca: Pki | None, hostname: str = "foo.example.com") -> Pki:
    """A server certificate for ``hostname`` WITH ``subjectAltName=DNS:<hostname>`` (and CN=hostname).

    Signed by ``ca``'s CA when given (the returned Pki then shares its CA files), else by a new blog-style
    CA (CN=flomesh.io) written as ``san-ca-cert.pem``/``san-ca-key.pem``. Files: ``san-<hostname>-*.pem``.
    """
    dir.mkdir(parents=True, exist_ok=True)
    if ca is None:
        ca_cert, ca_key = _new_ca(dir, "san-", "flomesh.io")
    else:
        ca_cert, ca_key = ca.ca_cert, ca.ca_key
    cert, key = _signed_cert(dir, ca_cert, ca_key, f"san-{hostname}-", hostname, [f"subjectAltName=DNS:{hostname}"])
    return Pki(ca_cert=ca_cert, ca_key=ca_key, server_cert=cert, server_key=key)


def client_cert(dir: Path, ca: Pki, cn: str = "client") -> tuple[Path, Path]:
    """A client certificate ``(cert, key)`` with CN=``cn`` signed by ``ca``'s CA, made like the blog's server
    certificate (no extensions). Files: ``client-<cn>-cert.pem`` and ``client-<cn>-key.pem``."""
    dir.mkdir(parents=True, exist_ok=True)
    return _signed_cert(dir, ca.ca_cert, ca.ca_key, f"client-{cn}-", cn)


def short_lived(dir: Path, ca: Pki, hostname: str, days: int, sans: tuple[str, ...] = ()) -> Pki:
    """A server certificate for ``hostname`` valid for ``days`` days from now (one expiring soon), signed by
    ``ca``'s CA, with ``subjectAltName=DNS:<hostname>`` and ``sans`` (openssl spelling: ``IP:10.0.0.1``,
    ``DNS:other.example.com``). Files: ``short-<hostname>-*.pem``."""
    dir.mkdir(parents=True, exist_ok=True)
    alt = ",".join([f"DNS:{hostname}", *sans])
    cert, key = _signed_cert(
        dir, ca.ca_cert, ca.ca_key, f"short-{hostname}-", hostname, [f"subjectAltName={alt}"], days
    )
    return Pki(ca_cert=ca.ca_cert, ca_key=ca.ca_key, server_cert=cert, server_key=key)


def other_ca(dir: Path) -> Pki:
    """A different CA (CN=other-ca) and its own blog-style server certificate for foo.example.com.

    Use its ``ca_cert`` as a *wrong* trust anchor for the blog's upstream (verification must fail), or its
    server certificate for an upstream the blog's CA must not accept. Files: ``other-*.pem``.
    """
    dir.mkdir(parents=True, exist_ok=True)
    ca_cert, ca_key = _new_ca(dir, "other-", "other-ca")
    cert, key = _signed_cert(dir, ca_cert, ca_key, "other-server-", "foo.example.com")
    return Pki(ca_cert=ca_cert, ca_key=ca_key, server_cert=cert, server_key=key)
