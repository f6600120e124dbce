"""The request pipeline's stages in-process, without sockets (fsmfast.pipeline).

Run over the compiled modules and, with FSMFAST_NO_EXTENSIONS=1, over their pure-Python twins.
The agreement of ``explain`` with a live worker is tests/integration/test_pipeline_agreement.py.
"""

from __future__ import annotations

import pytest

from fsmfast.pipeline import hooks, route, target
from fsmfast.pipeline.decision import Choice, LocalReply, Redirect
from fsmfast.proxy.router import Router
from fsmfast.snapshot import (
    SCHEMA,
    Backend,
    BackendRef,
    Endpoint,
    Filters,
    Listener,
    PathMatch,
    PathModifier,
    Rule,
    Snapshot,
    VirtualHost,
)
from fsmfast.snapshot import (
    Redirect as RedirectSpec,
)
from tests.support.memproxy import PORT, MemoryProxy

GET = b"GET"


def _rule(name: str, path: str, kind: str = "PathPrefix", **extra: object) -> Rule:
    backends = extra.pop("backends", (BackendRef(weight=1, backend="ns/up:80"),))
    return Rule(name=name, path=PathMatch(type=kind, value=path), backends=backends, **extra)  # type: ignore[arg-type]


def _router() -> Router:
    redirect = Filters(redirect=RedirectSpec(status=301, path=PathModifier(type="ReplacePrefixMatch", value="/new")))
    rules = (
        _rule("admin", "/admin", "Exact"),
        _rule("old", "/old", filters=redirect, backends=()),
        _rule("broken", "/broken", backends=(BackendRef(weight=1, backend=None, error="service ns/gone not found"),)),
        _rule("empty", "/empty", backends=()),
        _rule("rest", "/"),
    )
    snap = Snapshot(
        schema=SCHEMA,
        generation=1,
        listeners=(
            Listener(
                port=PORT,
                protocol="HTTP",
                names=("ns/gw/http",),
                vhosts=(VirtualHost(hostname="a.test", rules=rules),),
            ),
        ),
        backends={"ns/up:80": Backend(name="ns/up:80", endpoints=(Endpoint(host="127.0.0.1", port=1),))},
    )
    return Router(snap)


# -- stage 2: the request-target ------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "raw", "path", "forwarded"),
    [
        (GET, b"/a/../admin?x=1", b"/admin", b"/admin?x=1"),
        (GET, b"/a/%2e%2E/admin", b"/admin", b"/admin"),
        (GET, b"//admin//x", b"/admin/x", b"/admin/x"),
        (GET, b"/%61dmin", b"/admin", b"/admin"),
        (GET, b"/a%2Fb", b"/a%2Fb", b"/a%2Fb"),
        (GET, b"http://a.test/a/../admin?q", b"/admin", b"/admin?q"),
        (GET, b"https://a.test:443", b"/", b"/"),
        (b"OPTIONS", b"*", b"*", b"*"),
    ],
)
def test_target_stage_normalizes_every_form(method: bytes, raw: bytes, path: bytes, forwarded: bytes) -> None:
    headers = [(b"Host", b"a.test")]
    got = target.normalize(method, raw, b"a.test", headers)
    assert not isinstance(got, LocalReply), got
    assert got[:2] == (path, forwarded)
    assert headers == [(b"Host", b"a.test")] if raw.startswith((b"/", b"*")) else headers[0][0] == b"Host"


@pytest.mark.parametrize(
    ("method", "raw", "host", "status", "text"),
    [
        (GET, b"/../admin", b"a.test", 400, "above the root"),
        (GET, b"/a/%2e%2e/%2e%2e/x", b"a.test", 400, "above the root"),
        (b"CONNECT", b"a.test:443", b"a.test", 405, "CONNECT is not supported"),
        (GET, b"*", b"a.test", 400, "only valid with OPTIONS"),
        (GET, b"ftp://a.test/x", b"a.test", 400, "unsupported request-target form"),
        (GET, b"admin", b"a.test", 400, "unsupported request-target form"),
        (GET, b"http://u@a.test/", b"a.test", 400, "userinfo"),
        (GET, b"http:///x", b"a.test", 400, "invalid authority"),
        (GET, b"http://b.test/x", b"a.test", 400, "does not match"),
    ],
)
def test_target_stage_refuses_with_a_local_reply(
    method: bytes, raw: bytes, host: bytes, status: int, text: str
) -> None:
    got = target.normalize(method, raw, host, [(b"Host", host)])
    assert isinstance(got, LocalReply) and got.status == status and text in got.text, got
    assert got.code == ("method_not_allowed" if status == 405 else "bad_request")


def test_absolute_form_names_the_host() -> None:
    headers = [(b"Host", b"A.TEST:80"), (b"Accept", b"*/*")]
    assert target.normalize(GET, b"http://a.test/x", b"A.TEST:80", headers) == (b"/x", b"/x", b"a.test")
    assert headers == [(b"Host", b"a.test"), (b"Accept", b"*/*")]
    bare: list[tuple[bytes, bytes]] = []
    assert target.normalize(GET, b"http://a.test:8080/", b"", bare) == (b"/", b"/", b"a.test:8080")
    assert bare == [(b"Host", b"a.test:8080")]
    assert target.same_authority(b"[::1]:443", b"[::1]", 443) and not target.same_authority(b"a:81", b"a", 80)


