"""Session persistence (fsmfast.resilience.session): the key in a real arena, tokens, cookie and header
parsing, timeouts, the response header a session issues, and its plan composed with a route's filters."""

from __future__ import annotations

import base64
import os
import random
import time

import pytest

from fsmfast.pipeline.hooks import PolicyRequest
from fsmfast.proxy.filters import plan_for
from fsmfast.proxy.router import Choice
from fsmfast.resilience.session import (
    KEY_CELLS,
    RouteSession,
    Session,
    SessionPlan,
    default_name,
    endpoint_names,
    rule_session,
    session_key,
    write_session_key,
)
from fsmfast.shared.arena import Arena
from fsmfast.snapshot import Endpoint, Filters, HeaderModifier, HeaderValue, Mirror, Persistence, StickyCookie

KEY = bytes(range(1, 33))
OTHER_KEY = bytes(range(2, 34))
EPS = ["10.1.2.3:8080", "10.1.2.4:8080", "10.1.2.5:8080"]
BACKEND = "ns/svc:80"
RULE = "httproute/ns/r/rule/0"
T0 = 1_780_000_000.0  # a wall-clock time (2026)
FSM = StickyCookie(policy="SessionStickyPolicy ns/s", cookie_name="_srv_id", expires=3600)


def gw(**kw: object) -> Persistence:
    return Persistence(policy="HTTPRoute ns/r spec.rules[0].sessionPersistence", **kw)  # type: ignore[arg-type]


def cookie(name: bytes, value: bytes) -> list[tuple[bytes, bytes]]:
    return [(b"Host", b"h.test"), (b"Cookie", name + b"=" + value)]


def issued_value(session: Session, index: int, now: float, issued: float | None = None) -> bytes:
    """The value the Set-Cookie (or header) of a response carries."""
    name, line = session.issue(index, now, False, issued)
    if session.header:
        return line
    assert name == b"Set-Cookie"
    return line.split(b";")[0].split(b"=", 1)[1]


# -- the key, in a real arena ------------------------------------------------------------------


@pytest.mark.parametrize("key", [KEY, b"\xff" * 32, os.urandom(32)])
def test_key_round_trip_through_a_forked_worker(key: bytes) -> None:
    arena = Arena(1, 1, KEY_CELLS + 4)
    try:
        with pytest.raises(RuntimeError, match="no session key"):
            session_key(arena.cells)
        write_session_key(arena.cells, key)
        assert session_key(arena.cells) == key
        # A worker forked afterwards reads the same key (and so computes the same tokens).
        expected = Session(FSM, BACKEND, key, EPS).tokens
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            ok = Session(FSM, BACKEND, session_key(arena.cells), EPS).tokens == expected
            os._exit(0 if ok else 1)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert arena.cells.load(KEY_CELLS) == 0  # nothing written past the key
    finally:
        arena.close()


@pytest.mark.parametrize("key", [b"", b"x" * 31, b"x" * 33, bytes(32)])
def test_bad_keys_are_refused(key: bytes) -> None:
    arena = Arena(1, 1, KEY_CELLS)
    try:
        with pytest.raises(ValueError):
            write_session_key(arena.cells, key)
    finally:
        arena.close()


# -- tokens ---------------------------------------------------------------------------------------


