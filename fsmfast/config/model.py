"""Typed model of the Kubernetes objects fsmfast reads.

Field names follow the Kubernetes JSON names (``rename="camel"`` plus explicit names where
the API is not plain camelCase, e.g. ``mTLS``). Defaults here are the CRD defaults the API
server would have applied; those that depend on another field (a namespace defaulting to the
object's own) are resolved where they are used.

Two base classes, because Kubernetes objects mix two kinds of content:

- ``Spec`` structs describe what the user wrote on purpose; an unknown field there is most
  likely a typo, so the decoder warns about it.
- ``Loose`` structs cover top-level bodies, metadata and controller-written objects
  (EndpointSlices, Endpoints) whose extra fields are normal and are ignored silently.

``ignored`` names fields that are valid Kubernetes but unused by fsmfast: no warning.
"""

from __future__ import annotations

import base64
import binascii
from typing import Annotated, Any, ClassVar, Literal

import msgspec

Port = Annotated[int, msgspec.Meta(ge=1, le=65535)]
Weight = Annotated[int, msgspec.Meta(ge=0, le=1_000_000)]

GATEWAY_GROUP = "gateway.networking.k8s.io"


class Origin(msgspec.Struct, frozen=True):
    """Where an object was defined: file as the user named it, 1-based document number."""

    file: str
    doc: int
    # Field path prefix inside the document: "items[3]" for objects of a ``kind: List``.
    prefix: str = ""


