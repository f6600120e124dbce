"""The founding blog's certificates: a private CA (CN=flomesh.io) and the upstream's certificate it signed
(CN=foo.example.com).

Made with the openssl CLI, exactly as the blog makes them, on purpose: the blog's CA has no keyUsage extension
and its server certificate has no subjectAltName, and those quirks are what the gateway must cope with (Python
3.13's VERIFY_X509_STRICT rejects such a CA; hostname checks need a SAN or fall back to the CN). A library
would make "better" certificates and hide the problems users hit. Only where openssl is missing does the demo
make the same two certificates with the ``cryptography`` package.
"""

from __future__ import annotations

import datetime
import importlib.util
import shlex
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from fsmfast.demo import SetupError

# openssl on a slow CI core generates a 2048-bit key in well under a second; this only stops a hang.
_TIMEOUT = 60

HOSTNAME = "foo.example.com"
CA_NAME = "flomesh.io"


@dataclass(frozen=True)
class Pki:
    """A CA and one server certificate it signed (PEM files)."""

    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path


def openssl(dir: Path, command: str, stdout: Path | None = None, say: Callable[[str], None] | None = None) -> None:
    """Run ``openssl <command>`` in ``dir`` (stdout into a file when given); SetupError with openssl's message.

    ``command`` is written as on a shell line (split with shlex), so the blog's commands read as in the blog;
    ``say`` is shown that line first.
    """
    if say is not None:
        say(f"$ openssl {command}" + (f" > {stdout.name}" if stdout is not None else ""))
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
        err = proc.stderr.decode(errors="replace").strip()
        raise SetupError(f"openssl {command} failed ({proc.returncode}): {err}")


def _files(dir: Path) -> Pki:
    return Pki(
        ca_cert=dir / "ca-cert.pem",
        ca_key=dir / "ca-key.pem",
        server_cert=dir / "server-cert.pem",
        server_key=dir / "server-key.pem",
    )


def blog_pki(dir: Path, say: Callable[[str], None] | None = None) -> Pki:
    """Run the founding blog's five openssl commands in ``dir``, verbatim (``say`` is shown each one)::

        openssl genrsa 2048 > ca-key.pem
        openssl req -new -x509 -nodes -days 365000 -key ca-key.pem -out ca-cert.pem -subj '/CN=flomesh.io'
        openssl genrsa -out server-key.pem 2048
        openssl req -new -key server-key.pem -out server.csr -subj '/CN=foo.example.com'
        openssl x509 -req -in server.csr -CA ca-cert.pem -CAkey ca-key.pem -CAcreateserial \\
            -out server-cert.pem -days 365

    Returns ``ca-cert.pem``, ``ca-key.pem``, ``server-cert.pem`` and ``server-key.pem`` in ``dir``.
    """
    dir.mkdir(parents=True, exist_ok=True)
    openssl(dir, "genrsa 2048", stdout=dir / "ca-key.pem", say=say)
    openssl(dir, f"req -new -x509 -nodes -days 365000 -key ca-key.pem -out ca-cert.pem -subj '/CN={CA_NAME}'", say=say)
    openssl(dir, "genrsa -out server-key.pem 2048", say=say)
    openssl(dir, f"req -new -key server-key.pem -out server.csr -subj '/CN={HOSTNAME}'", say=say)
    openssl(
        dir,
        "x509 -req -in server.csr -CA ca-cert.pem -CAkey ca-key.pem -CAcreateserial -out server-cert.pem -days 365",
        say=say,
    )
    return _files(dir)


def blog_pki_with_cryptography(dir: Path) -> Pki:
    """The same two certificates as :func:`blog_pki` with the ``cryptography`` package: a CA with no keyUsage,
    a leaf with no extensions. Same file names."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    def key_pem(key: rsa.RSAPrivateKey) -> bytes:
        return key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
        )

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, CA_NAME)])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, HOSTNAME)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=365))
        .sign(ca_key, hashes.SHA256())
    )
    dir.mkdir(parents=True, exist_ok=True)
    pki = _files(dir)
    pki.ca_key.write_bytes(key_pem(ca_key))
    pki.ca_cert.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    pki.server_key.write_bytes(key_pem(key))
    pki.server_cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return pki


def founding_pki(dir: Path, say: Callable[[str], None] | None = None) -> Pki:
    """:func:`blog_pki` where the openssl command exists, else :func:`blog_pki_with_cryptography`, else a
    SetupError that says what to install."""
    if shutil.which("openssl"):
        return blog_pki(dir, say)
    if importlib.util.find_spec("cryptography") is not None:
        if say is not None:
            say("(openssl not found: making the same certificates with the cryptography package)")
        return blog_pki_with_cryptography(dir)
    raise SetupError(
        "the demo needs the openssl command or the cryptography package to make its certificates: "
        "install one (Debian: apt-get install openssl; or pip install cryptography)"
    )
