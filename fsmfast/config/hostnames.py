"""Gateway API hostnames: validation, listener/route intersection and specificity order."""

from __future__ import annotations

import ipaddress
import re

_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_HOSTNAME = re.compile(rf"^(\*\.)?{_LABEL}(\.{_LABEL})*$")

ANY = "*"


def hostname_problem(name: str, *, wildcard: bool = True) -> str | None:
    """Why ``name`` (already lower-cased) is not a Gateway API hostname, or None."""
    try:
        ipaddress.ip_address(name)
    except ValueError:
        pass
    else:
        return f'"{name}" is an IP address; a hostname is required'
    if len(name) > 253 or not _HOSTNAME.match(name):
        return f'"{name}" is not a valid hostname (DNS labels of a-z, 0-9 and "-", optionally starting with "*.")'
    if not wildcard and name.startswith("*."):
        return f'"{name}" must be a precise hostname, without a wildcard'
    return None


def _is_wild(name: str) -> bool:
    return name.startswith("*.")


def covers(pattern: str, name: str) -> bool:
    """True when every host matched by ``name`` is also matched by ``pattern``.

    A wildcard stands for one or more labels: ``*.example.com`` covers ``a.b.example.com``
    and ``*.a.example.com``, but not ``example.com``.
    """
    if pattern in (ANY, name):
        return True
    return _is_wild(pattern) and name.endswith(pattern[1:])


def intersect(listener: str | None, route: str) -> str | None:
    """The hostname a route hostname is served as on a listener, or None when disjoint.

    The result is always the more specific of the two (Gateway API hostnames concept).
    """
    listener = listener or ANY
    if covers(listener, route):
        return route
    if covers(route, listener):
        return listener
    return None


def effective(listener: str | None, route_hostnames: list[str]) -> list[str]:
    """Hostnames a route serves on a listener; empty when none intersects."""
    if not route_hostnames:
        return [listener or ANY]
    out: list[str] = []
    for name in route_hostnames:
        hit = intersect(listener, name)
        if hit is not None and hit not in out:
            out.append(hit)
    return out


def specificity(name: str | None) -> tuple[int, int, str]:
    """Sort key, most specific first: exact names, wildcards with more labels, then ``*``."""
    if name is None or name == ANY:
        return (2, 0, "")
    if _is_wild(name):
        return (1, -name.count("."), name)
    return (0, 0, name)
