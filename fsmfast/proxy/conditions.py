"""The non-path parts of an HTTPRouteMatch: method, headers, query parameters (ANDed).

Only rules that have such conditions pay for them: the router checks the path first and
builds a ``RequestView`` (header and query lookups, computed lazily, once per request) only
when a rule whose path matched has conditions.

Semantics (Gateway API HTTPRouteMatch, plus fsmfast's choices where the spec leaves room):
- method: exact, upper-case (``HEAD`` does not match ``GET``);
- header names are case-insensitive; a header sent several times is matched against its
  values joined with "," (RFC 9110 §5.3); values compare case-sensitively;
- query parameter names are case-sensitive; names and values are percent-decoded (``+`` is
  not a space); a repeated parameter is matched by its first value;
- ``RegularExpression`` is a Python ``re`` full match on the bytes (patterns are compiled
  once per snapshot); a header or parameter that is absent never matches.

``explain`` returns the reason a condition failed, for ``fsmfast explain``; it evaluates the
very same predicates as ``test``.
"""

from __future__ import annotations

import re
from urllib.parse import unquote_to_bytes

from fsmfast.snapshot import HeaderMatch, QueryMatch


class RequestView:
    """Lazily computed lookups over one request's method, headers and target."""

    __slots__ = ("_headers", "_query", "headers", "method", "target")

    def __init__(self, method: bytes, headers: list[tuple[bytes, bytes]], target: bytes) -> None:
        self.method = method
        self.headers = headers
        self.target = target
        self._headers: dict[bytes, bytes] | None = None
        self._query: dict[bytes, bytes] | None = None

    def header(self, lname: bytes) -> bytes | None:
        table = self._headers
        if table is None:
            table = {}
            for name, value in self.headers:
                key = name.lower()
                old = table.get(key)
                table[key] = value if old is None else old + b"," + value
            self._headers = table
        return table.get(lname)

    def query(self, name: bytes) -> bytes | None:
        table = self._query
        if table is None:
            table = {}
            q = self.target.find(b"?")
            if q >= 0:
                for pair in self.target[q + 1 :].split(b"&"):
                    if not pair:
                        continue
                    key, _, value = pair.partition(b"=")
                    key = unquote_to_bytes(key)
                    if key not in table:  # the first value of a repeated parameter
                        table[key] = unquote_to_bytes(value)
            self._query = table
        return table.get(name)


class _Value:
    """Exact or full-regex comparison of one value."""

    __slots__ = ("exact", "regex", "text")

    def __init__(self, kind: str, value: str) -> None:
        raw = value.encode()
        self.exact = raw if kind == "Exact" else None
        self.regex = re.compile(raw) if kind == "RegularExpression" else None
        self.text = f"= {value!r}" if kind == "Exact" else f"~ /{value}/"

    def ok(self, got: bytes | None) -> bool:
        if got is None:
            return False
        if self.exact is not None:
            return got == self.exact
        assert self.regex is not None
        return self.regex.fullmatch(got) is not None


class _Method:
    __slots__ = ("method",)

    def __init__(self, method: str) -> None:
        self.method = method.encode()

    def ok(self, req: RequestView) -> bool:
        return req.method == self.method

    def why(self, req: RequestView) -> str:
        return f"method {req.method.decode('latin-1')} is not {self.method.decode()}"


class _Header:
    __slots__ = ("name", "value")

    def __init__(self, match: HeaderMatch) -> None:
        self.name = match.name.encode()
        self.value = _Value(match.type, match.value)

    def ok(self, req: RequestView) -> bool:
        return self.value.ok(req.header(self.name))

    def why(self, req: RequestView) -> str:
        got = req.header(self.name)
        seen = "absent" if got is None else repr(got.decode("latin-1"))
        return f"header {self.name.decode()} {self.value.text}: {seen}"


class _Query:
    __slots__ = ("name", "value")

    def __init__(self, match: QueryMatch) -> None:
        self.name = match.name.encode()
        self.value = _Value(match.type, match.value)

    def ok(self, req: RequestView) -> bool:
        return self.value.ok(req.query(self.name))

    def why(self, req: RequestView) -> str:
        got = req.query(self.name)
        seen = "absent" if got is None else repr(got.decode("utf-8", "replace"))
        return f"query {self.name.decode()} {self.value.text}: {seen}"


class Conditions:
    """All the non-path conditions of one match; ``test`` is True when every one holds."""

    __slots__ = ("checks",)

    def __init__(self, method: str | None, headers: tuple[HeaderMatch, ...], query: tuple[QueryMatch, ...]) -> None:
        checks: list[_Method | _Header | _Query] = []
        if method is not None:
            checks.append(_Method(method))
        checks += [_Header(h) for h in headers]
        checks += [_Query(q) for q in query]
        self.checks = tuple(checks)

    def test(self, req: RequestView) -> bool:
        return all(check.ok(req) for check in self.checks)

    def explain(self, req: RequestView) -> str | None:
        """Why the conditions fail for ``req`` (the first failing one), or None when they hold."""
        for check in self.checks:
            if not check.ok(req):
                return check.why(req)
        return None


def conditions(
    method: str | None, headers: tuple[HeaderMatch, ...], query: tuple[QueryMatch, ...]
) -> Conditions | None:
    """None for a match on the path alone: the common case costs nothing more."""
    if method is None and not headers and not query:
        return None
    return Conditions(method, headers, query)