# -- stages 3-5: route, hooks, backend ------------------------------------------------------


def _decide(router: Router, host: bytes, path: bytes, target_: bytes | None = None) -> object:
    table = router.tables[PORT]
    found = route.find(table, host, path, GET, [], target_ or path)
    if isinstance(found, LocalReply):
        return found
    return route.choose(found, b"http", host, PORT, GET, [], target_ or path, path, b"-")


def test_forwarding_returns_the_rules_own_choice() -> None:
    router = _router()
    table = router.tables[PORT]
    rule = route.find(table, b"A.test.:8000", b"/admin", GET, [], b"/admin")
    assert not isinstance(rule, LocalReply) and rule.name == "admin"
    first = route.choose(rule, b"http", b"a.test", PORT, GET, [], b"/admin", b"/admin", b"-")
    # The precomputed object itself, every time: the plain path allocates no decision.
    assert isinstance(first, Choice) and first is rule.choices[0]
    assert route.choose(rule, b"http", b"a.test", PORT, GET, [], b"/admin", b"/admin", b"-") is first
    assert rule.policies == () and first.policies == ()


def test_local_replies_and_redirects() -> None:
    router = _router()
    no_host = _decide(router, b"b.test", b"/")
    assert isinstance(no_host, LocalReply) and (no_host.status, no_host.code) == (404, "no_route")
    assert "b.test" in no_host.text and no_host.rule is None
    assert isinstance(route.find(None, b"a.test", b"/", GET, [], b"/"), LocalReply)  # a port without routes
    moved = _decide(router, b"a.test", b"/old/x", b"/old/x?q=1")
    assert isinstance(moved, Redirect) and moved.status == 301
    assert moved.location == b"http://a.test:8000/new/x?q=1" and moved.rule.name == "old"
    for path, why in ((b"/broken", "service ns/gone not found"), (b"/empty", "has no backend")):
        failed = _decide(router, b"a.test", path)
        assert isinstance(failed, LocalReply) and (failed.status, failed.code) == (500, "invalid_backend")
        assert failed.text == "no usable backend for this route"  # the detail only where detailed errors are on
        assert failed.detail is not None and why in failed.detail and failed.rule is not None


class _Deny:
    """A test-only policy: answers 403 for one path, lets the rest go on, and records what it saw."""

    def __init__(self, path: bytes) -> None:
        self.path = path
        self.seen: list[tuple[bytes, bytes, object]] = []

    def __call__(self, request: hooks.PolicyRequest) -> LocalReply | None:
        self.seen.append((request.path, request.host, request.backend))
        if request.path == self.path:
            return LocalReply(403, "denied by policy", "forbidden")
        return None


def test_route_and_backend_policies_run_in_order_and_may_answer() -> None:
    router = _router()
    rest = next(r for r in router.tables[PORT].exact[b"a.test"].rules if r.name == "rest")
    first, second = _Deny(b"/one"), _Deny(b"/two")
    rest.policies = (first, second)
    denied = _decide(router, b"a.test", b"/one")
    assert isinstance(denied, LocalReply) and denied.status == 403
    assert second.seen == []  # the first answer wins
    denied = _decide(router, b"a.test", b"/two")
    assert isinstance(denied, LocalReply) and denied.status == 403
    assert [p for p, _, _ in first.seen] == [b"/one", b"/two"] and second.seen[0][2] is None  # before the backend
    assert _decide(router, b"a.test", b"/three") is rest.choices[0]
    backend_policy = _Deny(b"/four")
    rest.choices[0].policies = (backend_policy,)
    denied = _decide(router, b"a.test", b"/four")
    assert isinstance(denied, LocalReply) and denied.status == 403
    assert backend_policy.seen[0][2] is rest.choices[0].backend  # backend policies see the chosen backend
    assert _decide(router, b"a.test", b"/five") is rest.choices[0]


def test_a_policy_answers_in_the_worker_without_reaching_the_upstream() -> None:
    proxy = MemoryProxy(upstream_connections=1)
    try:
        rules = proxy.ctx.router.tables[PORT].any.rules
        policy = _Deny(b"/secret")
        for rule in rules:
            rule.policies = (policy,)
        proxy.feed(b"GET /public/../secret HTTP/1.1\r\nHost: x\r\n\r\nGET /ok HTTP/1.1\r\nHost: x\r\n\r\n")
        out = proxy.client_output()
        assert out.startswith(b"HTTP/1.1 403 ") and b"denied by policy" in out, out
        assert [r.target for r in proxy.forwarded] == [b"/ok"]
        assert [p for p, _, _ in policy.seen] == [b"/secret", b"/ok"]  # the normalized path, as routed
    finally:
        proxy.close()
