"""Session persistence (issue 19): FSM's SessionStickyPolicy cookie and Gateway API's
``sessionPersistence`` (Cookie and Header types), the same in every worker and every process.

A session value names an endpoint by a token, never by its address::

    token = base64url(HMAC-SHA256(key, scope + "\\0" + "host:port"))[:16]

``key`` is the machine's 256-bit session key, which the master writes once into the arena's first
``KEY_CELLS`` cells before it forks; every worker reads the same key and computes the same tokens,
so no table is shared. ``scope`` names who owns the session (a route rule, or a backend for a
Service-level policy): two scopes never accept each other's values (GEP-1619: two rules MUST NOT
share a session).

Gateway API timeouts travel in the value, after the token, as base36 seconds of the wall clock
(sessions outlive processes, and CLOCK_MONOTONIC restarts with the machine):
``token[.issued][.seen]``, ``issued`` when ``absoluteTimeout`` is set, ``seen`` (the last response)
when ``idleTimeout`` is. They are not signed: a client that edits them only prolongs its own
pinning, which it could also get by replaying its first response's value.

Nothing here runs for a backend without a session policy: the run-time backend builds a
``Session`` only for those that have one.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import math
import time
import zlib
from collections.abc import Iterator, Sequence
from typing import Any

from msgspec.structs import replace

from fsmfast.snapshot import Endpoint, Persistence, StickyCookie

KEY_CELLS = 4  # arena cells 0..3: the 256-bit session key
KEY_BYTES = 8 * KEY_CELLS
TOKEN_CHARS = 16  # 96 bits of the HMAC
# Longer values are not ours: skipped before any work (a client may send kilobytes of cookies).
MAX_VALUE = TOKEN_CHARS + 2 * 12
# A timestamp this far in the future is not one we wrote (clocks of a fleet differ by less).
SKEW = 300.0
DIGITS36 = "0123456789abcdefghijklmnopqrstuvwxyz"
HeaderList = list[tuple[bytes, bytes]]


def write_session_key(cells: Any, key: bytes) -> None:
    """The master, once, before it forks: ``key`` (32 random bytes) into cells 0..3."""
    if len(key) != KEY_BYTES or not any(key):
        raise ValueError(f"a session key is {KEY_BYTES} bytes, not all zero")
    for i in range(KEY_CELLS):
        cells.store(i, int.from_bytes(key[8 * i : 8 * i + 8], "little", signed=True))


def session_key(cells: Any) -> bytes:
    """The key the master wrote (a worker reads it when it builds its sessions)."""
    key = b"".join(cells.load(i).to_bytes(8, "little", signed=True) for i in range(KEY_CELLS))
    if not any(key):
        raise RuntimeError("the arena holds no session key (the master writes it before it forks)")
    return key


def endpoint_names(endpoints: Sequence[Endpoint]) -> list[str]:
    """The "host:port" names a Session takes, in the backend's order."""
    return [f"{ep.host}:{ep.port}" for ep in endpoints]


def token(key: bytes, scope: str, endpoint: str) -> bytes:
    mac = hmac.new(key, scope.encode() + b"\0" + endpoint.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac)[:TOKEN_CHARS]


def default_name(scope: str) -> str:
    """A Gateway API session without ``sessionName``: a cookie or header name of its own, the
    same in every worker (crc32, not hash(): that is salted per process)."""
    return f"fsmfast-{zlib.crc32(scope.encode()):08x}"


def base36(n: int) -> bytes:
    out = ""
    while True:
        n, d = divmod(n, 36)
        out = DIGITS36[d] + out
        if not n:
            return out.encode()


def parse36(text: bytes) -> int:
    """-1 unless ``text`` is 1-12 base36 digits (int() alone would accept signs, spaces and "_")."""
    if not 0 < len(text) <= 12 or not text.isalnum() or not text.isascii():
        return -1
    return int(text, 36)


def cookie_values(headers: HeaderList, name: bytes) -> Iterator[bytes]:
    """The values of cookie ``name`` in every Cookie header, in order (RFC 6265 §5.4 pairs
    "; "-separated; also tolerates missing spaces, tabs, empty pairs and double-quoted values)."""
    for hname, value in headers:
        if len(hname) != 6 or hname.lower() != b"cookie" or name not in value:
            continue
        for pair in value.split(b";"):
            eq = pair.find(b"=")
            if eq < 0 or pair[:eq].strip(b" \t") != name:
                continue
            v = pair[eq + 1 :].strip(b" \t")
            if len(v) >= 2 and v[0] == 0x22 and v[-1] == 0x22:
                v = v[1:-1]
            yield v


def header_values(headers: HeaderList, lname: bytes) -> Iterator[bytes]:
    for hname, value in headers:
        if len(hname) == len(lname) and hname.lower() == lname:
            yield value.strip(b" \t")


