"""Which Gateway listeners are served on each port, with their certificates and client trust.

One protocol per port: the oldest Gateway's first listener on a port decides whether the
port speaks HTTP, HTTPS, TLS (Terminate or Passthrough) or TCP; a later listener of another
kind on the same port is a conflict and is not served (Gateway API: conflicted listeners are
not programmed; no winner is picked for the conflicting one). Listeners not served are
recorded in ``Index.ignored_listeners`` before routes attach, so no route attaches to them.

TLS-terminating listeners (HTTPS, TLS Terminate) need at least one usable certificate:
``certificateRefs`` Secrets in the Gateway's namespace (another namespace needs a
ReferenceGrant) with ``tls.crt`` and ``tls.key``. A Secret whose certificate or key does not
load (as the worker loads it) is an error; a reference to a missing Secret (or one without a
ReferenceGrant, or without ``tls.crt``/``tls.key``) is a warning and is skipped while the
listener keeps another certificate, and an error when the listener would be left with none.
An error refuses the configuration, so a reload keeps the previous certificates serving. An
expired certificate is an error too, one that expires within 30 days a warning.

Client certificates are a property of the port, because the TLS handshake policy is fixed
before SNI is known (FSM's GatewayTLSPolicy is per port too, and Gateway API v1.3 moved
``frontendValidation`` to per-port settings). When any listener on a port asks for them
(GatewayTLSPolicy ``mTLS: true``, trusting the ``ca.crt`` of the port's certificate Secrets;
or ``tls.frontendValidation.caCertificateRefs``), every listener on that port requires them,
trusting the union of those CAs, and the others are told so in a warning.
"""

from __future__ import annotations

from collections import defaultdict

import msgspec

from fsmfast.compile.attach import ListenerRef
from fsmfast.compile.bundles import Bundle
from fsmfast.compile.grants import granted
from fsmfast.compile.index import Index, age_key
from fsmfast.config import model as m
from fsmfast.config.issues import Issues, Where
from fsmfast.config.listenerchecks import CLIENT_CERT_HEADER, SERVED_PROTOCOLS, policy_mtls
from fsmfast.snapshot import Certificate, Listener, ListenerTLS, PemSource
from fsmfast.tls.certs import Inspection, as_text, expiry_problem, inspect
from fsmfast.tls.pem import ca_problem

CA_KEY = "ca.crt"
CERT_KEY = "tls.crt"
KEY_KEY = "tls.key"
TLS_SECRET_TYPE = "kubernetes.io/tls"


class Port(msgspec.Struct):
    """The served listeners of one port, in precedence order (oldest Gateway first)."""

    port: int
    protocol: str  # HTTP, HTTPS, TLS or TCP
    mode: str | None  # TLS mode: Terminate or Passthrough
    refs: list[ListenerRef] = []
    tls: list[ListenerTLS] = []
    client_ca_pem: str | None = None
    client_ca_sources: tuple[PemSource, ...] = ()
    client_cert_header: str | None = None

    @property
    def terminates(self) -> bool:
        return self.mode == "Terminate"

    def describe(self) -> str:
        return f"{self.protocol} {self.mode}" if self.protocol == "TLS" else self.protocol


def _kind(listener: m.GatewayListener) -> tuple[str, str | None]:
    if listener.protocol == "HTTPS":
        return "HTTPS", "Terminate"
    if listener.protocol == "TLS":
        return "TLS", listener.tls.mode if listener.tls is not None else "Terminate"
    return listener.protocol, None


def _listener_field(ref: ListenerRef) -> str:
    return f"spec.listeners[{ref.gateway.spec.listeners.index(ref.listener)}]"


