"""The compiled route/TLS snapshot: the only thing the master hands to workers.

Data flows one way: manifests -> validated model (``fsmfast.config``) -> this snapshot
(``fsmfast.compile``) -> workers. Workers never see YAML; they decode these bytes, and
everything invariant (hostname tables, rule order, Secret contents) is already resolved.

The master encodes a snapshot once and sends the same bytes to every worker, so every
worker serves exactly the same generation. ``SCHEMA`` changes whenever a field changes
meaning; a worker refuses a snapshot of another schema rather than guess.
"""

from __future__ import annotations

from typing import Literal

import msgspec

SCHEMA = 1


class Endpoint(msgspec.Struct, frozen=True, gc=False):
    """One ready address of a Service port, after targetPort resolution."""

    host: str
    port: int


class SubjectAltName(msgspec.Struct, frozen=True, gc=False):
    """BackendTLSPolicy ``validation.subjectAltNames`` entry."""

    type: Literal["Hostname", "URI"]
    value: str


class UpstreamTLS(msgspec.Struct, frozen=True, gc=False):
    """How to speak TLS to one Service port.

    ``policy`` names the object this came from (``UpstreamTLSPolicy httpbin/name``) so logs
    and 502 bodies can say which policy failed. ``error`` is set when the policy is attached
    but unusable (a missing Secret, a Secret without ``ca.crt``): the connection then fails
    with 502 and that reason, and never falls back to plaintext.

    Verification rules (fsmfast deliberately differs from FSM v1.2, which pooled every CA):
    - trust is ``ca_pem`` of this policy only, or the system store with ``system_ca``;
    - ``server_name`` set: sent as SNI and, unless ``subject_alt_names`` is non-empty,
      checked against the certificate (SAN, then CN when the cert has no SAN);
    - ``server_name`` unset: no SNI and chain-only verification, so a CN-only certificate
      behind an IP endpoint verifies, as the founding blog expects.
    """

    policy: str
    ca_pem: str | None = None
    system_ca: bool = False
    server_name: str | None = None
    subject_alt_names: tuple[SubjectAltName, ...] = ()
    client_cert_pem: str | None = None
    client_key_pem: str | None = None
    error: str | None = None


class Backend(msgspec.Struct, frozen=True, gc=False):
    """A Service port as an upstream: ``namespace/name:port``."""

    name: str
    endpoints: tuple[Endpoint, ...]
    tls: UpstreamTLS | None = None


class BackendRef(msgspec.Struct, frozen=True, gc=False):
    """One weighted choice of a rule.

    ``backend`` is a key of ``Snapshot.backends``. When the reference is invalid (missing
    Service, unknown kind, unknown port) ``backend`` is None and ``error`` says why; that
    share of traffic gets 500, as Gateway API requires.
    """

    weight: int
    backend: str | None = None
    error: str | None = None


class PathMatch(msgspec.Struct, frozen=True, gc=False):
    type: Literal["Exact", "PathPrefix"]
    value: str


class Rule(msgspec.Struct, frozen=True, gc=False):
    """One (route, rule, match) triple, in precedence order within its virtual host.

    ``name`` is ``httproute/<ns>/<name>/rule/<i>/match/<j>``, used in the access log.
    """

    name: str
    path: PathMatch
    backends: tuple[BackendRef, ...]


class VirtualHost(msgspec.Struct, frozen=True, gc=False):
    """Rules served for one hostname on one port.

    ``hostname`` is lower-case: an exact name, a ``*.suffix`` wildcard, or ``*`` for any.
    It is already the intersection of the listener hostname and the route hostname.
    """

    hostname: str
    rules: tuple[Rule, ...]


class Listener(msgspec.Struct, frozen=True, gc=False):
    """Everything served on one port (several Gateway listeners may share it)."""

    port: int
    protocol: Literal["HTTP"]
    names: tuple[str, ...]
    vhosts: tuple[VirtualHost, ...]


class Snapshot(msgspec.Struct, frozen=True, gc=False):
    schema: int
    generation: int
    listeners: tuple[Listener, ...]
    backends: dict[str, Backend]
    # A digest of the source files, for logs: which config a worker is serving.
    source_digest: str = ""


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(Snapshot)


class SnapshotSchemaError(ValueError):
    pass


def encode(snapshot: Snapshot) -> bytes:
    return _encoder.encode(snapshot)


def decode(data: bytes) -> Snapshot:
    snap = _decoder.decode(data)
    if snap.schema != SCHEMA:
        raise SnapshotSchemaError(f"snapshot schema {snap.schema}, this worker reads {SCHEMA}")
    return snap


def to_json(snapshot: Snapshot) -> bytes:
    """Stable, human-readable form for golden tests and ``fsmfast check --dump``."""
    return msgspec.json.format(msgspec.json.encode(snapshot), indent=2)