class Session:
    """One session policy applied to one backend's endpoints under one scope.

    Per request (``now`` = time.time())::

        index, issued = session.pinned(headers, now)
        if index < 0 or <endpoint index is out>:   # none, unknown, expired, or gone/unhealthy
            index = <the balancer's pick>; plan = session.plan(inner, index, now, secure)  # (re)pinned
        elif session.refresh:                     # idle timeout or Header type: every response carries it
            plan = session.plan(inner, index, now, secure, issued)
        else:
            plan = inner                          # the client already holds the value
    """

    __slots__ = (
        "_by_index",
        "absolute",
        "endpoints",
        "header",
        "idle",
        "lname",
        "max_age",
        "name",
        "permanent",
        "refresh",
        "scope",
        "tokens",
    )

    def __init__(self, spec: StickyCookie | Persistence, scope: str, key: bytes, endpoints: Sequence[str]) -> None:
        self.scope = scope
        self.endpoints = tuple(endpoints)
        self.absolute: float | None = None
        self.idle: float | None = None
        self.max_age: int | None = None  # a Permanent cookie's lifetime, in seconds
        if isinstance(spec, StickyCookie):
            # FSM's cookie: it has an expiry, so a Permanent cookie; the client ends it.
            self.header = False
            self.name = spec.cookie_name.encode()
            self.max_age = spec.expires
        else:
            self.header = spec.type == "Header"
            self.name = (spec.session_name or default_name(scope)).encode()
            self.absolute = spec.absolute_timeout
            self.idle = spec.idle_timeout
            if spec.lifetime_type == "Permanent" and not self.header and spec.absolute_timeout is not None:
                self.max_age = max(1, math.ceil(spec.absolute_timeout))
        self.permanent = self.max_age is not None
        self.lname = self.name.lower()
        # Every response carries the value anew: the idle clock restarts with it; and a Header
        # session's value must replace an upstream's own header of that name on every response,
        # not only on those that (re)pin, else the client would keep the upstream's and lose the session.
        self.refresh = self.idle is not None or self.header
        self._by_index = [token(key, scope, ep) for ep in self.endpoints]
        self.tokens: dict[bytes, int] = {}
        for i, t in enumerate(self._by_index):
            self.tokens.setdefault(t, i)  # an address listed twice: its first place

    # -- requests ------------------------------------------------------------------------

    def values(self, headers: HeaderList) -> Iterator[bytes]:
        """The raw values the request carries under this session's name."""
        if self.header:
            return header_values(headers, self.lname)
        return cookie_values(headers, self.name)

    def check(self, value: bytes, now: float) -> tuple[bytes, float] | None:
        """(token, issue time) of a well-formed, unexpired value; None otherwise. The issue time is
        ``now`` when the session does not carry one."""
        if len(value) > MAX_VALUE:
            return None
        parts = value.split(b".")
        expected = 1 + (self.absolute is not None) + (self.idle is not None)
        if len(parts) != expected or len(parts[0]) != TOKEN_CHARS:
            return None
        issued = now
        at = 1
        if self.absolute is not None:
            stamp = parse36(parts[at])
            at += 1
            if stamp < 0 or stamp > now + SKEW or now - stamp > self.absolute:
                return None
            issued = float(stamp)
        if self.idle is not None:
            seen = parse36(parts[at])
            if seen < 0 or seen > now + SKEW or now - seen > self.idle:
                return None
        return parts[0], issued

    def pinned(self, headers: HeaderList, now: float) -> tuple[int, float]:
        """(endpoint index, issue time) of the request's session, or (-1, now): no session, or one
        that is unknown (another scope, a gone endpoint), malformed or expired. The first valid
        value wins (a browser may send stale cookies of the same name for other paths)."""
        for value in self.values(headers):
            found = self.check(value, now)
            if found is not None:
                index = self.tokens.get(found[0], -1)
                if index >= 0:
                    return index, found[1]
        return -1, now

    def lookup(self, headers: HeaderList, now: float) -> int:
        """The endpoint index the request's session names, or -1 (see ``pinned``)."""
        return self.pinned(headers, now)[0]

    # -- responses -----------------------------------------------------------------------

    def value(self, index: int, now: float, issued: float | None = None) -> bytes:
        """The value naming endpoint ``index``; ``issued`` keeps a session's start across refreshes."""
        out = self._by_index[index]
        if self.absolute is not None:
            out += b"." + base36(int(now if issued is None else issued))
        if self.idle is not None:
            out += b"." + base36(int(now))
        return out

    def issue(self, index: int, now: float, secure: bool, issued: float | None = None) -> tuple[bytes, bytes]:
        """The response header that (re)issues the session naming endpoint ``index``."""
        value = self.value(index, now, issued)
        if self.header:
            return self.name, value
        parts = [self.name + b"=" + value, b"Path=/"]
        if self.max_age is not None:
            max_age = self.max_age
            if self.absolute is not None and issued is not None:
                # A re-issued Permanent cookie must not outlive the session's absolute timeout.
                max_age = max(1, math.ceil(self.absolute - (now - issued)))
            parts.append(b"Max-Age=%d" % max_age)
        parts += [b"HttpOnly", b"SameSite=Strict"]
        if secure:
            # Only over TLS: a Secure cookie set over plain HTTP is dropped by browsers and curl.
            parts.append(b"Secure")
        return b"Set-Cookie", b"; ".join(parts)

    def plan(self, inner: Any, index: int, now: float, secure: bool, issued: float | None = None) -> SessionPlan:
        """``inner`` (the choice's RequestPlan or None) plus this session's response header."""
        return SessionPlan(inner, self.issue(index, now, secure, issued), self.header)


