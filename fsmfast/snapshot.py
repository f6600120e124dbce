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

SCHEMA = 2


class Endpoint(msgspec.Struct, frozen=True, gc=False):
    """One ready address of a Service port, after targetPort resolution."""

    host: str
    port: int


class SubjectAltName(msgspec.Struct, frozen=True, gc=False):
    """BackendTLSPolicy ``validation.subjectAltNames`` entry."""

    type: Literal["Hostname", "URI"]
    value: str


class PemSource(msgspec.Struct, frozen=True, gc=False, omit_defaults=True):
    """Where one part of a concatenated PEM bundle came from, for the operator's eyes only (the
    admin listener's /config, certificate expiry metrics): the data plane never reads it.

    ``name`` is ``namespace/name`` of the Secret or ConfigMap; the part is the bundle's text from
    the previous source's ``end`` (0 for the first) up to this ``end`` (a character offset).
    """

    name: str
    end: int
    kind: Literal["Secret", "ConfigMap"] = "Secret"


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
    # Which objects ``ca_pem`` and ``client_cert_pem`` came from (see PemSource): only for reporting.
    ca_sources: tuple[PemSource, ...] = ()
    client_cert_secret: str | None = None  # namespace/name


# --- resilience policies (issue 19): the data plane reads only ``lb`` (load balancing) ------------
#
# ``policy`` names where each setting came from ("RetryPolicy ns/name", "HTTPRoute ns/name
# spec.rules[0].retry") for ``fsmfast explain`` and /config. Defaults are already applied.
# Precedence, for one request: the rule's own ``retry``/``session_persistence`` (Gateway API,
# on ``Rule``) beats the backend's RetryPolicy / BackendLBPolicy; BackendLBPolicy's session
# persistence beats SessionStickyPolicy. All are recorded; the data plane picks by that order.


class LoadBalancing(msgspec.Struct, frozen=True, gc=False, omit_defaults=True):
    policy: str
    type: Literal["RoundRobinLoadBalancer", "HashingLoadBalancer", "LeastConnectionLoadBalancer"]
    # Least connections: each endpoint's counter slot in the machine-wide arena, in the order of
    # Backend.endpoints. Set by the master (fsmfast.shared.endpoints), never by the compiler; empty
    # when there is no arena, and then the workers balance round robin.
    slots: tuple[int, ...] = ()


class HealthMatch(msgspec.Struct, frozen=True, gc=False, omit_defaults=True):
    status_codes: tuple[int, ...] = ()
    body: str | None = None  # a substring of the response body
    headers: tuple[HeaderValue, ...] = ()  # exact values


class HealthCheck(msgspec.Struct, frozen=True, gc=False, omit_defaults=True):
    """Active check every ``interval`` seconds: HTTP GET ``path`` (any of ``matches`` passes),
    or a TCP connect when ``path`` is None; out after ``max_fails`` failures."""

    policy: str
    interval: int
    max_fails: int
    fail_timeout: int | None = None
    path: str | None = None
    matches: tuple[HealthMatch, ...] = ()


class Retry(msgspec.Struct, frozen=True, gc=False, omit_defaults=True):
    """``on``: "5xx" (500-599) or exact status codes as text. ``attempts`` and ``backoff``
    (seconds) None: the route left them to the implementation."""

    policy: str
    on: tuple[str, ...]
    attempts: int | None = None
    backoff: float | None = None


class CircuitBreaker(msgspec.Struct, frozen=True, gc=False, omit_defaults=True):
    policy: str
    min_request_amount: int
    stat_time_window: int
    degraded_time_window: int
    degraded_status_code: int = 503
    slow_time_threshold: float | None = None
    slow_amount_threshold: int | None = None
    slow_ratio_threshold: float | None = None
    error_amount_threshold: int | None = None
    error_ratio_threshold: float | None = None
    degraded_response_content: str | None = None


class StickyCookie(msgspec.Struct, frozen=True, gc=False):
    """FSM SessionStickyPolicy."""

    policy: str
    cookie_name: str
    expires: int


class Persistence(msgspec.Struct, frozen=True, gc=False, omit_defaults=True):
    """Gateway API sessionPersistence (HTTPRoute rule or BackendLBPolicy); timeouts in seconds."""

    policy: str
    type: Literal["Cookie", "Header"] = "Cookie"
    session_name: str | None = None
    absolute_timeout: float | None = None
    idle_timeout: float | None = None
    lifetime_type: Literal["Permanent", "Session"] = "Session"


