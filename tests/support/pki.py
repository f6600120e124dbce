"""Certificates made with the openssl CLI, exactly like the founding blog makes them.

The CLI rather than ``cryptography`` on purpose: the blog's CA has no keyUsage extension and its server
certificate has no subjectAltName, and those quirks are what the gateway must cope with (Python 3.13's
VERIFY_X509_STRICT rejects such a CA; hostname checks need a SAN or fall back to the CN). A library would
make "better" certificates and hide the problems users hit.

Every function writes into ``dir`` (created if needed) under its own file names, so several sets can share
one directory without clobbering each other.
"""

from __future__ import annotations

import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import IO

# openssl on a slow CI core generates a 2048-bit key in well under a second; this only stops a hang.
_TIMEOUT = 60


@dataclass(frozen=True)
class Pki:
    """A CA and one server certificate it signed (PEM files)."""

    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path


def _openssl(dir: Path, command: str, stdout: Path | None = None) -> None:
    """Run ``openssl <command>`` in ``dir`` (stdout into a file when given); raise with openssl's message.

    ``command`` is written as on a shell line (split with shlex), so the blog's commands read as in the blog.
    """
    args = ["openssl", *shlex.split(command)]

    def run(out: int | IO[bytes]) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            args, cwd=dir, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.PIPE, timeout=_TIMEOUT, check=False
        )

    if stdout is None:
        proc = run(subprocess.PIPE)
    else:
        with open(stdout, "wb") as f:
            proc = run(f)
    if proc.returncode != 0:
        err = proc.stderr.decode(errors="replace")
        raise RuntimeError(f"openssl {command} failed ({proc.returncode}): {err}")


def _new_ca(dir: Path, prefix: str, cn: str) -> tuple[Path, Path]:
    """The blog's CA commands (``openssl genrsa 2048 > ca-key.pem`` and a self-signed ``req -x509``)."""
    key = dir / f"{prefix}ca-key.pem"
    cert = dir / f"{prefix}ca-cert.pem"
    _openssl(dir, "genrsa 2048", stdout=key)
    _openssl(dir, f"req -new -x509 -nodes -days 365000 -key {key.name} -out {cert.name} -subj '/CN={cn}'")
    return cert, key


def _signed_cert(
    dir: Path, ca_cert: Path, ca_key: Path, prefix: str, cn: str, extfile_lines: list[str] | None = None
) -> tuple[Path, Path]:
    """The blog's leaf commands: genrsa, a CSR with only a CN, then ``x509 -req`` signed by the CA.

    ``extfile_lines`` adds an ``-extfile`` (e.g. a subjectAltName); without it the certificate is exactly
    the blog's: no extensions at all.
    """
    key = dir / f"{prefix}key.pem"
    csr = dir / f"{prefix}req.csr"
    cert = dir / f"{prefix}cert.pem"
    ca, ca_key_arg = shlex.quote(str(ca_cert)), shlex.quote(str(ca_key))
    _openssl(dir, f"genrsa -out {key.name} 2048")
    _openssl(dir, f"req -new -key {key.name} -out {csr.name} -subj '/CN={cn}'")
    command = f"x509 -req -in {csr.name} -CA {ca} -CAkey {ca_key_arg} -CAcreateserial -out {cert.name} -days 365"
    if extfile_lines:
        ext = dir / f"{prefix}ext.cnf"
        ext.write_text("\n".join(extfile_lines) + "\n")
        command += f" -extfile {ext.name}"
    _openssl(dir, command)
    return cert, key


def blog_pki(dir: Path) -> Pki:
    """Run the founding blog's five openssl commands in ``dir``, verbatim::

        openssl genrsa 2048 > ca-key.pem
        openssl req -new -x509 -nodes -days 365000 -key ca-key.pem -out ca-cert.pem -subj '/CN=flomesh.io'
        openssl genrsa -out server-key.pem 2048
        openssl req -new -key server-key.pem -out server.csr -subj '/CN=foo.example.com'
        openssl x509 -req -in server.csr -CA ca-cert.pem -CAkey ca-key.pem -CAcreateserial \\
            -out server-cert.pem -days 365

    Returns ``ca-cert.pem``, ``ca-key.pem``, ``server-cert.pem`` and ``server-key.pem`` in ``dir``.
    """
    dir.mkdir(parents=True, exist_ok=True)
    _openssl(dir, "genrsa 2048", stdout=dir / "ca-key.pem")
    _openssl(dir, "req -new -x509 -nodes -days 365000 -key ca-key.pem -out ca-cert.pem -subj '/CN=flomesh.io'")
    _openssl(dir, "genrsa -out server-key.pem 2048")
    _openssl(dir, "req -new -key server-key.pem -out server.csr -subj '/CN=foo.example.com'")
    _openssl(
        dir, "x509 -req -in server.csr -CA ca-cert.pem -CAkey ca-key.pem -CAcreateserial -out server-cert.pem -days 365"
    )
    return Pki(
        ca_cert=dir / "ca-cert.pem",
        ca_key=dir / "ca-key.pem",
        server_cert=dir / "server-cert.pem",
        server_key=dir / "server-key.pem",
    )


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


def other_ca(dir: Path) -> Pki:
    """A different CA (CN=other-ca) and its own blog-style server certificate for foo.example.com.

    Use its ``ca_cert`` as a *wrong* trust anchor for the blog's upstream (verification must fail), or its
    server certificate for an upstream the blog's CA must not accept. Files: ``other-*.pem``.
    """
    dir.mkdir(parents=True, exist_ok=True)
    ca_cert, ca_key = _new_ca(dir, "other-", "other-ca")
    cert, key = _signed_cert(dir, ca_cert, ca_key, "other-server-", "foo.example.com")
    return Pki(ca_cert=ca_cert, ca_key=ca_key, server_cert=cert, server_key=key)
