"""HTTPRoute filters at run time, precomputed per (rule, backendRef) when a snapshot is applied.

A rule without filters costs nothing: its choices carry ``plan = None`` and the exchange
skips all of this behind that one check.

Order and combination (Gateway API leaves part of this to implementations):
- request headers: the rule's RequestHeaderModifier, then the chosen backendRef's; within
  one modifier: ``remove`` and ``set`` drop every value of their names (case-insensitive),
  ``set`` appends its value, ``add`` appends ``,value`` to the last existing line of that
  header (``orig,added``) or adds the header when absent;
- URLRewrite, after the header modifiers: a backendRef's hostname or path replaces the
  rule's, part by part; the hostname replaces the Host sent upstream (X-Forwarded-Host keeps
  the client's); the path replaces the request path and keeps the query string;
- response headers: the rule's ResponseHeaderModifier, then the backendRef's, on the
  upstream's response before the head is written (framing headers are the gateway's own and
  cannot be changed this way);
- mirrors: the rule's, then the backendRef's (see ``fsmfast.proxy.mirror``).

Paths are bytes as the client sent them (no decoding); a rewritten or redirected path is the
configured value with the unmatched rest of the client's path appended verbatim.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from fsmfast.snapshot import Filters, HeaderModifier, PathModifier, Redirect

SCHEME_PORTS = {b"http": 80, b"https": 443}


class HeaderOps:
    """One Request/ResponseHeaderModifier, ready to apply to a header list."""

    __slots__ = ("add", "drop", "set")

    def __init__(self, mod: HeaderModifier) -> None:
        self.set = [(h.name.encode(), h.value.encode()) for h in mod.set]
        self.add = [(h.name.encode(), h.name.lower().encode(), h.value.encode()) for h in mod.add]
        self.drop = frozenset(name.encode() for name in mod.remove) | frozenset(n.lower() for n, _ in self.set)

    def apply(self, headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
        drop = self.drop
        out = [(n, v) for n, v in headers if n.lower() not in drop] if drop else list(headers)
        out += self.set
        for name, lname, value in self.add:
            for i in range(len(out) - 1, -1, -1):
                if out[i][0].lower() == lname:
                    out[i] = (out[i][0], out[i][1] + b"," + value)
                    break
            else:
                out.append((name, value))
        return out


def replace_prefix(path: bytes, prefix: bytes, replacement: bytes) -> bytes:
    """ReplacePrefixMatch, element-wise (Gateway API's table, semantics digest §6.4).

    ``prefix`` is the matched PathPrefix as stored (no trailing "/", b"" for "/"); ``path``
    starts with it at a segment boundary. A trailing "/" of the replacement is ignored, and the
    result is never empty and never has "//" where the two meet: with replacement "/xyz",
    /foo/bar -> /xyz/bar, /foo -> /xyz, /foo/ -> /xyz/; with "" or "/", /foo/bar -> /bar and
    /foo -> /. A prefix of "/" is also element-wise: /bar -> /xyz/bar (never /xyzbar).
    """
    rest = path[len(prefix) :]
    head = replacement.rstrip(b"/")
    if not rest:
        return head or b"/"
    return head + rest


def new_path(mod: PathModifier, path: bytes, prefix: bytes | None) -> bytes:
    value = mod.value.encode()
    if mod.type == "ReplaceFullPath" or prefix is None:
        return value or b"/"
    return replace_prefix(path, prefix, value)


def split_target(target: bytes) -> tuple[bytes, bytes]:
    """(path, "?query" or b"") of an origin-form request-target."""
    q = target.find(b"?")
    return (target, b"") if q < 0 else (target[:q], target[q:])


class RedirectPlan:
    """RequestRedirect: the status and how to build ``Location`` from the request."""

    __slots__ = ("hostname", "path", "port", "prefix", "scheme", "status")

    def __init__(self, redirect: Redirect, prefix: bytes | None) -> None:
        self.status = redirect.status
        self.scheme = redirect.scheme.encode() if redirect.scheme else None
        self.hostname = redirect.hostname.encode() if redirect.hostname else None
        self.port = redirect.port
        self.path = redirect.path
        self.prefix = prefix

    def location(self, scheme: bytes, host: bytes, listener_port: int, target: bytes) -> bytes:
        """``host`` is the request's host without port (lower-case); ``target`` origin-form.

        Port (Gateway API HTTPRequestRedirectFilter.port): the configured one; else the
        well-known port of a configured scheme; else the listener port the request came in
        on. It is left out when it is the scheme's default (http 80, https 443).
        """
        out_scheme = self.scheme or scheme
        if self.port is not None:
            port = self.port
        elif self.scheme is not None:
            port = SCHEME_PORTS.get(self.scheme, listener_port)
        else:
            port = listener_port
        path, query = split_target(target)
        if self.path is not None:
            path = new_path(self.path, path, self.prefix)
        hostname = self.hostname or host
        if not hostname:
            return path + query  # HTTP/1.0 without Host: a relative reference is all we can say
        authority = hostname if SCHEME_PORTS.get(out_scheme) == port else hostname + b":%d" % port
        return out_scheme + b"://" + authority + path + query


class MirrorTarget:
    """A RequestMirror whose backend is valid: the worker's backend state and the share mirrored."""

    __slots__ = ("backend", "name", "percent")

    def __init__(self, backend: Any, name: str, percent: float) -> None:
        self.backend = backend
        self.name = name
        self.percent = percent


class RequestPlan:
    """What the filters of one (rule, backendRef) do to a forwarded request and its response."""

    __slots__ = ("host", "mirrors", "path", "prefix", "request_ops", "response_ops")

    def __init__(
        self,
        request_ops: Sequence[HeaderOps],
        response_ops: Sequence[HeaderOps],
        host: bytes | None,
        path: PathModifier | None,
        prefix: bytes | None,
        mirrors: Sequence[MirrorTarget],
    ) -> None:
        self.request_ops = tuple(request_ops)
        self.response_ops = tuple(response_ops)
        self.host = host
        self.path = path
        self.prefix = prefix
        self.mirrors = tuple(mirrors)

    def request(self, headers: list[tuple[bytes, bytes]], target: bytes) -> tuple[list[tuple[bytes, bytes]], bytes]:
        """The header list and request-target to send upstream (the inputs are not modified)."""
        for ops in self.request_ops:
            headers = ops.apply(headers)
        if self.host is not None:
            host = self.host
            headers = [(n, v) for n, v in headers if n.lower() != b"host"]
            headers.insert(0, (b"Host", host))
        if self.path is not None and target.startswith(b"/"):
            path, query = split_target(target)
            target = new_path(self.path, path, self.prefix) + query
        return headers, target

    def response(self, headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
        for ops in self.response_ops:
            headers = ops.apply(headers)
        return headers


def plan_for(
    rule_filters: Filters | None,
    ref_filters: Filters | None,
    prefix: bytes | None,
    backends: Mapping[str, Any],
) -> RequestPlan | None:
    """The combined plan of a rule's filters and one backendRef's, or None when there is nothing to do."""
    layers = [f for f in (rule_filters, ref_filters) if f is not None]
    if not layers:
        return None
    request_ops = [HeaderOps(f.request_headers) for f in layers if f.request_headers is not None]
    response_ops = [HeaderOps(f.response_headers) for f in layers if f.response_headers is not None]
    host: bytes | None = None
    path: PathModifier | None = None
    mirrors = []
    for f in layers:  # the backendRef's rewrite, later, wins part by part
        if f.rewrite is not None:
            if f.rewrite.hostname is not None:
                host = f.rewrite.hostname.encode()
            if f.rewrite.path is not None:
                path = f.rewrite.path
        for mirror in f.mirrors:
            state = backends.get(mirror.backend) if mirror.backend is not None else None
            if state is not None and mirror.percent > 0:
                mirrors.append(MirrorTarget(state, mirror.backend or "", mirror.percent))
    if not (request_ops or response_ops or host or path or mirrors):
        return None
    return RequestPlan(request_ops, response_ops, host, path, prefix, mirrors)