class SharedCells(msgspec.Struct, frozen=True, gc=False, omit_defaults=True):
    """Where one backend's machine-wide state lives in the arena (``fsmfast.shared``). Set by the
    master (``fsmfast.shared.endpoints``), never by the compiler; -1 or empty: none.

    ``endpoints``: per endpoint (``Backend.endpoints`` order) the first of its health words
    (``fsmfast.resilience.health.HEALTH_CELLS``); ``breaker`` and ``budget`` the first of the circuit
    breaker's and the retry budget's words (``fsmfast.resilience.breaker``, ``.retry``).
    """

    endpoints: tuple[int, ...] = ()
    breaker: int = -1
    budget: int = -1


class BackendPolicies(msgspec.Struct, frozen=True, gc=False, omit_defaults=True):
    """The resilience policies that apply to one Service port (one winner per kind)."""

    lb: LoadBalancing | None = None
    health: HealthCheck | None = None
    retry: Retry | None = None
    circuit: CircuitBreaker | None = None
    sticky: StickyCookie | None = None
    session: Persistence | None = None  # BackendLBPolicy
    cells: SharedCells | None = None  # set by the master


# --- edge policies (issue 20): resolved here, applied by the worker (fsmfast.edge) -------------
#
# ``policy`` names the source ("RateLimitPolicy ns/name"); CRD defaults are applied. Port-level
# settings live on ``Listener.edge``; hostname- and route-level ones, already combined for each
# rule, on ``VirtualHost.edge`` keyed by ``Rule.name``: one dict lookup per request, and only on a
# virtual host that has any.


class ClientKey(msgspec.Struct, frozen=True, gc=False, omit_defaults=True):
    """fsmfast extension: a quota per client address (``ClientIP``) or per value of ``header``."""

    type: Literal["ClientIP", "Header"]
    header: str | None = None  # lower-case


class RateLimit(msgspec.Struct, frozen=True, gc=False, omit_defaults=True):
    """``requests`` per ``window`` seconds, bursts up to ``burst``; up to ``backlog`` requests wait
    for a token, the next get ``status`` with ``headers``. ``key`` None: one quota for everyone."""

    policy: str
    requests: int
    window: int
    burst: int
    backlog: int = 10
    status: int = 429
    headers: tuple[HeaderValue, ...] = ()
    mode: Literal["Local", "Global"] = "Local"
    key: ClientKey | None = None
    # Whose quota this is: ``hostname <ns>/<route> <hostname>`` for a hostname entry (all the rules of
    # that hostname share it), ``match <rule name>`` for a route-match entry. Set when resolving.
    scope: str = ""
    # The quota's first word in the machine-wide arena (fsmfast.shared), set by the master; -1: none.
    cell: int = -1


class Bandwidth(msgspec.Struct, frozen=True, gc=False):
    """Byte rate of each connection of a port (any protocol), both directions, in bytes per second
    on the client's connection (fsmfast.edge.throttle)."""

    policy: str
    bps: int


class AccessControl(msgspec.Struct, frozen=True, gc=False, omit_defaults=True):
    """Addresses and networks in canonical CIDR form. With a ``whitelist`` only it is used (FSM's
    rule: the blacklist is then empty here). ``enable_xff``: the client address is taken from
    X-Forwarded-For through ``trusted_hops`` proxies in front of the gateway or those inside
    ``trusted_proxies`` (fsmfast.edge.access.client_address); with neither, the TCP peer is used."""

    policy: str
    whitelist: tuple[str, ...] = ()
    blacklist: tuple[str, ...] = ()
    status: int = 403
    message: str = ""
    enable_xff: bool = False
    trusted_hops: int = 0
    trusted_proxies: tuple[str, ...] = ()


class Delay(msgspec.Struct, frozen=True, gc=False):
    """``percent`` of requests wait a time between ``min`` and ``max`` seconds (equal: fixed)."""

    percent: int
    min: float
    max: float


class Abort(msgspec.Struct, frozen=True, gc=False, omit_defaults=True):
    percent: int
    status: int
    message: str = ""


class FaultInjection(msgspec.Struct, frozen=True, gc=False, omit_defaults=True):
    policy: str
    delay: Delay | None = None
    abort: Abort | None = None


class EdgeRule(msgspec.Struct, frozen=True, gc=False, omit_defaults=True):
    """What applies to a request through one rule of one virtual host: rate limits and access
    control both apply, hostname level first, then route level; for fault injection the route
    level replaces the hostname level."""

    rate_limits: tuple[RateLimit, ...] = ()
    access: tuple[AccessControl, ...] = ()
    fault: FaultInjection | None = None


