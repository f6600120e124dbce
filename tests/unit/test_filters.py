"""HTTPRoute filters at run time (fsmfast.proxy.filters): prefix replacement, redirects, header edits, plans."""

from __future__ import annotations

import pytest

from fsmfast.proxy.filters import HeaderOps, RedirectPlan, plan_for, replace_prefix
from fsmfast.snapshot import Filters, HeaderModifier, HeaderValue, Mirror, PathModifier, Redirect, Rewrite


def stored(prefix: str) -> bytes:
    """A PathPrefix value as the snapshot stores it: no trailing "/", b"" for "/"."""
    return b"" if prefix == "/" else prefix.rstrip("/").encode()


# The normative table (semantics digest §6.4, Gateway API HTTPPathModifier), plus a prefix of "/".
@pytest.mark.parametrize(
    ("path", "prefix", "replacement", "result"),
    [
        ("/foo/bar", "/foo", "/xyz", "/xyz/bar"),
        ("/foo/bar", "/foo", "/xyz/", "/xyz/bar"),
        ("/foo/bar", "/foo/", "/xyz", "/xyz/bar"),
        ("/foo/bar", "/foo/", "/xyz/", "/xyz/bar"),
        ("/foo", "/foo", "/xyz", "/xyz"),
        ("/foo/", "/foo", "/xyz", "/xyz/"),
        ("/foo/bar", "/foo", "", "/bar"),
        ("/foo/", "/foo", "", "/"),
        ("/foo", "/foo", "", "/"),
        ("/foo/", "/foo", "/", "/"),
        ("/foo", "/foo", "/", "/"),
        # conformance: httproute-rewrite-path
        ("/strip-prefix/three", "/strip-prefix", "/", "/three"),
        ("/strip-prefix", "/strip-prefix", "/", "/"),
        # a prefix of "/" is element-wise too (kubernetes-sigs/gateway-api#3592): never "/xyzfoo" or "//"
        ("/foo", "/", "/xyz", "/xyz/foo"),
        ("/", "/", "/xyz", "/xyz/"),
        ("/foo", "/", "/", "/foo"),
        ("/foo", "/", "", "/foo"),
        ("/", "/", "", "/"),
    ],
)
def test_replace_prefix_table(path: str, prefix: str, replacement: str, result: str) -> None:
    assert replace_prefix(path.encode(), stored(prefix), replacement.encode()).decode() == result


@pytest.mark.parametrize(
    ("redirect", "location"),
    [
        # No scheme, no port: the listener port, even when it is 80 for the scheme.
        (Redirect(hostname="example.org"), "http://example.org:8080/a/b?q=1"),
        (Redirect(port=80), "http://h.test/a/b?q=1"),
        (Redirect(port=8081), "http://h.test:8081/a/b?q=1"),
        # A configured scheme brings its well-known port, which is then left out.
        (Redirect(scheme="https"), "https://h.test/a/b?q=1"),
        (Redirect(scheme="https", port=443), "https://h.test/a/b?q=1"),
        (Redirect(scheme="https", port=8443), "https://h.test:8443/a/b?q=1"),
        (Redirect(scheme="http"), "http://h.test/a/b?q=1"),
        (Redirect(scheme="http", port=443), "http://h.test:443/a/b?q=1"),
        (Redirect(path=PathModifier(type="ReplaceFullPath", value="/x")), "http://h.test:8080/x?q=1"),
    ],
)
def test_redirect_location(redirect: Redirect, location: str) -> None:
    got = RedirectPlan(redirect, None).location(b"http", b"h.test", 8080, b"/a/b?q=1")
    assert got.decode() == location


def test_redirect_prefix_and_listener_port_80() -> None:
    r = RedirectPlan(Redirect(path=PathModifier(type="ReplacePrefixMatch", value="/new")), b"/a")
    assert r.location(b"http", b"h.test", 80, b"/a/b") == b"http://h.test/new/b"
    assert r.location(b"https", b"h.test", 443, b"/a") == b"https://h.test/new"
    # HTTP/1.0 without Host and no configured hostname: a relative reference.
    assert r.location(b"http", b"", 8080, b"/a/x?y") == b"/new/x?y"


def test_header_ops_set_add_remove_case_insensitively() -> None:
    ops = HeaderOps(
        HeaderModifier(
            set=(HeaderValue("X-Set", "new"),),
            add=(HeaderValue("X-Add", "more"), HeaderValue("X-New", "fresh")),
            remove=("x-gone",),
        )
    )
    headers = [
        (b"Host", b"h"),
        (b"x-set", b"old1"),
        (b"X-GONE", b"1"),
        (b"x-add", b"a"),
        (b"X-Set", b"old2"),
        (b"X-Add", b"b"),
    ]
    before = list(headers)
    out = ops.apply(headers)
    assert headers == before  # the client's list is never modified
    assert out == [
        (b"Host", b"h"),
        (b"x-add", b"a"),
        (b"X-Add", b"b,more"),  # appended to the last line of that header: "orig,added"
        (b"X-Set", b"new"),
        (b"X-New", b"fresh"),
    ]


def test_plan_rewrites_host_and_path_and_keeps_the_query() -> None:
    rule = Filters(
        request_headers=HeaderModifier(set=(HeaderValue("X-A", "1"),)),
        rewrite=Rewrite(hostname="up.example", path=PathModifier(type="ReplacePrefixMatch", value="/v2")),
    )
    p = plan_for(rule, None, b"/v1", {})
    assert p is not None
    headers, target = p.request([(b"host", b"client.example:8000"), (b"Accept", b"*/*")], b"/v1/items?id=%2F")
    assert target == b"/v2/items?id=%2F"
    assert headers == [(b"Host", b"up.example"), (b"Accept", b"*/*"), (b"X-A", b"1")]
    assert p.response([(b"A", b"b")]) == [(b"A", b"b")]


def test_plan_combines_rule_and_backend_layers() -> None:
    rule = Filters(
        rewrite=Rewrite(hostname="rule.example", path=PathModifier(type="ReplaceFullPath", value="/rule")),
        response_headers=HeaderModifier(add=(HeaderValue("X-R", "rule"),)),
        mirrors=(
            Mirror(backend="ns/m:80"),
            Mirror(error="service ns/x not found"),
            Mirror(backend="ns/m:80", percent=0),
        ),
    )
    ref = Filters(
        rewrite=Rewrite(path=PathModifier(type="ReplaceFullPath", value="/backend")),
        response_headers=HeaderModifier(add=(HeaderValue("X-R", "backend"),)),
    )
    p = plan_for(rule, ref, None, {"ns/m:80": "state"})
    assert p is not None
    headers, target = p.request([(b"Host", b"c")], b"/x?q")
    assert (headers, target) == ([(b"Host", b"rule.example")], b"/backend?q")
    assert p.response([]) == [(b"X-R", b"rule,backend")]
    # Invalid and 0% mirrors are dropped when the plan is built.
    assert [(m.name, m.backend, m.percent) for m in p.mirrors] == [("ns/m:80", "state", 100.0)]


def test_no_filters_no_plan() -> None:
    assert plan_for(None, None, b"", {}) is None
    assert plan_for(Filters(), None, b"", {}) is None
    # A mirror to an unknown backend leaves nothing to do either.
    assert plan_for(Filters(mirrors=(Mirror(backend="ns/gone:80"),)), None, b"", {}) is None
