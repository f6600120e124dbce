"""Every certificate a snapshot serves or trusts, for the operator: what the admin listener's
/config shows, what ``fsmfast status`` warns about, and what the certificate expiry metric
(``fsmfast_certificate_expiry_timestamp_seconds{namespace, secret, usage}``) exports.

Usages:
- ``listener``: a listener's ``certificateRefs`` Secret (``tls.crt``, the chain included);
- ``client-ca``: a CA that a listener trusts for client certificates (mTLS);
- ``upstream-ca``: a CA that an upstream TLS policy trusts;
- ``upstream-client``: the client certificate the gateway presents upstream.

A PEM with several certificates (a chain, a CA bundle) gives one ``CertInfo`` per certificate,
``position`` 0 first: an intermediate or a second CA can expire first, and a person should see
which one. A metric with one series per (namespace, secret, usage) takes the earliest expiry of
them (``earliest``). The same certificate of the same object and usage is listed once, whatever
number of listeners or backends use it (``used_by`` names them).

Reads only the snapshot: certificate text, never a key (``Certificate.key_pem`` and
``UpstreamTLS.client_key_pem`` are not looked at). Parsing goes through CPython's own decoder
(``fsmfast.tls.certs``) and is cached per PEM text, so a reload parses only what changed.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterable, Iterator
from typing import Any, Literal

import msgspec

from fsmfast.snapshot import Listener, PemSource, Snapshot
from fsmfast.tls.certs import decode_blocks, rdn_string
from fsmfast.tls.pem import cert_blocks

Usage = Literal["listener", "client-ca", "upstream-ca", "upstream-client"]
USAGES: tuple[Usage, ...] = ("listener", "client-ca", "upstream-ca", "upstream-client")


class CertInfo(msgspec.Struct, frozen=True):
    namespace: str
    secret: str  # the object's name (a ConfigMap's when ``kind`` says so; CA bundles may be either)
    usage: Usage
    subject: str  # RFC 4514, most specific RDN first
    sans: tuple[str, ...]  # "DNS:foo.example.com", "IP Address:10.0.0.1", "URI:spiffe://..."
    not_after: float  # seconds since the epoch
    not_before: float
    issuer: str
    serial: str  # hex, as OpenSSL prints it
    position: int = 0  # index in its PEM: 0 the leaf of a chain, or the first CA of a bundle
    kind: Literal["Secret", "ConfigMap"] = "Secret"
    used_by: tuple[str, ...] = ()  # listener names (namespace/gateway/listener) or backends (ns/svc:port)


class _Parsed(msgspec.Struct, frozen=True):
    subject: str
    sans: tuple[str, ...]
    not_after: float
    not_before: float
    issuer: str
    serial: str
    position: int


# PEM text -> its parsed certificates. Replaced by what the latest call used, so certificates that
# left the configuration do not stay in memory across reloads.
_cache: dict[str, tuple[_Parsed, ...]] = {}


def _parsed(decoded: dict[str, Any], position: int) -> _Parsed:
    return _Parsed(
        subject=rdn_string(decoded.get("subject", ())),
        sans=tuple(f"{kind}:{value}" for kind, value in decoded.get("subjectAltName", ())),
        not_after=float(ssl.cert_time_to_seconds(decoded["notAfter"])),
        not_before=float(ssl.cert_time_to_seconds(decoded["notBefore"])),
        issuer=rdn_string(decoded.get("issuer", ())),
        serial=str(decoded.get("serialNumber", "")),
        position=position,
    )


def _parse(pem: str, used: dict[str, tuple[_Parsed, ...]]) -> tuple[_Parsed, ...]:
    found = used.get(pem)
    if found is None:
        found = _cache.get(pem)
    if found is None:
        out = []
        # A block that does not parse is left out: the build already refused such a CA or
        # certificate, so this is only a guard, not a report.
        for position, decoded in enumerate(decode_blocks(cert_blocks(pem))):
            if decoded is None:
                continue
            try:
                out.append(_parsed(decoded, position))
            except (KeyError, ValueError):
                continue
        found = tuple(out)
    used[pem] = found
    return found


class _Place(msgspec.Struct, frozen=True):
    """One PEM text found in the snapshot: whose, what for, used where."""

    pem: str
    name: str  # namespace/name
    usage: Usage
    user: str
    kind: Literal["Secret", "ConfigMap"] = "Secret"


def _parts(pem: str, sources: tuple[PemSource, ...]) -> Iterator[tuple[str, PemSource | None]]:
    """A bundle cut back into the objects it was joined from; unnamed when the snapshot does not say."""
    if not sources:
        yield pem, None
        return
    start = 0
    for source in sources:
        yield pem[start : source.end], source
        start = source.end


def client_ca_users(listener: Listener) -> tuple[str, ...]:
    """The ``used_by`` of a port's client CAs: its listeners (client validation is one per port)."""
    return listener.names or (f"port {listener.port}",)