class PortEdge(msgspec.Struct, frozen=True, gc=False, omit_defaults=True):
    """Gateway port level: the connection ACL (before any byte is read) and the byte rate."""

    access: AccessControl | None = None
    bandwidth: Bandwidth | None = None


class Backend(msgspec.Struct, frozen=True, gc=False):
    """A Service port as an upstream: ``namespace/name:port``."""

    name: str
    endpoints: tuple[Endpoint, ...]
    tls: UpstreamTLS | None = None
    # Not ``policies``: the router reads that name as the backend's hook tuple (fsmfast.pipeline.hooks).
    resilience: BackendPolicies | None = None


# --- HTTPRoute filters and timeouts, resolved (see fsmfast.proxy.filters for run time) ---------


class HeaderValue(msgspec.Struct, frozen=True, gc=False):
    name: str
    value: str


class HeaderModifier(msgspec.Struct, frozen=True, gc=False, omit_defaults=True):
    """Request/ResponseHeaderModifier. ``remove`` names are lower-case; ``set``/``add`` keep
    the configured spelling, since that is what goes on the wire."""

    set: tuple[HeaderValue, ...] = ()
    add: tuple[HeaderValue, ...] = ()
    remove: tuple[str, ...] = ()


class PathModifier(msgspec.Struct, frozen=True, gc=False):
    type: Literal["ReplaceFullPath", "ReplacePrefixMatch"]
    value: str


class Redirect(msgspec.Struct, frozen=True, gc=False, omit_defaults=True):
    """RequestRedirect: unset parts come from the request (and the listener port)."""

    status: int = 302
    scheme: str | None = None
    hostname: str | None = None
    port: int | None = None
    path: PathModifier | None = None


class Rewrite(msgspec.Struct, frozen=True, gc=False, omit_defaults=True):
    """URLRewrite: the Host header and/or the path sent upstream."""

    hostname: str | None = None
    path: PathModifier | None = None


class Mirror(msgspec.Struct, frozen=True, gc=False, omit_defaults=True):
    """RequestMirror: ``backend`` is a key of ``Snapshot.backends``, or None with ``error``
    when the reference is invalid (the mirror is then dropped; the request is unaffected)."""

    backend: str | None = None
    error: str | None = None
    percent: float = 100.0


class Filters(msgspec.Struct, frozen=True, gc=False, omit_defaults=True):
    """The filters of a rule or of one backendRef, one slot per kind (Gateway API allows each
    of these once per list, except RequestMirror)."""

    request_headers: HeaderModifier | None = None
    response_headers: HeaderModifier | None = None
    redirect: Redirect | None = None
    rewrite: Rewrite | None = None
    mirrors: tuple[Mirror, ...] = ()


class Timeouts(msgspec.Struct, frozen=True, gc=False, omit_defaults=True):
    """HTTPRoute ``timeouts`` in seconds; None (or "0s" in the manifest) means no limit."""

    request: float | None = None
    backend_request: float | None = None


class BackendRef(msgspec.Struct, frozen=True, gc=False, omit_defaults=True):
    """One weighted choice of a rule.

    ``backend`` is a key of ``Snapshot.backends``. When the reference is invalid (missing
    Service, unknown kind, unknown port) ``backend`` is None and ``error`` says why; that
    share of traffic gets 500, as Gateway API requires. ``filters`` apply only when this
    choice is taken (backendRef-level filters).
    """

    weight: int
    backend: str | None = None
    error: str | None = None
    filters: Filters | None = None


# --- matching ------------------------------------------------------------------------------


class PathMatch(msgspec.Struct, frozen=True, gc=False):
    """``Exact`` and ``PathPrefix`` compare raw (undecoded) path bytes; a PathPrefix value is
    stored without its trailing "/". ``RegularExpression`` is a Python ``re`` full match."""

    type: Literal["Exact", "PathPrefix", "RegularExpression"]
    value: str


class HeaderMatch(msgspec.Struct, frozen=True, gc=False):
    """``name`` is lower-case (header names are case-insensitive)."""

    type: Literal["Exact", "RegularExpression"]
    name: str
    value: str


class QueryMatch(msgspec.Struct, frozen=True, gc=False):
    """``name`` is case-sensitive; the first value of a repeated parameter is matched."""

    type: Literal["Exact", "RegularExpression"]
    name: str
    value: str