def test_tokens_are_stable_and_independent_per_scope_and_key() -> None:
    a = Session(FSM, BACKEND, KEY, EPS)
    assert a.tokens == Session(FSM, BACKEND, KEY, EPS).tokens
    assert sorted(a.tokens.values()) == [0, 1, 2]
    for t in a.tokens:
        assert len(t) == 16 and all(c in b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_" for c in t)
    # Another scope or key: no token in common, and a's values mean nothing there.
    for other in (Session(FSM, "ns/other:80", KEY, EPS), Session(FSM, BACKEND, OTHER_KEY, EPS)):
        assert not set(a.tokens) & set(other.tokens)
        for i in range(3):
            assert other.lookup(cookie(b"_srv_id", issued_value(a, i, T0)), T0) == -1
    # The order of the endpoints moves indexes, not tokens: a session follows its endpoint.
    moved = Session(FSM, BACKEND, KEY, list(reversed(EPS)))
    assert moved.lookup(cookie(b"_srv_id", issued_value(a, 0, T0)), T0) == 2


def test_a_gone_endpoint_is_unknown_and_the_others_keep_their_sessions() -> None:
    before = Session(FSM, BACKEND, KEY, EPS)
    after = Session(FSM, BACKEND, KEY, [EPS[0], EPS[2], "10.1.2.9:8080"])
    assert after.lookup(cookie(b"_srv_id", issued_value(before, 1, T0)), T0) == -1  # re-pinned by the caller
    assert after.lookup(cookie(b"_srv_id", issued_value(before, 2, T0)), T0) == 1


def test_values_never_show_the_endpoint_address() -> None:
    eps = ["10.1.2.3:8080", "[fd00::7]:9443", "backend.internal:80"]
    for spec in (FSM, gw(absolute_timeout=60.0, idle_timeout=30.0, lifetime_type="Permanent"), gw(type="Header")):
        session = Session(spec, BACKEND, KEY, eps)
        for i, ep in enumerate(eps):
            for secure in (False, True):
                name, line = session.issue(i, T0, secure)
                text = name + b": " + line
                host, port = ep.rsplit(":", 1)
                assert host.strip("[]").encode() not in text and b":" + port.encode() not in text
                assert base64.b64encode(ep.encode()) not in text
                assert base64.urlsafe_b64encode(ep.encode()).rstrip(b"=") not in text
                token = issued_value(session, i, T0).split(b".")[0]
                raw = base64.urlsafe_b64decode(token + b"=" * (-len(token) % 4))
                assert ep.encode() not in raw and host.strip("[]").encode() not in raw
                assert len(raw) == 12  # 96 bits of an HMAC, nothing else


# -- names ----------------------------------------------------------------------------------------


def test_names() -> None:
    assert Session(FSM, BACKEND, KEY, EPS).name == b"_srv_id"
    assert Session(gw(session_name="sid"), RULE, KEY, EPS).name == b"sid"
    derived = Session(gw(), RULE, KEY, EPS).name
    assert derived == default_name(RULE).encode() and derived.startswith(b"fsmfast-") and len(derived) == 16
    assert Session(gw(), RULE, KEY, EPS).name == derived  # the same in every worker
    assert Session(gw(), "httproute/ns/r/rule/1", KEY, EPS).name != derived  # two rules, two sessions


# -- request parsing ------------------------------------------------------------------------------


@pytest.fixture
def fsm() -> Session:
    return Session(FSM, BACKEND, KEY, EPS)


def test_cookie_header_forms(fsm: Session) -> None:
    v = issued_value(fsm, 1, T0)
    good = [
        [(b"Cookie", b"_srv_id=" + v)],
        [(b"Cookie", b"a=1; _srv_id=" + v + b"; b=2")],
        [(b"Cookie", b"a=1;_srv_id=" + v + b";b=2")],
        [(b"Cookie", b"a=1;  _srv_id =\t" + v + b" ;")],
        [(b"Cookie", b'_srv_id="' + v + b'"')],
        [(b"cookie", b"_srv_id=" + v)],
        [(b"COOKIE", b"_srv_id=" + v)],
        [(b"Cookie", b"a=1"), (b"X-Other", b"_srv_id=x"), (b"Cookie", b"_srv_id=" + v)],  # HTTP/2 splits cookies
        [(b"Cookie", b";;=;a;_srv_id=" + v)],
        # A stale value first (another path's cookie, another rule's token): the first valid one wins.
        [(b"Cookie", b"_srv_id=" + b"A" * 16 + b"; _srv_id=" + v)],
        [(b"Cookie", b"_srv_id=garbage"), (b"Cookie", b"_srv_id=" + v)],
    ]
    for headers in good:
        assert fsm.lookup(headers, T0) == 1, headers


def test_cookie_garbage_is_no_session(fsm: Session) -> None:
    v = issued_value(fsm, 1, T0)
    bad: list[list[tuple[bytes, bytes]]] = [
        [],
        [(b"Cookie", b"")],
        [(b"Cookie", b"_srv_id")],
        [(b"Cookie", b"_srv_id=")],
        [(b"Cookie", b'_srv_id="')],
        [(b"Cookie", b"x_srv_id=" + v)],  # another cookie whose name ends like ours
        [(b"Cookie", b"_SRV_ID=" + v)],  # cookie names are case-sensitive
        [(b"Cookie", b"_srv_id_x=" + v)],
        [(b"Cookie", b"_srv_id=" + v + b"x")],
        [(b"Cookie", b"_srv_id=" + v[:-1])],
        [(b"Cookie", b"_srv_id=" + v + b".1")],  # a timestamp this session does not carry
        [(b"Cookie", b"_srv_id=\xff\x00\x80" + v)],
        [(b"Cookie", b"_srv_id=" + b"\xff" * 16)],
        [(b"Set-Cookie", b"_srv_id=" + v)],  # a response header is not a request's
        [(b"Cookiex", b"_srv_id=" + v)],
        [(b"Cookie", b"_srv_id=" + (v.lower() if v != v.lower() else v.upper()))],  # tokens are case-sensitive
    ]
    for headers in bad:
        assert fsm.lookup(headers, T0) == -1, headers


def test_huge_and_random_cookies_are_no_session_and_never_raise(fsm: Session) -> None:
    huge = b"_srv_id=" + b"A" * 1_000_000
    start = time.perf_counter()
    assert fsm.lookup([(b"Cookie", huge)], T0) == -1
    assert fsm.lookup([(b"Cookie", b"; ".join([b"_srv_id=x"] * 20_000))], T0) == -1
    assert time.perf_counter() - start < 1.0
    rng = random.Random(19)
    alphabet = b'_srv_id=;" \t.\xff\x00Aa0-'
    for _ in range(3000):
        value = bytes(rng.choice(alphabet) for _ in range(rng.randrange(40)))
        for session in (fsm, Session(gw(absolute_timeout=10.0, idle_timeout=5.0), RULE, KEY, EPS)):
            assert session.lookup([(b"Cookie", value)], T0) == -1


# -- timeouts -------------------------------------------------------------------------------------


def test_absolute_timeout() -> None:
    s = Session(gw(absolute_timeout=60.0), RULE, KEY, EPS)
    assert not s.refresh
    v = issued_value(s, 2, T0)
    assert v.count(b".") == 1
    headers = cookie(s.name, v)
    assert s.lookup(headers, T0) == 2
    assert s.pinned(headers, T0 + 59) == (2, T0)
    assert s.lookup(headers, T0 + 61) == -1
    assert s.lookup(headers, T0 - 1000) == -1  # issued far in the future: not a value we wrote
    assert s.lookup(cookie(s.name, v.split(b".")[0]), T0) == -1  # the issue time is required


def test_idle_timeout_refreshes_and_absolute_still_ends_the_session() -> None:
    s = Session(gw(absolute_timeout=100.0, idle_timeout=30.0), RULE, KEY, EPS)
    assert s.refresh  # every response carries the value anew
    v = issued_value(s, 0, T0)
    assert s.lookup(cookie(s.name, v), T0 + 29) == 0
    assert s.lookup(cookie(s.name, v), T0 + 31) == -1
    # Seen again at +25 (the response re-issued it, keeping its start): alive at +50, not at +101.
    index, issued = s.pinned(cookie(s.name, v), T0 + 25)
    assert (index, issued) == (0, T0)
    v2 = issued_value(s, index, T0 + 25, issued)
    v3 = issued_value(s, 0, T0 + 50, s.pinned(cookie(s.name, v2), T0 + 50)[1])
    assert s.lookup(cookie(s.name, v3), T0 + 75) == 0
    v4 = issued_value(s, 0, T0 + 75, s.pinned(cookie(s.name, v3), T0 + 75)[1])
    v5 = issued_value(s, 0, T0 + 99, s.pinned(cookie(s.name, v4), T0 + 99)[1])
    assert s.pinned(cookie(s.name, v5), T0 + 100) == (0, T0)
    assert s.lookup(cookie(s.name, v5), T0 + 101) == -1


@pytest.mark.parametrize("stamp", [b"+1", b"-1", b"1_0", b" 1", b"", b"zzzzzzzzzzzzz", b"\xd9\xa3"])
def test_malformed_timestamps(stamp: bytes) -> None:
    s = Session(gw(absolute_timeout=60.0), RULE, KEY, EPS)
    token = issued_value(s, 0, T0).split(b".")[0]
    assert s.lookup(cookie(s.name, token + b"." + stamp), T0) == -1


# -- responses ------------------------------------------------------------------------------------


def set_cookie(session: Session, index: int = 0, secure: bool = False, now: float = T0, **kw: float) -> list[bytes]:
    name, line = session.issue(index, now, secure, **kw)  # type: ignore[arg-type]
    assert name == b"Set-Cookie"
    return line.split(b"; ")


def test_set_cookie_attributes() -> None:
    fsm = Session(FSM, BACKEND, KEY, EPS)
    token = next(t for t, i in fsm.tokens.items() if i == 0)
    assert set_cookie(fsm) == [b"_srv_id=" + token, b"Path=/", b"Max-Age=3600", b"HttpOnly", b"SameSite=Strict"]
    assert set_cookie(fsm, secure=True)[-1] == b"Secure"
    assert not fsm.refresh

    permanent = Session(gw(absolute_timeout=90.5, lifetime_type="Permanent"), RULE, KEY, EPS)
    attrs = set_cookie(permanent)
    assert attrs[1:] == [b"Path=/", b"Max-Age=91", b"HttpOnly", b"SameSite=Strict"]
    # Re-issued later in the session: the cookie does not outlive the absolute timeout.
    assert b"Max-Age=31" in set_cookie(permanent, now=T0 + 60, issued=T0)

    session = Session(gw(absolute_timeout=90.0), RULE, KEY, EPS)
    for secure in (False, True):
        attrs = set_cookie(session, secure=secure)
        assert not any(a.startswith((b"Max-Age", b"Expires")) for a in attrs)
        assert (b"Secure" in attrs) is secure
        assert {b"Path=/", b"HttpOnly", b"SameSite=Strict"} <= set(attrs)


def test_header_type() -> None:
    s = Session(gw(type="Header", session_name="X-Session", idle_timeout=60.0), RULE, KEY, EPS)
    name, value = s.issue(1, T0, True)
    assert name == b"X-Session" and b";" not in value
    assert s.lookup([(b"x-session", value)], T0 + 10) == 1
    assert s.lookup([(b"X-Session", b" " + value + b" ")], T0 + 10) == 1
    assert s.lookup([(b"Cookie", b"X-Session=" + value)], T0) == -1  # the header, not a cookie
    assert s.lookup([(b"X-Session", value)], T0 + 61) == -1
    out = s.plan(None, 1, T0, True).response([(b"X-Session", b"upstream's"), (b"Content-Type", b"text/plain")])
    assert out == [(b"Content-Type", b"text/plain"), (b"X-Session", value), (b"Cache-Control", b"private")]
    # Without an idle timeout too, every response carries the value (an upstream's own header of
    # that name must never reach the client, which would send it back instead of the session's).
    assert Session(gw(type="Header", session_name="X-Session"), RULE, KEY, EPS).refresh


def test_cache_control_private_only_when_the_response_has_none() -> None:
    plan = Session(FSM, BACKEND, KEY, EPS).plan(None, 0, T0, False)
    out = plan.response([(b"Content-Length", b"2")])
    assert out[-1] == (b"Cache-Control", b"private") and out[-2][0] == b"Set-Cookie"
    kept = plan.response([(b"cache-control", b"no-store"), (b"Set-Cookie", b"app=1")])
    assert [v for n, v in kept if n.lower() == b"cache-control"] == [b"no-store"]
    assert next(v for n, v in kept if n == b"Set-Cookie") == b"app=1"  # the upstream's cookies stay


def test_plan_composes_with_a_route_request_plan() -> None:
    rule = Filters(
        request_headers=HeaderModifier(set=(HeaderValue("X-Req", "1"),)),
        response_headers=HeaderModifier(add=(HeaderValue("X-Resp", "r"),), remove=("set-cookie", "server")),
    )
    ref = Filters(mirrors=(Mirror(backend="ns/m:80"),))
    inner = plan_for(rule, ref, None, {"ns/m:80": "mirror-state"})
    assert inner is not None
    session = Session(FSM, BACKEND, KEY, EPS)
    plan = session.plan(inner, 2, T0, True)
    assert isinstance(plan, SessionPlan)
    assert plan.mirrors == inner.mirrors and len(plan.mirrors) == 1
    assert plan.request_ops == inner.request_ops and plan.host is None and plan.path is None
    assert plan.request([(b"Host", b"h")], b"/a") == inner.request([(b"Host", b"h")], b"/a")
    out = plan.response([(b"Server", b"up"), (b"Set-Cookie", b"app=1")])
    # The route's ResponseHeaderModifier first (it removed the upstream's Set-Cookie), then the session's.
    assert out[0] == (b"X-Resp", b"r")
    cookies = [v for n, v in out if n == b"Set-Cookie"]
    assert len(cookies) == 1 and cookies[0].endswith(b"; Secure")
    assert session.lookup([(b"Cookie", cookies[0].split(b";")[0])], T0) == 2
    assert out[-1] == (b"Cache-Control", b"private")

    bare = session.plan(None, 0, T0, False)
    headers = [(b"Host", b"h")]
    assert bare.request(headers, b"/x") == (headers, b"/x")
    assert bare.mirrors == () and bare.request_ops == ()


def test_endpoint_names() -> None:
    assert endpoint_names([Endpoint("10.0.0.1", 80), Endpoint("fd00::1", 8443)]) == ["10.0.0.1:80", "fd00::1:8443"]


# -- a rule's session: persistence beats weights --------------------------------------------------


def test_route_session_picks_the_choice_holding_the_endpoint() -> None:
    spec = gw(absolute_timeout=600.0)
    eps_a, eps_b = ["10.0.0.1:80", "10.0.0.2:80"], ["10.0.1.1:80", "10.0.1.2:80", "10.0.1.3:80"]
    choices = [
        Choice(90, "state-a", None, "ns/a:80", None),
        Choice(10, "state-b", None, "ns/b:80", None),
        Choice(5, None, "invalid", "ns/gone:80", None),
    ]
    hook = RouteSession(spec, RULE, KEY, choices, [eps_a, eps_b, []])
    b = hook.session_for(choices[1])
    assert b is not None and hook.session_for(choices[2]) is None
    # The backend's Session is what the lead builds for the upstream: the same tokens and name.
    assert b.tokens == rule_session(spec, RULE, "ns/b:80", KEY, eps_b).tokens
    assert b.name == hook.session_for(choices[0]).name == default_name(RULE).encode()  # type: ignore[union-attr]

    value = issued_value(b, 2, T0)
    headers = [(b"Cookie", b.name + b"=" + value)]
    assert hook.find(headers, T0 + 1) == (1, 2, T0)
    assert b.lookup(headers, T0 + 1) == 2

    # No session, another rule's, a backend-level (BackendLBPolicy) one, or an expired one: weights choose.
    assert hook.find([], T0) is None
    other_rule = rule_session(spec, "httproute/ns/r/rule/1", "ns/b:80", KEY, eps_b)
    backend_level = Session(spec, "ns/b:80", KEY, eps_b)
    for s in (other_rule, backend_level):
        assert hook.find([(b"Cookie", b.name + b"=" + issued_value(s, 2, T0))], T0) is None
    assert hook.find(headers, T0 + 601) is None
    now = time.time()
    fresh = [(b"Cookie", b.name + b"=" + issued_value(b, 0, now))]
    assert hook(PolicyRequest(b"GET", b"h", b"/", b"/", fresh, b"-", None)) is choices[1]


class Health:
    def __init__(self, out: set[int]) -> None:
        self.out = out

    def usable(self, i: int, now_ms: int) -> bool:
        return i not in self.out


class Backend:
    def __init__(self, health: Health | None) -> None:
        self.health = health


def test_route_session_to_an_endpoint_out_of_service_leaves_the_choice_to_the_weights() -> None:
    spec = gw()
    eps_a, eps_b = ["10.0.0.1:80"], ["10.0.1.1:80", "10.0.1.2:80"]
    health = Health({0})
    choices = [Choice(99, Backend(None), None, "ns/a:80", None), Choice(1, Backend(health), None, "ns/b:80", None)]
    hook = RouteSession(spec, RULE, KEY, choices, [eps_a, eps_b])
    b = hook.session_for(choices[1])
    assert b is not None

    def request(index: int) -> PolicyRequest:
        headers = [(b"Cookie", b.name + b"=" + issued_value(b, index, time.time()))]
        return PolicyRequest(b"GET", b"h", b"/", b"/", headers, b"-", None)

    assert hook(request(0)) is None  # out: as if there were no session (the backend re-pins it)
    assert hook(request(1)) is choices[1]
    health.out.clear()
    assert hook(request(0)) is choices[1]
