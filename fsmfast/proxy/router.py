"""Request routing over a snapshot: listener port -> virtual host -> rule -> backend.

Pure: no sockets, no loop. Built once per snapshot in each worker; lookups are a dict hit
for exact hosts, one dict hit per label for wildcards, then a scan of that host's rules,
which the compiler already sorted by Gateway API precedence.

Hostname choice does not fall through: the most specific virtual host that matches the
Host header owns the request, and if none of its rules match the answer is 404 (Envoy's
behaviour; Gateway API leaves the fall-through question open).

Paths are matched as the client sent them, without percent-decoding or dot-segment
removal, and the forwarded request-target is byte-for-byte the client's.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fsmfast.snapshot import Listener, Rule, Snapshot, VirtualHost


class Choice:
    """A weighted backendRef at run time: the backend object, or the reason it is invalid.

    The backend object is whatever the caller's mapping holds: the snapshot's ``Backend``
    for pure use, the worker's per-backend state (endpoints, pools) when serving.
    """

    __slots__ = ("backend", "error", "weight")

    def __init__(self, weight: int, backend: Any, error: str | None) -> None:
        self.weight = weight
        self.backend = backend
        self.error = error


class RouteRule:
    """One compiled rule with its smooth weighted round-robin state (nginx's algorithm)."""

    __slots__ = ("_current", "_total", "choices", "exact", "name", "prefix")

    def __init__(self, rule: Rule, backends: Mapping[str, Any]) -> None:
        self.name = rule.name
        value = rule.path.value.encode()
        self.exact = value if rule.path.type == "Exact" else None
        # PathPrefix "/" matches everything; others match by whole segment.
        self.prefix = None if self.exact is not None else (b"" if value == b"/" else value.rstrip(b"/"))
        self.choices: list[Choice] = []
        for ref in rule.backends:
            if ref.weight <= 0:
                continue  # weight 0 is never chosen
            backend = backends.get(ref.backend) if ref.backend is not None else None
            error = ref.error
            if backend is None and error is None:
                error = f"backend {ref.backend} is not in the snapshot"
            self.choices.append(Choice(ref.weight, backend, error))
        self._current = [0] * len(self.choices)
        self._total = sum(c.weight for c in self.choices)

    def matches(self, path: bytes) -> bool:
        if self.exact is not None:
            return path == self.exact
        prefix = self.prefix
        if not prefix:
            return True
        if not path.startswith(prefix):
            return False
        return len(path) == len(prefix) or path[len(prefix)] == 0x2F  # "/"

    def pick(self) -> Choice | None:
        choices = self.choices
        if len(choices) == 1:
            return choices[0]
        if not choices:
            return None
        current = self._current
        best = 0
        for i, c in enumerate(choices):
            current[i] += c.weight
            if current[i] > current[best]:
                best = i
        current[best] -= self._total
        return choices[best]


class VHost:
    __slots__ = ("hostname", "rules")

    def __init__(self, vhost: VirtualHost, backends: Mapping[str, Any]) -> None:
        self.hostname = vhost.hostname
        self.rules = [RouteRule(r, backends) for r in vhost.rules]

    def match(self, path: bytes) -> RouteRule | None:
        for rule in self.rules:
            if rule.matches(path):
                return rule
        return None


class HostTable:
    """Virtual hosts of one port."""

    __slots__ = ("any", "exact", "port", "wildcard")

    def __init__(self, listener: Listener, backends: Mapping[str, Any]) -> None:
        self.port = listener.port
        self.exact: dict[bytes, VHost] = {}
        self.wildcard: dict[bytes, VHost] = {}  # key: the suffix with its leading dot
        self.any: VHost | None = None
        for vh in listener.vhosts:
            built = VHost(vh, backends)
            name = vh.hostname.lower().encode()
            if name == b"*":
                self.any = built
            elif name.startswith(b"*."):
                self.wildcard[name[1:]] = built
            else:
                self.exact[name] = built

    def find(self, host: bytes) -> VHost | None:
        """``host`` is lower-case without port. Longest wildcard suffix wins."""
        vh = self.exact.get(host)
        if vh is not None:
            return vh
        if self.wildcard:
            # "*.example.com" matches one or more labels: a.example.com, a.b.example.com.
            dot = host.find(b".")
            while dot > 0:
                vh = self.wildcard.get(host[dot:])
                if vh is not None:
                    return vh
                dot = host.find(b".", dot + 1)
        return self.any


class Router:
    def __init__(self, snapshot: Snapshot, backends: Mapping[str, Any] | None = None) -> None:
        self.generation = snapshot.generation
        resolved = snapshot.backends if backends is None else backends
        self.tables: dict[int, HostTable] = {
            listener.port: HostTable(listener, resolved) for listener in snapshot.listeners
        }


def normalize_host(value: bytes) -> bytes:
    """Host header -> lower-case name without port, for matching only.

    ``[v6]:port`` keeps its brackets; a trailing dot is dropped (``foo.example.com.``).
    """
    if value.startswith(b"["):
        end = value.find(b"]")
        host = value[: end + 1] if end > 0 else value
    else:
        colon = value.rfind(b":")
        host = value[:colon] if colon >= 0 else value
    if host.endswith(b"."):
        host = host[:-1]
    return host.lower()
