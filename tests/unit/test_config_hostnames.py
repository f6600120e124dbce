"""Hostname validation, listener x route intersection and specificity order (Gateway API)."""

from __future__ import annotations

import pytest

from fsmfast.config.hostnames import covers, effective, hostname_problem, intersect, specificity


@pytest.mark.parametrize(
    ("listener", "route", "expected"),
    [
        # both precise: equal or nothing
        ("foo.example.com", "foo.example.com", "foo.example.com"),
        ("foo.example.com", "bar.example.com", None),
        # listener wildcard vs precise route: suffix on one or more labels
        ("*.example.com", "foo.example.com", "foo.example.com"),
        ("*.example.com", "a.b.example.com", "a.b.example.com"),
        ("*.example.com", "example.com", None),
        ("*.example.com", "foo.example.org", None),
        # precise listener vs wildcard route: symmetric
        ("foo.example.com", "*.example.com", "foo.example.com"),
        ("example.com", "*.example.com", None),
        # wildcard vs wildcard: the more specific one
        ("*.com", "*.example.com", "*.example.com"),
        ("*.example.com", "*.com", "*.example.com"),
        ("*.example.com", "*.example.com", "*.example.com"),
        ("*.example.com", "*.example.org", None),
        # no listener hostname behaves as "*"
        (None, "foo.example.com", "foo.example.com"),
        (None, "*.example.com", "*.example.com"),
    ],
)
def test_intersection_table(listener: str | None, route: str, expected: str | None) -> None:
    assert intersect(listener, route) == expected


def test_effective_hostnames() -> None:
    assert effective(None, []) == ["*"]
    assert effective("*.example.com", []) == ["*.example.com"]
    assert effective("*.example.com", ["a.example.com", "b.example.org", "*.com", "a.example.com"]) == [
        "a.example.com",
        "*.example.com",
    ]
    assert effective("foo.example.com", ["bar.example.com"]) == []


def test_covers() -> None:
    assert covers("*", "anything.example")
    assert covers("*.com", "*.example.com")
    assert not covers("*.example.com", "*.com")
    assert not covers("foo.example.com", "*.example.com")


def test_specificity_order() -> None:
    names = ["*", "*.com", "b.example.com", "*.example.com", "a.example.com", "*.a.example.com"]
    assert sorted(names, key=specificity) == [
        "a.example.com",
        "b.example.com",
        "*.a.example.com",
        "*.example.com",
        "*.com",
        "*",
    ]


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("foo.example.com", None),
        ("*.example.com", None),
        ("a-b.c0", None),
        ("10.1.2.3", '"10.1.2.3" is an IP address; a hostname is required'),
        ("::1", '"::1" is an IP address; a hostname is required'),
        (
            "a_b.com",
            '"a_b.com" is not a valid hostname (DNS labels of a-z, 0-9 and "-", optionally starting with "*.")',
        ),
        (
            "foo.*.com",
            '"foo.*.com" is not a valid hostname (DNS labels of a-z, 0-9 and "-", optionally starting with "*.")',
        ),
        ("-a.com", '"-a.com" is not a valid hostname (DNS labels of a-z, 0-9 and "-", optionally starting with "*.")'),
    ],
)
def test_hostname_validation(name: str, problem: str | None) -> None:
    assert hostname_problem(name) == problem


def test_precise_hostname() -> None:
    assert hostname_problem("*.a.com", wildcard=False) == '"*.a.com" must be a precise hostname, without a wildcard'
    assert hostname_problem("a.com", wildcard=False) is None