# Subclasses repeat ``frozen=True``: msgspec inherits it, but type checkers (PEP 681) do not.
class Loose(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    strict: ClassVar[bool] = False
    ignored: ClassVar[frozenset[str]] = frozenset()
    # Fields the loader fills in; never read from a document.
    internal: ClassVar[frozenset[str]] = frozenset()


class Spec(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    strict: ClassVar[bool] = True
    ignored: ClassVar[frozenset[str]] = frozenset()
    internal: ClassVar[frozenset[str]] = frozenset()


class Meta(Loose, frozen=True, kw_only=True):
    name: str
    namespace: str = "default"
    labels: dict[str, str] = {}
    # Read for fsmfast's own knobs (e.g. ``fsmfast.io/client-cert-header`` on a Gateway).
    annotations: dict[str, str] = {}
    # Normalised to UTC "YYYY-MM-DDTHH:MM:SSZ" by the loader; None when absent.
    creation_timestamp: Any = None


class Object(Loose, frozen=True, kw_only=True):
    """Fields common to every top-level object. ``origin`` is set by the loader, never read."""

    internal = frozenset({"origin"})

    api_version: str
    kind: str
    metadata: Meta
    origin: Origin = Origin("", 0)

    @property
    def namespace(self) -> str:
        return self.metadata.namespace

    @property
    def name(self) -> str:
        return self.metadata.name

    @property
    def key(self) -> str:
        return f"{self.metadata.namespace}/{self.metadata.name}"


# --- label selectors (Kubernetes metav1.LabelSelector) -------------------------------------


class LabelSelectorRequirement(Spec, frozen=True, kw_only=True):
    key: str
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"]
    values: list[str] = []


class LabelSelector(Spec, frozen=True, kw_only=True):
    match_labels: dict[str, str] = {}
    match_expressions: list[LabelSelectorRequirement] = []


# --- Gateway --------------------------------------------------------------------------------


class RouteNamespaces(Spec, frozen=True, kw_only=True):
    from_: Literal["Same", "All", "Selector"] = msgspec.field(default="Same", name="from")
    selector: LabelSelector | None = None


class RouteGroupKind(Spec, frozen=True, kw_only=True):
    group: str = GATEWAY_GROUP
    kind: str


class AllowedRoutes(Spec, frozen=True, kw_only=True):
    namespaces: RouteNamespaces = msgspec.field(default_factory=RouteNamespaces)
    kinds: list[RouteGroupKind] = []


class SecretObjectRef(Spec, frozen=True, kw_only=True):
    """Gateway API SecretObjectReference (listener ``tls.certificateRefs``)."""

    group: str = ""
    kind: str = "Secret"
    name: str
    namespace: str | None = None


class CACertificateRef(Spec, frozen=True, kw_only=True):
    """Gateway API ObjectReference for trust anchors: a ConfigMap or a Secret with ``ca.crt``."""

    group: str = ""
    kind: str
    name: str
    namespace: str | None = None


class FrontendTLSValidation(Spec, frozen=True, kw_only=True):
    ignored = frozenset({"mode"})

    ca_certificate_refs: list[CACertificateRef] = []


class GatewayTLSConfig(Spec, frozen=True, kw_only=True):
    mode: Literal["Terminate", "Passthrough"] = "Terminate"
    certificate_refs: list[SecretObjectRef] = []
    frontend_validation: FrontendTLSValidation | None = None
    options: dict[str, str] = {}


class GatewayListener(Spec, frozen=True, kw_only=True):
    name: str
    port: Port
    protocol: str
    hostname: str | None = None
    allowed_routes: AllowedRoutes = msgspec.field(default_factory=AllowedRoutes)
    tls: GatewayTLSConfig | None = None


class GatewaySpec(Spec, frozen=True, kw_only=True):
    ignored = frozenset({"addresses", "infrastructure", "backendTLS", "tls", "allowedListeners", "defaultScope"})

    gateway_class_name: str
    listeners: list[GatewayListener] = []


class Gateway(Object, frozen=True, kw_only=True):
    spec: GatewaySpec


class GatewayClass(Object, frozen=True, kw_only=True):
    spec: Any = None


# --- HTTPRoute ------------------------------------------------------------------------------


class ParentRef(Spec, frozen=True, kw_only=True):
    group: str = GATEWAY_GROUP
    kind: str = "Gateway"
    namespace: str | None = None
    name: str
    section_name: str | None = None
    port: Port | None = None


class HTTPPathMatch(Spec, frozen=True, kw_only=True):
    type: Literal["Exact", "PathPrefix", "RegularExpression"] = "PathPrefix"
    value: str = "/"


class HTTPHeaderMatch(Spec, frozen=True, kw_only=True):
    type: Literal["Exact", "RegularExpression"] = "Exact"
    name: str
    value: str


class HTTPQueryParamMatch(Spec, frozen=True, kw_only=True):
    type: Literal["Exact", "RegularExpression"] = "Exact"
    name: str
    value: str


HTTPMethod = Literal["GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"]


class HTTPRouteMatch(Spec, frozen=True, kw_only=True):
    path: HTTPPathMatch = msgspec.field(default_factory=HTTPPathMatch)
    headers: list[HTTPHeaderMatch] = []
    query_params: list[HTTPQueryParamMatch] = []
    method: HTTPMethod | None = None


class HTTPHeader(Spec, frozen=True, kw_only=True):
    name: str
    value: str


class HTTPHeaderFilter(Spec, frozen=True, kw_only=True):
    """RequestHeaderModifier / ResponseHeaderModifier body."""

    set: list[HTTPHeader] = []
    add: list[HTTPHeader] = []
    remove: list[str] = []


class HTTPPathModifier(Spec, frozen=True, kw_only=True):
    type: Literal["ReplaceFullPath", "ReplacePrefixMatch"]
    replace_full_path: str | None = None
    replace_prefix_match: str | None = None


class HTTPRequestRedirectFilter(Spec, frozen=True, kw_only=True):
    scheme: Literal["http", "https"] | None = None
    hostname: str | None = None
    path: HTTPPathModifier | None = None
    port: Port | None = None
    # One of 301, 302, 303, 307, 308; checked with the route (the decoder's literals are strings).
    status_code: int = 302


class HTTPURLRewriteFilter(Spec, frozen=True, kw_only=True):
    hostname: str | None = None
    path: HTTPPathModifier | None = None


class BackendObjectRef(Spec, frozen=True, kw_only=True):
    group: str = ""
    kind: str = "Service"
    name: str
    namespace: str | None = None
    port: Port | None = None


class Fraction(Spec, frozen=True, kw_only=True):
    numerator: Annotated[int, msgspec.Meta(ge=0)]
    denominator: Annotated[int, msgspec.Meta(ge=1)] = 100


class HTTPRequestMirrorFilter(Spec, frozen=True, kw_only=True):
    backend_ref: BackendObjectRef
    percent: Annotated[int, msgspec.Meta(ge=0, le=100)] | None = None
    fraction: Fraction | None = None


class HTTPRouteFilter(Spec, frozen=True, kw_only=True):
    """One filter; ``type`` says which body applies (checked with the route)."""

    type: str
    request_header_modifier: HTTPHeaderFilter | None = None
    response_header_modifier: HTTPHeaderFilter | None = None
    request_mirror: HTTPRequestMirrorFilter | None = None
    request_redirect: HTTPRequestRedirectFilter | None = None
    url_rewrite: HTTPURLRewriteFilter | None = msgspec.field(default=None, name="urlRewrite")
    extension_ref: Any = None
    cors: Any = None
    external_auth: Any = None


class HTTPBackendRef(Spec, frozen=True, kw_only=True):
    group: str = ""
    kind: str = "Service"
    name: str
    namespace: str | None = None
    port: Port | None = None
    weight: Weight = 1
    filters: list[HTTPRouteFilter] = []


class HTTPRouteTimeouts(Spec, frozen=True, kw_only=True):
    request: str | None = None
    backend_request: str | None = None


class HTTPRouteRule(Spec, frozen=True, kw_only=True):
    name: str | None = None
    matches: list[HTTPRouteMatch] = []
    filters: list[HTTPRouteFilter] = []
    backend_refs: list[HTTPBackendRef] = []
    timeouts: HTTPRouteTimeouts | None = None
    retry: HTTPRouteRetry | None = None
    session_persistence: SessionPersistence | None = None


class HTTPRouteSpec(Spec, frozen=True, kw_only=True):
    parent_refs: list[ParentRef] = []
    hostnames: list[str] = []
    rules: list[HTTPRouteRule] = []


class HTTPRoute(Object, frozen=True, kw_only=True):
    spec: HTTPRouteSpec = msgspec.field(default_factory=HTTPRouteSpec)


# --- ReferenceGrant -------------------------------------------------------------------------


class ReferenceGrantFrom(Spec, frozen=True, kw_only=True):
    group: str
    kind: str
    namespace: str


class ReferenceGrantTo(Spec, frozen=True, kw_only=True):
    group: str
    kind: str
    name: str | None = None


class ReferenceGrantSpec(Spec, frozen=True, kw_only=True):
    from_: list[ReferenceGrantFrom] = msgspec.field(default_factory=list, name="from")
    to: list[ReferenceGrantTo] = []


class ReferenceGrant(Object, frozen=True, kw_only=True):
    spec: ReferenceGrantSpec


class Namespace(Object, frozen=True, kw_only=True):
    pass


# --- Service and its endpoints --------------------------------------------------------------


class ServicePort(Spec, frozen=True, kw_only=True):
    ignored = frozenset({"nodePort", "appProtocol"})

    name: str = ""
    port: Port
    # int or IANA port name; None means "same as port".
    target_port: int | str | None = None
    protocol: str = "TCP"


class ServiceSpec(Spec, frozen=True, kw_only=True):
    # Standard Service fields fsmfast has no use for: known, so no typo warning.
    ignored = frozenset(
        {
            "selector",
            "type",
            "clusterIP",
            "clusterIPs",
            "externalIPs",
            "externalName",
            "sessionAffinity",
            "sessionAffinityConfig",
            "loadBalancerIP",
            "loadBalancerSourceRanges",
            "loadBalancerClass",
            "externalTrafficPolicy",
            "internalTrafficPolicy",
            "healthCheckNodePort",
            "publishNotReadyAddresses",
            "ipFamilies",
            "ipFamilyPolicy",
            "allocateLoadBalancerNodePorts",
            "trafficDistribution",
        }
    )

    ports: list[ServicePort] = []


class Service(Object, frozen=True, kw_only=True):
    spec: ServiceSpec = msgspec.field(default_factory=ServiceSpec)


class EndpointConditions(Loose, frozen=True, kw_only=True):
    ready: bool | None = None


class SliceEndpoint(Loose, frozen=True, kw_only=True):
    addresses: list[str] = []
    conditions: EndpointConditions = msgspec.field(default_factory=EndpointConditions)


class SlicePort(Loose, frozen=True, kw_only=True):
    name: str | None = None
    port: Port | None = None
    protocol: str = "TCP"


class EndpointSlice(Object, frozen=True, kw_only=True):
    address_type: str = "IPv4"
    endpoints: list[SliceEndpoint] = []
    ports: list[SlicePort] = []


class EndpointAddress(Loose, frozen=True, kw_only=True):
    ip: str


class EndpointPort(Loose, frozen=True, kw_only=True):
    name: str | None = None
    port: Port
    protocol: str = "TCP"


class EndpointSubset(Loose, frozen=True, kw_only=True):
    addresses: list[EndpointAddress] = []
    not_ready_addresses: list[EndpointAddress] = []
    ports: list[EndpointPort] = []


class Endpoints(Object, frozen=True, kw_only=True):
    subsets: list[EndpointSubset] = []


# --- Secret and ConfigMap -------------------------------------------------------------------


class Secret(Object, frozen=True, kw_only=True):
    data: dict[str, str] = {}
    string_data: dict[str, str] = {}
    type: str | None = None

    def value(self, key: str) -> bytes | None:
        # stringData wins, as the API server merges it over data on write.
        if key in self.string_data:
            return self.string_data[key].encode()
        if key in self.data:
            return decode_base64(self.data[key])
        return None

    def field_of(self, key: str) -> str:
        return f"stringData.{key}" if key in self.string_data else f"data.{key}"


class ConfigMap(Object, frozen=True, kw_only=True):
    data: dict[str, str] = {}

    def value(self, key: str) -> bytes | None:
        text = self.data.get(key)
        return None if text is None else text.encode()

    def field_of(self, key: str) -> str:
        return f"data.{key}"


def decode_base64(text: str) -> bytes:
    """Strict base64 as the API server reads it, tolerating line breaks of block scalars."""
    return base64.b64decode("".join(text.split()), validate=True)


Base64Error = binascii.Error


# --- Flomesh UpstreamTLSPolicy --------------------------------------------------------------


class SecretRef(Spec, frozen=True, kw_only=True):
    group: str = ""
    kind: str = "Secret"
    name: str
    namespace: str | None = None


class UpstreamTLSConfig(Spec, frozen=True, kw_only=True):
    certificate_ref: SecretRef | None = None
    m_tls: bool | None = msgspec.field(default=None, name="mTLS")


class UpstreamTLSPort(Spec, frozen=True, kw_only=True):
    port: Port
    config: UpstreamTLSConfig | None = None


class PolicyTargetRef(Spec, frozen=True, kw_only=True):
    group: str = ""
    kind: str
    name: str
    namespace: str | None = None


class UpstreamTLSPolicySpec(Spec, frozen=True, kw_only=True):
    target_ref: PolicyTargetRef
    ports: list[UpstreamTLSPort] = []
    config: UpstreamTLSConfig | None = None


class UpstreamTLSPolicy(Object, frozen=True, kw_only=True):
    spec: UpstreamTLSPolicySpec


# --- Gateway API BackendTLSPolicy -----------------------------------------------------------


class LocalTargetRef(Spec, frozen=True, kw_only=True):
    group: str = ""
    kind: str
    name: str
    section_name: str | None = None


class LocalObjectRef(Spec, frozen=True, kw_only=True):
    group: str = ""
    kind: str
    name: str


class SubjectAltNameSpec(Spec, frozen=True, kw_only=True):
    type: Literal["Hostname", "URI"]
    hostname: str | None = None
    uri: str | None = None


class BackendTLSValidation(Spec, frozen=True, kw_only=True):
    ca_certificate_refs: list[LocalObjectRef] = []
    well_known_ca_certificates: Literal["System"] | None = msgspec.field(default=None, name="wellKnownCACertificates")
    hostname: str
    subject_alt_names: list[SubjectAltNameSpec] = []


class BackendTLSPolicySpec(Spec, frozen=True, kw_only=True):
    target_refs: list[LocalTargetRef]
    validation: BackendTLSValidation
    options: dict[str, str] = {}


class BackendTLSPolicy(Object, frozen=True, kw_only=True):
    spec: BackendTLSPolicySpec


# --- TLSRoute and TCPRoute (L4) -----------------------------------------------------------


class L4BackendRef(Spec, frozen=True, kw_only=True):
    group: str = ""
    kind: str = "Service"
    name: str
    namespace: str | None = None
    port: Port | None = None
    weight: Weight = 1


class L4RouteRule(Spec, frozen=True, kw_only=True):
    name: str | None = None
    backend_refs: list[L4BackendRef] = []


class TLSRouteSpec(Spec, frozen=True, kw_only=True):
    parent_refs: list[ParentRef] = []
    hostnames: list[str] = []
    rules: list[L4RouteRule] = []


class TLSRoute(Object, frozen=True, kw_only=True):
    spec: TLSRouteSpec = msgspec.field(default_factory=TLSRouteSpec)


class TCPRouteSpec(Spec, frozen=True, kw_only=True):
    parent_refs: list[ParentRef] = []
    rules: list[L4RouteRule] = []


class TCPRoute(Object, frozen=True, kw_only=True):
    spec: TCPRouteSpec = msgspec.field(default_factory=TCPRouteSpec)


# --- Flomesh GatewayTLSPolicy (client mTLS per Gateway port; FSM v1.2) ----------------------


class GatewayTLSPolicyConfig(Spec, frozen=True, kw_only=True):
    m_tls: bool | None = msgspec.field(default=None, name="mTLS")


class GatewayTLSPolicyPort(Spec, frozen=True, kw_only=True):
    port: Port
    config: GatewayTLSPolicyConfig | None = None


class GatewayTLSPolicySpec(Spec, frozen=True, kw_only=True):
    target_ref: PolicyTargetRef
    ports: list[GatewayTLSPolicyPort] = []
    config: GatewayTLSPolicyConfig | None = None


class GatewayTLSPolicy(Object, frozen=True, kw_only=True):
    spec: GatewayTLSPolicySpec


# --- Flomesh service-level resilience policies (issue 19) -----------------------------------
#
# Every config field is optional here, None meaning "not written": FSM merges ``ports[].config``
# over the spec-level ``config`` field by field, and only then applies the CRD defaults
# (fsmfast.config.policies.effective_*). The defaults are the CRD's, listed in that module.

Seconds = Annotated[int, msgspec.Meta(ge=1)]
Ratio = Annotated[float, msgspec.Meta(ge=0.0, le=1.0)]


class RetryConfig(Spec, frozen=True, kw_only=True):
    retry_on: list[str] | None = None
    num_retries: Annotated[int, msgspec.Meta(ge=1)] | None = None
    backoff_base_interval: Annotated[float, msgspec.Meta(ge=0.001)] | None = None


class HealthCheckHeader(Spec, frozen=True, kw_only=True):
    name: str
    value: str


class HealthCheckMatch(Spec, frozen=True, kw_only=True):
    status_codes: list[Annotated[int, msgspec.Meta(ge=100, le=599)]] = []
    body: str | None = None
    headers: list[HealthCheckHeader] = []


class HealthCheckConfig(Spec, frozen=True, kw_only=True):
    interval: Seconds | None = None
    max_fails: Annotated[int, msgspec.Meta(ge=0)] | None = None
    fail_timeout: Seconds | None = None
    path: str | None = None
    matches: list[HealthCheckMatch] | None = None


class CircuitBreakingConfig(Spec, frozen=True, kw_only=True):
    min_request_amount: Annotated[int, msgspec.Meta(ge=1)] | None = None
    stat_time_window: Seconds | None = None
    slow_time_threshold: Annotated[float, msgspec.Meta(ge=0.0001)] | None = None
    slow_amount_threshold: Annotated[int, msgspec.Meta(ge=1)] | None = None
    slow_ratio_threshold: Ratio | None = None
    error_amount_threshold: Annotated[int, msgspec.Meta(ge=1)] | None = None
    error_ratio_threshold: Ratio | None = None
    degraded_time_window: Seconds | None = None
    degraded_status_code: Annotated[int, msgspec.Meta(ge=1, le=10000)] | None = None
    degraded_response_content: str | None = None


class SessionStickyConfig(Spec, frozen=True, kw_only=True):
    cookie_name: str | None = None
    expires: Seconds | None = None


LoadBalancerType = Literal["RoundRobinLoadBalancer", "HashingLoadBalancer", "LeastConnectionLoadBalancer"]


class RetryPort(Spec, frozen=True, kw_only=True):
    port: Port
    config: RetryConfig | None = None


class HealthCheckPort(Spec, frozen=True, kw_only=True):
    port: Port
    config: HealthCheckConfig | None = None


class CircuitBreakingPort(Spec, frozen=True, kw_only=True):
    port: Port
    config: CircuitBreakingConfig | None = None


class SessionStickyPort(Spec, frozen=True, kw_only=True):
    port: Port
    config: SessionStickyConfig | None = None


class LoadBalancerPort(Spec, frozen=True, kw_only=True):
    # No ``config`` wrapper: ``type`` sits on the port entry (FSM's CRD).
    port: Port
    type: LoadBalancerType | None = None


class RetryPolicySpec(Spec, frozen=True, kw_only=True):
    target_ref: PolicyTargetRef
    ports: list[RetryPort] = []
    config: RetryConfig | None = None


class HealthCheckPolicySpec(Spec, frozen=True, kw_only=True):
    target_ref: PolicyTargetRef
    ports: list[HealthCheckPort] = []
    config: HealthCheckConfig | None = None


class CircuitBreakingPolicySpec(Spec, frozen=True, kw_only=True):
    target_ref: PolicyTargetRef
    ports: list[CircuitBreakingPort] = []
    config: CircuitBreakingConfig | None = None


class SessionStickyPolicySpec(Spec, frozen=True, kw_only=True):
    target_ref: PolicyTargetRef
    ports: list[SessionStickyPort] = []
    config: SessionStickyConfig | None = None


class LoadBalancerPolicySpec(Spec, frozen=True, kw_only=True):
    target_ref: PolicyTargetRef
    ports: list[LoadBalancerPort] = []
    type: LoadBalancerType | None = None  # the default of ports[] entries without one ("DefaultType")


class RetryPolicy(Object, frozen=True, kw_only=True):
    spec: RetryPolicySpec


class HealthCheckPolicy(Object, frozen=True, kw_only=True):
    spec: HealthCheckPolicySpec


class CircuitBreakingPolicy(Object, frozen=True, kw_only=True):
    spec: CircuitBreakingPolicySpec


class SessionStickyPolicy(Object, frozen=True, kw_only=True):
    spec: SessionStickyPolicySpec


class LoadBalancerPolicy(Object, frozen=True, kw_only=True):
    spec: LoadBalancerPolicySpec


# --- Gateway API retry and session persistence (HTTPRoute rules, BackendLBPolicy) ------------


class HTTPRouteRetry(Spec, frozen=True, kw_only=True):
    codes: list[Annotated[int, msgspec.Meta(ge=400, le=599)]] = []
    attempts: Annotated[int, msgspec.Meta(ge=0)] | None = None
    backoff: str | None = None  # a Gateway API duration, checked with the route


class CookieConfig(Spec, frozen=True, kw_only=True):
    lifetime_type: Literal["Permanent", "Session"] = "Session"


class SessionPersistence(Spec, frozen=True, kw_only=True):
    session_name: Annotated[str, msgspec.Meta(max_length=128)] | None = None
    absolute_timeout: str | None = None  # Gateway API durations, checked where used
    idle_timeout: str | None = None
    type: Literal["Cookie", "Header"] = "Cookie"
    cookie_config: CookieConfig | None = None


class BackendLBPolicySpec(Spec, frozen=True, kw_only=True):
    target_refs: list[LocalObjectRef]
    session_persistence: SessionPersistence


class BackendLBPolicy(Object, frozen=True, kw_only=True):
    spec: BackendLBPolicySpec


# --- Flomesh edge policies (issue 20): RateLimitPolicy, AccessControlPolicy, FaultInjectionPolicy ---
#
# As with the resilience policies, every config field is optional here (None: "not written"):
# an entry's ``config`` is merged field by field over the spec-level ``config``, then the CRD
# defaults apply (fsmfast.config.edge). ``key``, ``trustedHops`` and ``trustedProxies`` are
# fsmfast extensions (docs/edge-policies.md).

Positive = Annotated[int, msgspec.Meta(ge=1)]
Status = Annotated[int, msgspec.Meta(ge=1, le=10000)]
Percent = Annotated[int, msgspec.Meta(ge=0, le=100)]
TimeUnit = Literal["ms", "s", "m", "h", "d"]


class GRPCMethodMatch(Spec, frozen=True, kw_only=True):
    type: Literal["Exact", "RegularExpression"] = "Exact"
    service: str | None = None
    method: str | None = None


class GRPCHeaderMatch(Spec, frozen=True, kw_only=True):
    type: Literal["Exact", "RegularExpression"] = "Exact"
    name: str
    value: str


class GRPCRouteMatch(Spec, frozen=True, kw_only=True):
    method: GRPCMethodMatch | None = None
    headers: list[GRPCHeaderMatch] = []


class RateLimitKey(Spec, frozen=True, kw_only=True):
    """fsmfast extension: one quota per client address, or per value of a request header."""

    type: Literal["ClientIP", "Header"]
    name: str | None = None  # the header, with type Header


class L7RateLimit(Spec, frozen=True, kw_only=True):
    mode: Literal["Local", "Global"] | None = None
    backlog: Positive | None = None
    requests: Positive | None = None
    burst: Positive | None = None
    stat_time_window: Positive | None = None
    response_status_code: Status | None = None
    response_headers_to_add: list[HTTPHeader] | None = None
    key: RateLimitKey | None = None


class RateLimitPort(Spec, frozen=True, kw_only=True):
    port: Port
    bps: Annotated[int, msgspec.Meta(ge=1)] | None = None


class RateLimitHostname(Spec, frozen=True, kw_only=True):
    hostname: str
    config: L7RateLimit | None = None


class RateLimitHTTPMatch(Spec, frozen=True, kw_only=True):
    match: HTTPRouteMatch
    config: L7RateLimit | None = None


class RateLimitGRPCMatch(Spec, frozen=True, kw_only=True):
    match: GRPCRouteMatch
    config: L7RateLimit | None = None


class RateLimitPolicySpec(Spec, frozen=True, kw_only=True):
    target_ref: PolicyTargetRef
    ports: list[RateLimitPort] = []
    bps: Annotated[int, msgspec.Meta(ge=1)] | None = None
    hostnames: list[RateLimitHostname] = []
    http: list[RateLimitHTTPMatch] = []
    grpc: list[RateLimitGRPCMatch] = []
    config: L7RateLimit | None = None


class RateLimitPolicy(Object, frozen=True, kw_only=True):
    spec: RateLimitPolicySpec


class AccessControlConfig(Spec, frozen=True, kw_only=True):
    blacklist: list[str] | None = None
    whitelist: list[str] | None = None
    enable_xff: bool | None = msgspec.field(default=None, name="enableXFF")
    status_code: Status | None = None
    message: str | None = None
    trusted_hops: Annotated[int, msgspec.Meta(ge=0, le=64)] | None = None  # fsmfast extension
    trusted_proxies: list[str] | None = None  # fsmfast extension


class AccessControlPort(Spec, frozen=True, kw_only=True):
    port: Port
    config: AccessControlConfig | None = None


class AccessControlHostname(Spec, frozen=True, kw_only=True):
    hostname: str
    config: AccessControlConfig | None = None


class AccessControlHTTPMatch(Spec, frozen=True, kw_only=True):
    match: HTTPRouteMatch
    config: AccessControlConfig | None = None


class AccessControlGRPCMatch(Spec, frozen=True, kw_only=True):
    match: GRPCRouteMatch
    config: AccessControlConfig | None = None


class AccessControlPolicySpec(Spec, frozen=True, kw_only=True):
    target_ref: PolicyTargetRef
    ports: list[AccessControlPort] = []
    hostnames: list[AccessControlHostname] = []
    http: list[AccessControlHTTPMatch] = []
    grpc: list[AccessControlGRPCMatch] = []
    config: AccessControlConfig | None = None


class AccessControlPolicy(Object, frozen=True, kw_only=True):
    spec: AccessControlPolicySpec


class FaultRange(Spec, frozen=True, kw_only=True):
    min: Annotated[int, msgspec.Meta(ge=0)]
    max: Positive


class FaultDelay(Spec, frozen=True, kw_only=True):
    percent: Percent
    fixed: Annotated[int, msgspec.Meta(ge=0)] | None = None
    range: FaultRange | None = None
    unit: TimeUnit | None = None


class FaultAbort(Spec, frozen=True, kw_only=True):
    percent: Percent
    status_code: Status | None = None
    message: str | None = None


class FaultInjectionConfig(Spec, frozen=True, kw_only=True):
    delay: FaultDelay | None = None
    abort: FaultAbort | None = None


class FaultInjectionHostname(Spec, frozen=True, kw_only=True):
    hostname: str
    config: FaultInjectionConfig | None = None


class FaultInjectionHTTPMatch(Spec, frozen=True, kw_only=True):
    match: HTTPRouteMatch
    config: FaultInjectionConfig | None = None


class FaultInjectionGRPCMatch(Spec, frozen=True, kw_only=True):
    match: GRPCRouteMatch
    config: FaultInjectionConfig | None = None


class FaultInjectionPolicySpec(Spec, frozen=True, kw_only=True):
    target_ref: PolicyTargetRef
    hostnames: list[FaultInjectionHostname] = []
    http: list[FaultInjectionHTTPMatch] = []
    grpc: list[FaultInjectionGRPCMatch] = []
    config: FaultInjectionConfig | None = None
    unit: TimeUnit = "ms"


class FaultInjectionPolicy(Object, frozen=True, kw_only=True):
    spec: FaultInjectionPolicySpec


# --- the whole set --------------------------------------------------------------------------


class Manifests(msgspec.Struct, kw_only=True):
    """Every valid object, in file/document order; invalid ones are left out."""

    gateway_classes: list[GatewayClass] = []
    gateways: list[Gateway] = []
    routes: list[HTTPRoute] = []
    reference_grants: list[ReferenceGrant] = []
    namespaces: list[Namespace] = []
    services: list[Service] = []
    endpoint_slices: list[EndpointSlice] = []
    endpoints: list[Endpoints] = []
    secrets: list[Secret] = []
    config_maps: list[ConfigMap] = []
    upstream_tls_policies: list[UpstreamTLSPolicy] = []
    backend_tls_policies: list[BackendTLSPolicy] = []
    tls_routes: list[TLSRoute] = []
    tcp_routes: list[TCPRoute] = []
    gateway_tls_policies: list[GatewayTLSPolicy] = []
    retry_policies: list[RetryPolicy] = []
    health_check_policies: list[HealthCheckPolicy] = []
    circuit_breaking_policies: list[CircuitBreakingPolicy] = []
    session_sticky_policies: list[SessionStickyPolicy] = []
    load_balancer_policies: list[LoadBalancerPolicy] = []
    backend_lb_policies: list[BackendLBPolicy] = []
    rate_limit_policies: list[RateLimitPolicy] = []
    access_control_policies: list[AccessControlPolicy] = []
    fault_injection_policies: list[FaultInjectionPolicy] = []
    files: list[str] = []
    documents: int = 0
    digest: str = ""