class Frontends:
    def __init__(self, index: Index, issues: Issues) -> None:
        self.index = index
        self.issues = issues
        self.ports: dict[int, Port] = {}
        self._inspected: dict[str, Inspection] = {}
        self._ca_checked: set[tuple[str, str]] = set()
        for gw in sorted(index.manifests.gateways, key=age_key):
            for listener in gw.spec.listeners:
                if listener.protocol in SERVED_PROTOCOLS:
                    self._add(ListenerRef(gw, listener))
        for port in self.ports.values():
            if port.terminates:
                self._client_auth(port)
        self._check_policies()

    # -- listeners -------------------------------------------------------------------------

    def _ignore(self, ref: ListenerRef, field: str, reason: str) -> None:
        self.index.ignored_listeners[ref.name] = reason
        self.issues.warn(Where.of(ref.gateway), field, f"{reason}; listener ignored")

    def _add(self, ref: ListenerRef) -> None:
        listener = ref.listener
        field = _listener_field(ref)
        protocol, mode = _kind(listener)
        port = self.ports.get(listener.port)
        if port is None:
            port = self.ports[listener.port] = Port(listener.port, protocol, mode, [], [])
        elif (port.protocol, port.mode) != (protocol, mode):
            first = port.refs[0].name if port.refs else "another listener"
            self._ignore(
                ref,
                field,
                f"port {listener.port} is already served as {port.describe()} by listener {first}"
                " (one protocol per port)",
            )
            return
        if port.terminates:
            hostname = listener.hostname
            clash = next((t.name for t in port.tls if t.hostname == hostname), None)
            if clash is not None:
                self._ignore(ref, field, f"listener {clash} already terminates TLS for hostname {hostname or '*'}")
                return
            certificates = self._certificates(ref, field)
            if not certificates:
                # Already an error (see _certificates): kept out of the port so that nothing
                # attaches to it while the build reports the errors.
                self.index.ignored_listeners[ref.name] = "no usable certificate"
                return
            port.tls.append(ListenerTLS(name=ref.name, hostname=hostname, certificates=tuple(certificates)))
            header = ref.gateway.metadata.annotations.get(CLIENT_CERT_HEADER)
            if header and port.client_cert_header is None:
                port.client_cert_header = header
        port.refs.append(ref)

    def _certificates(self, ref: ListenerRef, field: str) -> list[Certificate]:
        """The listener's usable certificates, in order; what cannot be served is reported.

        Stricter than Gateway API, which would only set ResolvedRefs=False: a bare-metal gateway
        has no status to report on, and an HTTPS port that silently stops answering is the failure
        to avoid, so a reload with such an error keeps the previous generation serving.

        - A Secret whose content does not load (a key of another certificate or type, a PEM that
          does not parse) is an error even when the listener has other good certificates: the
          Secret was meant to be served, and without it the names it covers would get another
          certificate (a name mismatch at every client) while the reload reports success.
        - A reference that resolves to nothing (no Secret, no ReferenceGrant, no ``tls.crt`` or
          ``tls.key``) is a warning while the listener keeps a usable certificate, as before, and
          an error when the listener would be left with none (it would not be served at all).
        """
        gw = ref.gateway
        tls = ref.listener.tls
        assert tls is not None  # checked when loading
        where = Where.of(gw)
        out: list[Certificate] = []
        # (field, message, unusable content): reported in reference order once `out` is known.
        problems: list[tuple[str, str, bool]] = []
        for k, cref in enumerate(tls.certificate_refs):
            cfield = f"{field}.tls.certificateRefs[{k}]"
            namespace = cref.namespace or gw.namespace
            key = f"{namespace}/{cref.name}"
            if not granted(self.index, "Gateway", gw.namespace, "Secret", namespace, cref.name):
                problems.append((cfield, f"reference to secret {key} needs a ReferenceGrant", False))
                continue
            secret = self.index.secrets.get(key)
            if secret is None:
                problems.append((cfield, f"secret {key} not found", False))
                continue
            cert, private = secret.value(CERT_KEY), secret.value(KEY_KEY)
            if cert is None or private is None:
                missing = CERT_KEY if cert is None else KEY_KEY
                problems.append((cfield, f"secret {key} has no key {missing}", False))
                continue
            if secret.type not in (None, TLS_SECRET_TYPE):
                wanted = f"a listener certificate Secret should be {TLS_SECRET_TYPE}"
                self.issues.warn(Where.of(secret), "type", f"{secret.type}: {wanted}")
            found = self._inspect(secret, cert, private)
            if found.problem or found.info is None:
                assert found.field is not None
                problems.append((cfield, f"secret {key} {secret.field_of(found.field)} {found.problem}", True))
                continue
            out.append(
                Certificate(
                    name=key,
                    cert_pem=as_text(cert),
                    key_pem=as_text(private),
                    names=found.info.names,
                )
            )
        for cfield, message, unusable in problems:
            if unusable:
                self.issues.error(where, cfield, message)
            elif out:
                self.issues.warn(where, cfield, f"{message}; certificate skipped")
            else:
                self.issues.error(where, cfield, f"{message}; listener {ref.name} would be left with no certificate")
        return out

    def _inspect(self, secret: m.Secret, cert: bytes, private: bytes) -> Inspection:
        """Inspect a Secret once; its expiry is reported on the Secret itself, a content problem
        on each reference to it (``_certificates``: that error names the Secret and its field)."""
        found = self._inspected.get(secret.key)
        if found is not None:
            return found
        found = self._inspected[secret.key] = inspect(cert, private)
        if found.info is not None:
            expiry = expiry_problem(found.info)
            if expiry is not None:
                message, is_error = expiry
                where = Where.of(secret)
                (self.issues.error if is_error else self.issues.warn)(where, secret.field_of(CERT_KEY), message)
        return found

    # -- client certificates ---------------------------------------------------------------

    def _policy_ports(self, gw: m.Gateway) -> dict[int, tuple[m.GatewayTLSPolicy, int]]:
        """port -> the oldest GatewayTLSPolicy entry asking for mTLS on this Gateway's port."""
        out: dict[int, tuple[m.GatewayTLSPolicy, int]] = {}
        for policy in sorted(self.index.manifests.gateway_tls_policies, key=age_key):
            target = policy.spec.target_ref
            if f"{target.namespace or policy.namespace}/{target.name}" != gw.key:
                continue
            for j, entry in enumerate(policy.spec.ports):
                if policy_mtls(policy, j):
                    out.setdefault(entry.port, (policy, j))
        return out

    def _ca(self, obj: m.Secret | m.ConfigMap) -> str | None:
        data = obj.value(CA_KEY)
        if data is None:
            return None
        check_key = (obj.kind, obj.key)
        if check_key not in self._ca_checked:
            self._ca_checked.add(check_key)
            problem = ca_problem(data)
            if problem:
                self.issues.error(Where.of(obj), obj.field_of(CA_KEY), problem)
        return data.decode("ascii", "replace")

    def _client_auth(self, port: Port) -> None:
        requiring: list[str] = []
        bundle = Bundle()
        for ref in port.refs:
            gw = ref.gateway
            policy = self._policy_ports(gw).get(port.port)
            if policy is not None:
                requiring.append(ref.name)
                # FSM trusts the ca.crt of the listener certificate Secrets (here: of this port).
                for t in port.tls:
                    for cert in t.certificates:
                        secret = self.index.secrets[cert.name]
                        text = self._ca(secret)
                        if text is not None:
                            bundle.add(text, secret)
            validation = ref.listener.tls.frontend_validation if ref.listener.tls else None
            if validation is not None and validation.ca_certificate_refs:
                requiring.append(ref.name)
                field = f"{_listener_field(ref)}.tls.frontendValidation.caCertificateRefs"
                for k, cref in enumerate(validation.ca_certificate_refs):
                    self._ca_ref(gw, f"{field}[{k}]", cref, bundle)
        if not requiring:
            return
        port.client_ca_pem = bundle.pem
        port.client_ca_sources = bundle.sources
        first = requiring[0]
        for ref in port.refs:
            if ref.name not in requiring:
                self.issues.warn(
                    Where.of(ref.gateway),
                    _listener_field(ref),
                    f"clients must present a certificate on all of port {port.port}, because listener {first}"
                    " requires one (client validation is one per port)",
                )
        if not bundle:
            self.issues.warn(
                Where.of(port.refs[0].gateway),
                _listener_field(port.refs[0]),
                f"client certificates are required on port {port.port} but no trusted CA was found"
                f" ({CA_KEY} in the certificate Secrets or frontendValidation); every client is refused",
            )

    def _ca_ref(self, gw: m.Gateway, field: str, ref: m.CACertificateRef, bundle: Bundle) -> None:
        """Add the ``ca.crt`` that ``ref`` names to ``bundle``, or say why it is not trusted."""
        namespace = ref.namespace or gw.namespace
        key = f"{namespace}/{ref.name}"
        where = Where.of(gw)
        label = ref.kind.lower()
        if not granted(self.index, "Gateway", gw.namespace, ref.kind, namespace, ref.name):
            self.issues.warn(where, field, f"reference to {label} {key} needs a ReferenceGrant; CA not trusted")
            return
        store = self.index.secrets if ref.kind == "Secret" else self.index.config_maps
        obj = store.get(key)
        if obj is None:
            self.issues.warn(where, field, f"{label} {key} not found; CA not trusted")
            return
        text = self._ca(obj)
        if text is None:
            self.issues.warn(where, field, f"{label} {key} has no key {CA_KEY}; CA not trusted")
        else:
            bundle.add(text, obj)

    def _check_policies(self) -> None:
        for policy in self.index.manifests.gateway_tls_policies:
            target = policy.spec.target_ref
            gw_key = f"{target.namespace or policy.namespace}/{target.name}"
            gw = self.index.gateways.get(gw_key)
            where = Where.of(policy)
            if gw is None:
                self.issues.warn(where, "spec.targetRef", f"gateway {gw_key} not found; policy has no effect")
                continue
            for j, entry in enumerate(policy.spec.ports):
                port = self.ports.get(entry.port)
                served = port is not None and any(r.gateway.key == gw_key for r in port.refs)
                if port is None or not served:
                    self.issues.warn(
                        where, f"spec.ports[{j}].port", f"gateway {gw_key} serves no listener on port {entry.port}"
                    )
                elif not port.terminates:
                    self.issues.warn(
                        where,
                        f"spec.ports[{j}]",
                        f"port {entry.port} is {port.describe()}: mTLS applies only to HTTPS and TLS Terminate"
                        " listeners; ignored",
                    )

    # -- output ----------------------------------------------------------------------------

    def listener(self, listener: Listener) -> Listener:
        """An HTTP(S) port's ``Listener`` with its TLS part filled in."""
        port = self.ports.get(listener.port)
        if port is None or port.protocol != "HTTPS":
            return listener
        return msgspec.structs.replace(
            listener,
            protocol="HTTPS",
            tls_mode="Terminate",
            tls=tuple(port.tls),
            client_ca_pem=port.client_ca_pem,
            client_ca_sources=port.client_ca_sources,
            client_cert_header=port.client_cert_header,
        )

    def refs_by_protocol(self, *protocols: str) -> dict[int, list[ListenerRef]]:
        out: dict[int, list[ListenerRef]] = defaultdict(list)
        for number, port in sorted(self.ports.items()):
            if port.protocol in protocols:
                out[number] = list(port.refs)
        return out