class SessionPlan:
    """A RequestPlan as the exchange uses it, with the session's header added to the response."""

    __slots__ = ("header", "inner", "line", "mirrors")

    def __init__(self, inner: Any, line: tuple[bytes, bytes], replace_header: bool) -> None:
        self.inner = inner
        self.line = line  # the Set-Cookie or session header
        self.header = replace_header  # Header type: the upstream's own header of that name goes
        self.mirrors: tuple[Any, ...] = inner.mirrors if inner is not None else ()

    # What fsmfast.proxy.mirror reads of a plan before it calls request().
    @property
    def request_ops(self) -> tuple[Any, ...]:
        return self.inner.request_ops if self.inner is not None else ()

    @property
    def host(self) -> bytes | None:
        return self.inner.host if self.inner is not None else None

    @property
    def path(self) -> Any:
        return self.inner.path if self.inner is not None else None

    def request(self, headers: HeaderList, target: bytes) -> tuple[HeaderList, bytes]:
        if self.inner is not None:
            return self.inner.request(headers, target)  # type: ignore[no-any-return]
        return headers, target

    def response(self, headers: HeaderList) -> HeaderList:
        if self.inner is not None:
            headers = self.inner.response(headers)
        if self.header:
            lname = self.line[0].lower()
            out = [(n, v) for n, v in headers if n.lower() != lname]
        else:
            out = list(headers)
        out.append(self.line)
        # A shared cache must not hand one client's pinning to others (openshift-docs#111549).
        if not any(n.lower() == b"cache-control" for n, _ in out):
            out.append((b"Cache-Control", b"private"))
        return out


# -- Gateway API on a route rule: persistence beats weights -----------------------------------


def backend_scope(scope: str, backend: str) -> str:
    """The scope of one backend's sessions under a rule's ``sessionPersistence`` (rule ``scope``)."""
    return f"{scope}|{backend}"


def rule_session(spec: Persistence, scope: str, backend: str, key: bytes, endpoints: Sequence[str]) -> Session:
    """The Session of a rule's ``sessionPersistence`` (rule ``scope``) for one of its backends:
    tokens of its own (scope + backend), the name the rule's (every backend of the rule answers to
    the one cookie or header)."""
    if spec.session_name is None:
        spec = replace(spec, session_name=default_name(scope))
    return Session(spec, backend_scope(scope, backend), key, endpoints)


class RouteSession:
    """A route policy hook (``fsmfast.pipeline.hooks``) for a rule with ``sessionPersistence``: the
    Choice whose backend holds the endpoint the request's session names, or None (then the rule's
    weights choose): no session, or its endpoint is out of service. ``sessions[i]`` is the Session
    of ``choices[i]`` (None for an invalid backendRef), for the backend to find the endpoint with."""

    __slots__ = ("choices", "pins", "reader", "sessions")

    def __init__(
        self,
        spec: Persistence,
        scope: str,
        key: bytes,
        choices: Sequence[Any],
        endpoints: Sequence[Sequence[str]],
    ) -> None:
        self.choices = tuple(choices)
        self.sessions: list[Session | None] = []
        self.pins: dict[bytes, tuple[int, int]] = {}  # token -> (choice, endpoint)
        for i, (choice, eps) in enumerate(zip(self.choices, endpoints, strict=True)):
            if choice.backend is None or choice.name is None:
                self.sessions.append(None)
                continue
            session = rule_session(spec, scope, choice.name, key, eps)
            self.sessions.append(session)
            for t, j in session.tokens.items():
                self.pins.setdefault(t, (i, j))
        # Every session of the rule reads values alike (one name, type and timeouts).
        self.reader = rule_session(spec, scope, "", key, ())

    def find(self, headers: HeaderList, now: float) -> tuple[int, int, float] | None:
        """(choice index, endpoint index, issue time) the request's session names, or None."""
        for value in self.reader.values(headers):
            found = self.reader.check(value, now)
            if found is not None:
                pin = self.pins.get(found[0])
                if pin is not None:
                    return pin[0], pin[1], found[1]
        return None

    def session_for(self, choice: Any) -> Session | None:
        for c, session in zip(self.choices, self.sessions, strict=True):
            if c is choice:
                return session
        return None

    def __call__(self, request: Any) -> Any:
        found = self.find(request.headers, time.time())
        if found is None:
            return None
        choice = self.choices[found[0]]
        # A session whose endpoint the health checks took out is not followed: the weights choose
        # and the response re-pins it. Forcing its backend would answer 503 for good when all of
        # that backend's endpoints are out, while the rule's other backends serve.
        health = getattr(choice.backend, "health", None)
        if health is not None and not health.usable(found[1], int(time.monotonic() * 1000)):
            return None
        return choice
