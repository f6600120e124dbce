"""The run-time router over hand-built snapshots (the compiler has its own tests)."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from fsmfast import codec
from fsmfast.proxy import router as router_mod
from fsmfast.proxy.conditions import RequestView
from fsmfast.proxy.router import Router, VHost, normalize_host
from fsmfast.snapshot import (
    SCHEMA,
    Backend,
    BackendRef,
    Endpoint,
    HeaderMatch,
    Listener,
    PathMatch,
    QueryMatch,
    Rule,
    Snapshot,
    VirtualHost,
)


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


def test_router_matches_hosts_through_the_accelerated_normalize_host() -> None:
    # Its cases are in test_parser_twin.py, over both implementations.
    assert normalize_host is codec.normalize_host


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
    # The router itself never falls through: the compiler lists, in each virtual host, the rules
    # of the less specific hostnames a request may fall through to (fsmfast.compile.routetable).
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


# --- the inlined path test of VHost.match agrees with RouteRule.matches ----------------------

PATHS = [b"/", b"/a", b"/a/", b"/a/b", b"/ab", b"/a/b/c", b"/A", b"/b", b"/a%2Fb", b"/abc/", b"//", b"/a/b%20"]
MATCHES = [
    ("PathPrefix", "/"),
    ("PathPrefix", "/a"),
    ("PathPrefix", "/a/"),
    ("PathPrefix", "/a/b"),
    ("Exact", "/a"),
    ("Exact", "/"),
    ("Exact", "/a/"),
    ("RegularExpression", "/a(/.*)?"),
    ("RegularExpression", "/[a-z]+"),
]


@pytest.mark.parametrize(("kind", "value"), MATCHES)
def test_inlined_path_test_agrees_with_matches(kind: str, value: str) -> None:
    vh = Router(snapshot(VirtualHost(hostname="*", rules=(rule("r", kind, value),)))).tables[8000].any
    assert vh is not None
    (rr,) = vh.rules
    for path in PATHS:
        assert (vh.match(path) is not None) is rr.matches(path), (kind, value, path)


def test_regex_is_a_full_match_on_the_path() -> None:
    vh = Router(snapshot(VirtualHost(hostname="*", rules=(rule("r", "RegularExpression", "/v[0-9]+"),)))).tables[8000]
    found = vh.find(b"h")
    assert found is not None
    assert found.match(b"/v12") is not None
    assert found.match(b"/v12/x") is None
    assert found.match(b"/x/v12") is None


# --- conditions ----------------------------------------------------------------------------


def conditional(**kw: object) -> VHost:
    r = Rule(
        name="c", path=PathMatch(type="PathPrefix", value="/"), backends=(BackendRef(weight=1, backend="b"),), **kw
    )  # type: ignore[arg-type]
    vh = Router(snapshot(VirtualHost(hostname="*", rules=(r,)))).tables[8000].any
    assert vh is not None
    return vh


def test_method_is_exact() -> None:
    vh = conditional(method="GET")
    assert vh.match(b"/", b"GET") is not None
    assert vh.match(b"/", b"HEAD") is None
    assert vh.match(b"/", b"get") is None


def test_headers_case_insensitive_names_exact_values_and_repeats_joined() -> None:
    vh = conditional(headers=(HeaderMatch(type="Exact", name="version", value="one"),))
    assert vh.match(b"/", b"GET", [(b"Version", b"one")]) is not None
    assert vh.match(b"/", b"GET", [(b"version", b"One")]) is None
    assert vh.match(b"/", b"GET", []) is None
    # A header sent twice is matched as its values joined with ",".
    assert vh.match(b"/", b"GET", [(b"version", b"one"), (b"VERSION", b"one")]) is None
    joined = conditional(headers=(HeaderMatch(type="Exact", name="v", value="a,b"),))
    assert joined.match(b"/", b"GET", [(b"v", b"a"), (b"v", b"b")]) is not None
    regex = conditional(headers=(HeaderMatch(type="RegularExpression", name="v", value="[0-9]+"),))
    assert regex.match(b"/", b"GET", [(b"v", b"123")]) is not None
    assert regex.match(b"/", b"GET", [(b"v", b"123a")]) is None
    assert regex.match(b"/", b"GET", []) is None  # absent never matches, even a regex that accepts ""


def test_query_case_sensitive_first_value_decoded() -> None:
    vh = conditional(query=(QueryMatch(type="Exact", name="animal", value="sea lion"),))
    assert vh.match(b"/", b"GET", [], b"/?animal=sea%20lion") is not None
    assert vh.match(b"/", b"GET", [], b"/?x=1&animal=sea%20lion&animal=whale") is not None
    assert vh.match(b"/", b"GET", [], b"/?animal=whale&animal=sea%20lion") is None
    assert vh.match(b"/", b"GET", [], b"/?ANIMAL=sea%20lion") is None
    assert vh.match(b"/", b"GET", [], b"/?animal=sea+lion") is None  # "+" is not a space
    assert vh.match(b"/", b"GET", [], b"/") is None
    empty = conditional(query=(QueryMatch(type="Exact", name="flag", value=""),))
    assert empty.match(b"/", b"GET", [], b"/?flag") is not None
    assert empty.match(b"/", b"GET", [], b"/?flag=") is not None


def test_conditions_explain_names_the_failing_condition() -> None:
    vh = conditional(
        method="POST",
        headers=(HeaderMatch(type="Exact", name="x", value="1"),),
        query=(QueryMatch(type="RegularExpression", name="q", value="[a-z]"),),
    )
    cond = vh.rules[0].conditions
    assert cond is not None
    assert cond.explain(RequestView(b"GET", [], b"/")) == "method GET is not POST"
    assert cond.explain(RequestView(b"POST", [(b"X", b"2")], b"/")) == "header x = '1': '2'"
    assert cond.explain(RequestView(b"POST", [(b"x", b"1")], b"/")) == "query q ~ /[a-z]/: absent"
    assert cond.explain(RequestView(b"POST", [(b"x", b"1")], b"/?q=z")) is None


def test_a_rule_listed_in_several_hosts_is_one_object() -> None:
    shared = rule("shared", "PathPrefix", "/")
    table = Router(
        snapshot(
            VirtualHost(hostname="a.example.com", rules=(rule("own", "Exact", "/x"), shared)),
            VirtualHost(hostname="*", rules=(shared,)),
        )
    ).tables[8000]
    a, any_ = table.find(b"a.example.com"), table.find(b"b.example.com")
    assert a is not None and any_ is not None
    assert a.rules[1] is any_.rules[0]  # one weighted round-robin state per rule


# --- many rules on one host: the path index -----------------------------------------------


def _reference(vh: VHost, path: bytes, method: bytes, headers: list[tuple[bytes, bytes]]) -> object:
    """What the plain scan of every rule in precedence order finds."""
    view = RequestView(method, headers, b"")
    for r in vh.rules:
        if r.matches(path) and (r.conditions is None or r.conditions.test(view)):
            return r
    return None


@pytest.mark.parametrize("seed", range(30))
def test_indexed_lookup_finds_what_the_scan_finds(seed: int) -> None:
    rnd = random.Random(seed)
    segments = ["a", "b", "api", "v1", "", "ab"]

    def value() -> str:
        depth = rnd.choice([1, 1, 2, 3])
        return "/" + "/".join(rnd.choice(segments) for _ in range(depth))

    rules = []
    # Rules in any order: a host's list is precedence-sorted, then extended with the rules of less
    # specific hostnames, so positions, not path lengths, decide.
    for i in range(rnd.randint(router_mod.INDEX_MIN_RULES, 40)):
        kind = rnd.choice(["PathPrefix", "PathPrefix", "Exact", "RegularExpression"])
        if kind == "RegularExpression":
            val = rnd.choice(["/a.*", "/(api|b)/.*", "/[a-z0-9]+"])
        elif kind == "PathPrefix" and rnd.random() < 0.1:
            val = "/"  # matches every path
        else:
            val = value()
            if kind == "PathPrefix":
                val = val.rstrip("/") or "/"
        method = rnd.choice([None, None, "GET", "POST"])
        headers = (HeaderMatch(type="Exact", name="x-v", value="1"),) if rnd.random() < 0.15 else ()
        rules.append(
            Rule(
                name=f"r{i}",
                path=PathMatch(type=kind, value=val),
                backends=(BackendRef(weight=1, backend="b"),),
                method=method,
                headers=headers,
            )
        )
    vh = Router(snapshot(VirtualHost(hostname="*", rules=tuple(rules)))).tables[8000].any
    assert vh is not None and vh.exacts is not None, "the host should be indexed"
    paths = [b"/", b"/x", b"/a", b"/a/", b"/ab", b"/api/v1", b"/api/v1/", b"/b/a/x", b"/v1", b"/a/b/api", b"//a"]
    paths += [value().encode() for _ in range(40)]
    found = set()
    for path in paths:
        for method in (b"GET", b"POST"):
            for headers in ([], [(b"X-V", b"1")]):
                want = _reference(vh, path, method, headers)
                assert vh.match(path, method, headers) is want, (seed, path, method, headers)
                found.add(want)
    assert found - {None}, "some path should find a rule"


def test_small_hosts_are_scanned_and_big_ones_indexed_by_path() -> None:
    n = router_mod.INDEX_MIN_RULES
    small = [rule(f"s{i}", "PathPrefix", f"/p{i}") for i in range(n - 1)]
    vh = Router(snapshot(VirtualHost(hostname="*", rules=tuple(small)))).tables[8000].any
    assert vh is not None and vh.exacts is None
    assert vh.match(b"/p1/x").name == "s1" and vh.match(b"/p1x") is None
    # A catch-all between two rules under /x: it wins over the later one, whatever their lengths.
    big = [rule("x1", "Exact", "/x/1"), rule("all", "PathPrefix", "/"), rule("x2", "PathPrefix", "/x/")]
    big += [rule(f"p{i}", "PathPrefix", f"/p{i}/q") for i in range(n)]
    big += [rule("re", "RegularExpression", "/r[0-9]+")]
    vh = Router(snapshot(VirtualHost(hostname="*", rules=tuple(big)))).tables[8000].any
    assert vh is not None and vh.exacts == {b"/x/1": [0]}
    assert vh.lengths == (5, 2)  # longest first, each once
    assert vh.prefixes == [[f"/p{i}/q".encode() for i in range(n)], [b"/x"]]  # sorted within a length
    assert vh.targets == [[[3 + i] for i in range(n)], [[2]]]
    assert vh.anywhere == [1] and vh.regexes == [3 + n]
    assert vh.match(b"/x/1").name == "x1" and vh.match(b"/x/2").name == "all" and vh.match(b"/zz").name == "all"
    assert vh.match(b"/p1/q").name == "all"  # position 1 comes before every /p rule
    alone = [rule(f"p{i}", "PathPrefix", f"/p{i}/q") for i in range(n)] + [rule("re", "RegularExpression", "/r[0-9]+")]
    vh = Router(snapshot(VirtualHost(hostname="*", rules=tuple(alone)))).tables[8000].any
    assert vh is not None
    assert vh.match(b"/p1/q").name == "p1" and vh.match(b"/p1/q/z").name == "p1"
    assert vh.match(b"/p1/qz") is None and vh.match(b"/p1") is None and vh.match(b"/p1/") is None
    assert vh.match(b"/r12").name == "re" and vh.match(b"/r12/") is None


def test_conditions_break_ties_within_one_prefix() -> None:
    def conditioned(name: str, method: str | None) -> Rule:
        return Rule(
            name=name,
            path=PathMatch(type="PathPrefix", value="/api"),
            backends=(BackendRef(weight=1, backend="b"),),
            method=method,
        )

    rules = (conditioned("post", "POST"), conditioned("get", "GET"), conditioned("any", None))
    rules += tuple(rule(f"p{i}", "PathPrefix", f"/p{i}") for i in range(router_mod.INDEX_MIN_RULES))
    vh = Router(snapshot(VirtualHost(hostname="*", rules=rules))).tables[8000].any
    assert vh is not None and vh.prefixes[0] == [b"/api"] and vh.targets[0] == [[0, 1, 2]]
    assert vh.match(b"/api/x", b"POST").name == "post"
    assert vh.match(b"/api/x", b"GET").name == "get"
    assert vh.match(b"/api", b"PUT").name == "any"
