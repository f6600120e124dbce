"""The run-time router over hand-built snapshots (the compiler has its own tests)."""

from __future__ import annotations

from collections import Counter

import pytest

from fsmfast.proxy.router import Router, normalize_host
from fsmfast.snapshot import SCHEMA, Backend, BackendRef, Endpoint, Listener, PathMatch, Rule, Snapshot, VirtualHost


def rule(name: str, kind: str, value: str, *refs: BackendRef) -> Rule:
    return Rule(
        name=name, path=PathMatch(type=kind, value=value), backends=refs or (BackendRef(weight=1, backend="b"),)
    )


def snapshot(*vhosts: VirtualHost, port: int = 8000) -> Snapshot:
    backends = {n: Backend(name=n, endpoints=(Endpoint(host="127.0.0.1", port=1),)) for n in ("b", "c", "d")}
    return Snapshot(
        schema=SCHEMA,
        generation=1,
        listeners=(Listener(port=port, protocol="HTTP", names=("ns/gw/http",), vhosts=vhosts),),
        backends=backends,
    )


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (b"Foo.Example.COM", b"foo.example.com"),
        (b"foo.example.com:8000", b"foo.example.com"),
        (b"foo.example.com.", b"foo.example.com"),
        (b"[::1]:8000", b"[::1]"),
        (b"127.0.0.1:80", b"127.0.0.1"),
        (b"", b""),
    ],
)
def test_normalize_host(value: bytes, expected: bytes) -> None:
    assert normalize_host(value) == expected


def test_host_precedence_exact_then_longest_wildcard_then_any() -> None:
    snap = snapshot(
        VirtualHost(hostname="foo.example.com", rules=(rule("exact", "PathPrefix", "/"),)),
        VirtualHost(hostname="*.example.com", rules=(rule("wild", "PathPrefix", "/"),)),
        VirtualHost(hostname="*.b.example.com", rules=(rule("wild2", "PathPrefix", "/"),)),
        VirtualHost(hostname="*", rules=(rule("any", "PathPrefix", "/"),)),
    )
    table = Router(snap).tables[8000]

    def name(host: bytes) -> str:
        vh = table.find(host)
        assert vh is not None
        m = vh.match(b"/")
        assert m is not None
        return m.name

    assert name(b"foo.example.com") == "exact"
    assert name(b"bar.example.com") == "wild"
    assert name(b"a.b.example.com") == "wild2"
    assert name(b"x.a.b.example.com") == "wild2"  # a wildcard covers one or more labels
    assert name(b"example.com") == "any"  # *.example.com does not match the bare domain
    assert name(b"other.org") == "any"


def test_no_fallthrough_to_less_specific_host() -> None:
    snap = snapshot(
        VirtualHost(hostname="foo.example.com", rules=(rule("exact", "Exact", "/only"),)),
        VirtualHost(hostname="*", rules=(rule("any", "PathPrefix", "/"),)),
    )
    vh = Router(snap).tables[8000].find(b"foo.example.com")
    assert vh is not None and vh.match(b"/other") is None


@pytest.mark.parametrize(
    ("kind", "value", "path", "ok"),
    [
        ("PathPrefix", "/foo", b"/foo", True),
        ("PathPrefix", "/foo", b"/foo/", True),
        ("PathPrefix", "/foo", b"/foo/bar", True),
        ("PathPrefix", "/foo", b"/foobar", False),
        ("PathPrefix", "/foo/", b"/foo", True),  # a trailing slash in the prefix is ignored
        ("PathPrefix", "/", b"/anything", True),
        ("PathPrefix", "/foo", b"/Foo", False),  # case-sensitive
        ("Exact", "/exact", b"/exact", True),
        ("Exact", "/exact", b"/exact/", False),
        ("Exact", "/exact", b"/exactly", False),
    ],
)
def test_path_matching(kind: str, value: str, path: bytes, ok: bool) -> None:
    vh = Router(snapshot(VirtualHost(hostname="*", rules=(rule("r", kind, value),)))).tables[8000].find(b"h")
    assert vh is not None
    assert (vh.match(path) is not None) is ok


def test_smooth_weighted_round_robin_is_exact_and_skips_weight_zero() -> None:
    r = rule(
        "w",
        "PathPrefix",
        "/",
        BackendRef(weight=3, backend="b"),
        BackendRef(weight=1, backend="c"),
        BackendRef(weight=0, backend="d"),
    )
    rr = Router(snapshot(VirtualHost(hostname="*", rules=(r,)))).tables[8000].any.rules[0]  # type: ignore[union-attr]
    picks = [rr.pick().backend.name for _ in range(40)]  # type: ignore[union-attr]
    assert Counter(picks) == {"b": 30, "c": 10}
    # Smooth: never three c's in a row, and the heavy backend is spread out.
    assert "c,c" not in ",".join(picks)


def test_invalid_ref_keeps_its_share_with_an_error() -> None:
    r = rule(
        "w", "PathPrefix", "/", BackendRef(weight=1, backend="b"), BackendRef(weight=1, error="service x not found")
    )
    rr = Router(snapshot(VirtualHost(hostname="*", rules=(r,)))).tables[8000].any.rules[0]  # type: ignore[union-attr]
    picks = [rr.pick() for _ in range(10)]
    assert sum(1 for p in picks if p is not None and p.backend is None and p.error == "service x not found") == 5