def _places(snapshot: Snapshot) -> Iterator[_Place]:
    for listener in snapshot.listeners:
        for spec in listener.tls:
            for cert in spec.certificates:
                yield _Place(cert.cert_pem, cert.name, "listener", spec.name)
        if listener.client_ca_pem:
            users = client_ca_users(listener)
            for text, source in _parts(listener.client_ca_pem, listener.client_ca_sources):
                for user in users:
                    if source is None:
                        yield _Place(text, "", "client-ca", user)
                    else:
                        yield _Place(text, source.name, "client-ca", user, source.kind)
    for key in sorted(snapshot.backends):
        tls = snapshot.backends[key].tls
        if tls is None:
            continue
        if tls.ca_pem:
            for text, source in _parts(tls.ca_pem, tls.ca_sources):
                if source is None:
                    yield _Place(text, "", "upstream-ca", key)
                else:
                    yield _Place(text, source.name, "upstream-ca", key, source.kind)
        if tls.client_cert_pem:
            yield _Place(tls.client_cert_pem, tls.client_cert_secret or "", "upstream-client", key)


def certificates(snapshot: Snapshot) -> list[CertInfo]:
    """Every certificate of ``snapshot``, by usage (``USAGES`` order), then in snapshot order."""
    global _cache
    used: dict[str, tuple[_Parsed, ...]] = {}
    # (kind, name, usage, position, serial, issuer) -> the CertInfo fields and its users, in order.
    merged: dict[tuple[str, str, str, int, str, str], tuple[_Place, _Parsed, list[str]]] = {}
    for place in _places(snapshot):
        for parsed in _parse(place.pem, used):
            key = (place.kind, place.name, place.usage, parsed.position, parsed.serial, parsed.issuer)
            entry = merged.get(key)
            if entry is None:
                merged[key] = (place, parsed, [place.user])
            elif place.user not in entry[2]:
                entry[2].append(place.user)
    _cache = used
    out = []
    for place, parsed, users in merged.values():
        namespace, _, name = place.name.partition("/")
        out.append(
            CertInfo(
                namespace=namespace,
                secret=name,
                usage=place.usage,
                subject=parsed.subject,
                sans=parsed.sans,
                not_after=parsed.not_after,
                not_before=parsed.not_before,
                issuer=parsed.issuer,
                serial=parsed.serial,
                position=parsed.position,
                kind=place.kind,
                used_by=tuple(users),
            )
        )
    out.sort(key=lambda c: USAGES.index(c.usage))  # stable: snapshot order within a usage
    return out


def earliest(certs: Iterable[CertInfo]) -> dict[tuple[str, str, str], float]:
    """(namespace, secret, usage) -> the earliest not-after among its certificates: one value per
    metric series, however many certificates a chain or bundle holds."""
    out: dict[tuple[str, str, str], float] = {}
    for cert in certs:
        key = (cert.namespace, cert.secret, cert.usage)
        if key not in out or cert.not_after < out[key]:
            out[key] = cert.not_after
    return out