class Rule(msgspec.Struct, frozen=True, gc=False, omit_defaults=True):
    """One (route, rule, match) triple, in precedence order within its virtual host.

    ``name`` is ``httproute/<ns>/<name>/rule/<i>/match/<j>``, used in the access log. The
    same name always has the same content, wherever it appears (a rule can be a candidate
    in several virtual hosts). ``filters`` and ``timeouts`` are the rule's (shared by its
    matches); a rule with a ``redirect`` has no backends.
    """

    name: str
    path: PathMatch
    backends: tuple[BackendRef, ...]
    method: str | None = None
    headers: tuple[HeaderMatch, ...] = ()
    query: tuple[QueryMatch, ...] = ()
    filters: Filters | None = None
    timeouts: Timeouts | None = None
    # Hardening knobs from the route's fsmfast.io annotations (fsmfast.config.annotations):
    # request bodies larger than this get 413; a WebSocket handshake may be tunnelled.
    max_body_size: int | None = None
    websocket: bool = False
    # Gateway API rules[].retry and rules[].sessionPersistence (issue 19). They
    # win over the backend's RetryPolicy / BackendLBPolicy / SessionStickyPolicy.
    retry: Retry | None = None
    session_persistence: Persistence | None = None


class VirtualHost(msgspec.Struct, frozen=True, gc=False, omit_defaults=True):
    """Every rule a request for this hostname may use on one port, in precedence order.

    ``hostname`` is lower-case: an exact name, a ``*.suffix`` wildcard, or ``*`` for any. A
    request uses the most specific virtual host its Host matches (exact, then the longest
    wildcard, then ``*``); that one already lists, after its own rules, the rules of the
    less specific hostnames that also match (Gateway API ranks by route hostname first, then
    by match). ``listeners`` are the Gateway listeners that own this hostname on the port
    (listener isolation: only their routes are candidates).
    """

    hostname: str
    rules: tuple[Rule, ...]
    listeners: tuple[str, ...] = ()
    # Edge policies (issue 20) per ``Rule.name``, for the rules that have any.
    edge: dict[str, EdgeRule] = {}


# --- listener TLS and L4 routes (TLS termination, passthrough, TCP) ----------------------------


class Certificate(msgspec.Struct, frozen=True, gc=False):
    """One ``certificateRefs`` Secret, resolved. ``names`` are what SNI is matched against:
    the certificate's DNS subjectAltNames and its subject CN, lower-case (FSM indexes both)."""

    name: str  # namespace/secret
    cert_pem: str
    key_pem: str
    names: tuple[str, ...]


class L4Route(msgspec.Struct, frozen=True, gc=False, omit_defaults=True):
    """A TLSRoute (for one SNI ``hostname``: exact, ``*.suffix`` or ``*``) or a TCPRoute:
    backends chosen per connection by weight."""

    name: str  # tlsroute/<ns>/<name> or tcproute/<ns>/<name>
    backends: tuple[BackendRef, ...]
    hostname: str = "*"


class ListenerTLS(msgspec.Struct, frozen=True, gc=False, omit_defaults=True):
    """One Gateway listener that terminates TLS on a port: SNI picks it by ``hostname`` (None:
    any), then one of its certificates. ``route`` is the TCPRoute of a TLS Terminate listener."""

    name: str  # namespace/gateway/listener
    hostname: str | None
    certificates: tuple[Certificate, ...]
    route: L4Route | None = None


class Listener(msgspec.Struct, frozen=True, gc=False, omit_defaults=True):
    """Everything served on one port (several Gateway listeners may share it).

    One protocol per port: HTTP and HTTPS serve ``vhosts``; HTTPS and TLS with ``tls_mode``
    Terminate terminate with ``tls`` (declaration order; the first listener's first
    certificate answers a ClientHello without SNI); TLS Passthrough routes by SNI over
    ``routes`` (most specific first) and TCP forwards to ``routes[0]``. Client certificates
    are required on the whole port when ``client_ca_pem`` is set (one handshake policy per
    port, as FSM's per-port GatewayTLSPolicy and Gateway API v1.3's per-port validation).
    """

    port: int
    protocol: Literal["HTTP", "HTTPS", "TLS", "TCP"]
    names: tuple[str, ...]
    vhosts: tuple[VirtualHost, ...]
    tls_mode: Literal["Terminate", "Passthrough"] | None = None
    tls: tuple[ListenerTLS, ...] = ()
    client_ca_pem: str | None = None
    client_ca_sources: tuple[PemSource, ...] = ()  # where client_ca_pem came from (reporting only)
    # Request header (as configured) that carries the verified client certificate's subject.
    client_cert_header: str | None = None
    routes: tuple[L4Route, ...] = ()
    # The gateway's error bodies name the namespace, Service and endpoint address that failed
    # (fsmfast.io/detailed-errors on a Gateway of this port); otherwise only the logs do.
    detailed_errors: bool = False
    # Port-level edge policies (issue 20).
    edge: PortEdge | None = None


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
