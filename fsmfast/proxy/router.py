"""Request routing over a snapshot: listener port -> virtual host -> rule -> backend.

Pure: no sockets, no loop. Built once per snapshot in each worker (and by ``fsmfast routes``
and ``fsmfast explain``, which use this very code); lookups are a dict hit for exact hosts,
one dict hit per label for wildcards, then that host's rules, which the compiler already put
in Gateway API precedence order (``fsmfast.compile.routetable``): the first rule whose match
holds wins. A host with a few rules tries them in turn; a bigger one looks its path up in an
index (``VHost``), so the cost grows neither with the number of routes nor with one host's
path rules, only with its RegularExpression rules and with rules that share a path and differ by
method, header or query.

Hostnames: the most specific virtual host matching the Host header (port ignored, case
folded) answers; its list already includes the rules of less specific hostnames of the same
listener after its own, so a request falls through to them when none of the specific
hostname's rules match (Gateway API ranks by route hostname, then by match), but never to
another listener's routes (listener isolation).

The router matches the path it is given. ``fsmfast.proxy.paths`` (the request-validation
work) normalizes the request-target once before routing, and the upstream receives that same
normalized target, so matching and forwarding cannot disagree; ``%2F`` stays an escape and is
never a separator (``/a%2Fb`` does not match a prefix ``/a``). Beyond that normalization, the
forwarded request-target is the client's unless a URLRewrite filter changes it.
RegularExpression paths are Python ``re`` full matches on the path bytes (query excluded),
compiled here once per snapshot.

A rule without method/header/query conditions and without filters costs what a plain path
rule always cost: ``conditions``, ``redirect``, ``timeouts`` and each choice's ``plan`` are
None and checked once.
"""

from __future__ import annotations

import gc
import re
from collections.abc import Mapping
from typing import Any

from fsmfast.codec import normalize_host
from fsmfast.proxy.conditions import Conditions, RequestView, conditions
from fsmfast.proxy.filters import RedirectPlan, RequestPlan, plan_for
from fsmfast.snapshot import Listener, Rule, Snapshot, Timeouts, VirtualHost

__all__ = ["Choice", "HostTable", "RouteRule", "Router", "VHost", "normalize_host"]


class Choice:
    """A weighted backendRef at run time: the backend object, or the reason it is invalid.

    The backend object is whatever the caller's mapping holds: the snapshot's ``Backend``
    for pure use, the worker's per-backend state (endpoints, pools) when serving. ``plan``
    is what the rule's and this backendRef's filters do to the request, or None.
    """

    __slots__ = ("backend", "error", "name", "plan", "policies", "weight")

    def __init__(
        self, weight: int, backend: Any, error: str | None, name: str | None, plan: RequestPlan | None
    ) -> None:
        self.weight = weight
        self.backend = backend
        self.error = error
        self.name = name
        self.plan = plan
        # The backend's policy hooks (fsmfast.pipeline.hooks), copied here so that the request
        # path tests them without a getattr on the backend object: a circuit breaker's, or none.
        self.policies: tuple[Any, ...] = tuple(getattr(backend, "policies", ()))


class RouteRule:
    """One compiled (route, rule, match) with its smooth weighted round-robin state (nginx's algorithm)."""

    __slots__ = (
        "_current",
        "_total",
        "below",
        "choices",
        "conditions",
        "exact",
        "gate",
        "name",
        "policies",
        "prefix",
        "redirect",
        "regex",
        "source",
        "timeouts",
    )

    def __init__(self, rule: Rule, backends: Mapping[str, Any]) -> None:
        self.name = rule.name
        self.source = rule
        kind = rule.path.type
        value = rule.path.value.encode()
        self.exact = value if kind == "Exact" else None
        self.regex = re.compile(value) if kind == "RegularExpression" else None
        # PathPrefix "/" matches everything; others match by whole segment.
        self.prefix = (b"" if value == b"/" else value.rstrip(b"/")) if kind == "PathPrefix" else None
        # What a path strictly below the prefix starts with (VHost.match tests this directly).
        self.below = self.prefix + b"/" if self.prefix else b""
        self.conditions: Conditions | None = conditions(rule.method, rule.headers, rule.query)
        filters = rule.filters
        self.redirect = (
            RedirectPlan(filters.redirect, self.prefix) if filters is not None and filters.redirect else None
        )
        self.timeouts: Timeouts | None = rule.timeouts
        # This route's policy hooks (fsmfast.pipeline.hooks), run in order before a backend is
        # chosen; none is configured yet, and an empty tuple costs the request one truth test.
        self.policies: tuple[Any, ...] = ()
        # This host's local rate limits on the rule when they need nothing of the request
        # (fsmfast.edge.gate): asked before the policies, with no view of the request made.
        self.gate: Any = None
        self.choices: list[Choice] = []
        for ref in rule.backends:
            if ref.weight <= 0:
                continue  # weight 0 is never chosen
            backend = backends.get(ref.backend) if ref.backend is not None else None
            if backend is not None and (rule.retry is not None or rule.session_persistence is not None):
                # The rule's own retry and session win over the backend's (the worker's backends
                # make a view of the backend for this rule; a snapshot's have no such thing).
                for_rule = getattr(backends, "for_rule", None)
                if for_rule is not None:
                    backend = for_rule(ref.backend, rule)
            error = ref.error
            if backend is None and error is None:
                error = f"backend {ref.backend} is not in the snapshot"
            plan = plan_for(filters, ref.filters, self.prefix, backends) if backend is not None else None
            self.choices.append(Choice(ref.weight, backend, error, ref.backend, plan))
        self._current = [0] * len(self.choices)
        self._total = sum(c.weight for c in self.choices)
        if rule.session_persistence is not None and len(self.choices) > 1:
            # Gateway API: a session beats the weights. Its hook finds the choice whose backend holds
            # the session's endpoint (the worker's backends make it; a snapshot's have none).
            route_session = getattr(backends, "route_session", None)
            hook = route_session(rule, self.choices) if route_session is not None else None
            if hook is not None:
                self.policies = (hook,)

    def matches(self, path: bytes) -> bool:
        """The path part of the match (the query string is not part of ``path``).

        ``VHost.match`` inlines these same tests (a call per candidate is measurable there);
        tests/unit/test_router.py checks that the two agree.
        """
        if self.exact is not None:
            return path == self.exact
        prefix = self.prefix
        if prefix is None:
            return self.regex is not None and self.regex.fullmatch(path) is not None
        # Whole segments: the prefix itself, or anything below it ("/foo" is not "/foobar").
        return not prefix or path == prefix or path.startswith(self.below)

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


# A virtual host with this many rules or more finds its rule through an index of its paths instead
# of trying every rule in turn. callgrind, compiled, per lookup of a PathPrefix: the scan costs ~180
# instructions plus ~140 a rule tried, the index ~660-730 whatever the number of rules; below this
# the scan is cheaper on average.
INDEX_MIN_RULES = 6


class VHost:
    """One hostname's rules, in precedence order, and how a request path finds the first that holds.

    A big host is indexed. ``exacts`` maps an Exact path to the positions (in ``rules``) of the
    rules that have it. PathPrefix values (trailing slash trimmed) are grouped by length:
    ``lengths`` longest first, and for each, ``prefixes`` (sorted) with their positions in
    ``targets``. A path looks only at the lengths where it has a segment boundary, and finds the
    one prefix of that length it could start with by bisection, comparing the whole path with the
    prefixes (a prefix of the path sorts at or before it), so no key is sliced out of the path
    per request. ``anywhere`` (PathPrefix ``/``) and ``regexes`` are candidates for every path.
    The answer is the smallest position among the candidates whose match and conditions hold:
    the rule the scan finds first, since a host's list is not ordered by path length alone (the
    rules of less specific hostnames follow its own).
    """

    __slots__ = (
        "anywhere",
        "conditioned",
        "exacts",
        "hostname",
        "lengths",
        "listeners",
        "prefixes",
        "regexes",
        "rules",
        "targets",
    )

    def __init__(self, vhost: VirtualHost, rules: list[RouteRule]) -> None:
        self.hostname = vhost.hostname
        self.listeners = vhost.listeners
        self.rules = rules
        self.conditioned = any(rule.conditions is not None for rule in rules)
        # None below INDEX_MIN_RULES: match scans the rules.
        self.exacts: dict[bytes, list[int]] | None = None
        self.lengths: tuple[int, ...] = ()
        self.prefixes: list[list[bytes]] = []
        self.targets: list[list[list[int]]] = []
        self.anywhere: list[int] = []
        self.regexes: list[int] = []
        if len(rules) < INDEX_MIN_RULES:
            return
        exacts: dict[bytes, list[int]] = {}
        by_prefix: dict[bytes, list[int]] = {}
        for pos, rule in enumerate(rules):
            if rule.exact is not None:
                exacts.setdefault(rule.exact, []).append(pos)
            elif rule.prefix is None:
                self.regexes.append(pos)
            elif rule.prefix:
                by_prefix.setdefault(rule.prefix, []).append(pos)
            else:
                self.anywhere.append(pos)
        self.exacts = exacts
        by_length: dict[int, list[bytes]] = {}
        for prefix in by_prefix:
            by_length.setdefault(len(prefix), []).append(prefix)
        self.lengths = tuple(sorted(by_length, reverse=True))
        for length in self.lengths:
            same = sorted(by_length[length])
            self.prefixes.append(same)
            self.targets.append([by_prefix[prefix] for prefix in same])

    def match(
        self, path: bytes, method: bytes = b"GET", headers: list[tuple[bytes, bytes]] | None = None, target: bytes = b""
    ) -> RouteRule | None:
        """The first rule (in precedence order) whose match holds. ``target`` carries the query."""
        exacts = self.exacts
        if exacts is None:
            return self._scan(path, method, headers, target)
        rules = self.rules
        req = RequestView(method, headers or [], target) if self.conditioned else None
        best = len(rules)
        if exacts:
            positions = exacts.get(path)
            if positions is not None:
                best = self._earliest(positions, best, req)
        n = len(path)
        lengths = self.lengths
        for i in range(len(lengths)):
            length = lengths[i]
            # A prefix matches the path itself or what lies below it: "/foo" is not "/foobar".
            if length < n:
                if path[length] != 47:  # b"/"
                    continue
            elif length > n:
                continue
            keys = self.prefixes[i]
            lo = 0
            hi = len(keys)
            while lo < hi:
                mid = (lo + hi) >> 1
                if path < keys[mid]:
                    hi = mid
                else:
                    lo = mid + 1
            if lo and path.startswith(keys[lo - 1]):
                best = self._earliest(self.targets[i][lo - 1], best, req)
        if self.anywhere:
            best = self._earliest(self.anywhere, best, req)
        for pos in self.regexes:
            if pos >= best:
                break
            rule = rules[pos]
            # ``regexes`` holds RegularExpression rules only, so ``regex`` is set; ``req`` is None only when
            # no rule here has conditions (``conditioned``). Invariants of the table the checker cannot see.
            if rule.regex.fullmatch(path) is not None and (  # type: ignore[union-attr]
                rule.conditions is None or rule.conditions.test(req)  # type: ignore[arg-type]
            ):
                best = pos
                break
        return rules[best] if best < len(rules) else None

    def _earliest(self, positions: list[int], best: int, req: RequestView | None) -> int:
        """The first of ``positions`` before ``best`` whose conditions hold, else ``best``."""
        rules = self.rules
        for pos in positions:
            if pos >= best:
                break
            rule = rules[pos]
            cond = rule.conditions
            # ``req`` is None only when no rule here has conditions (``conditioned``).
            if cond is None or cond.test(req):  # type: ignore[arg-type]
                return pos
        return best

    def _scan(
        self, path: bytes, method: bytes, headers: list[tuple[bytes, bytes]] | None, target: bytes
    ) -> RouteRule | None:
        """Every rule in turn: what a small host does, and the reference the index must agree with."""
        req = None
        for rule in self.rules:
            # RouteRule.matches, inlined.
            exact = rule.exact
            if exact is not None:
                if path != exact:
                    continue
            else:
                prefix = rule.prefix
                if prefix is None:
                    if rule.regex.fullmatch(path) is None:  # type: ignore[union-attr]
                        continue
                elif prefix and path != prefix and not path.startswith(rule.below):
                    continue
            cond = rule.conditions
            if cond is None:
                return rule
            if req is None:
                req = RequestView(method, headers or [], target)
            if cond.test(req):
                return rule
        return None


class HostTable:
    """Virtual hosts of one port."""

    __slots__ = ("any", "exact", "port", "wildcard")

    def __init__(self, listener: Listener, backends: Mapping[str, Any], shared: dict[str, RouteRule]) -> None:
        self.port = listener.port
        self.exact: dict[bytes, VHost] = {}
        self.wildcard: dict[bytes, VHost] = {}  # key: the suffix with its leading dot
        self.any: VHost | None = None
        for vh in listener.vhosts:
            rules = []
            # Edge policies (issue 20) become hooks in the worker (its backends know how); the pure
            # tools (explain, routes) describe them instead of drawing their random faults.
            edge_hooks = getattr(backends, "edge_hooks", None)
            edge = vh.edge if edge_hooks is not None else None
            for r in vh.rules:
                # A rule is a candidate of several hostnames: one object, one round-robin state. Not
                # when this hostname has edge policies for it (issue 20): those are this host's own.
                setting = edge.get(r.name) if edge else None
                key: Any = r.name if setting is None else (r.name, setting)
                built = shared.get(key)
                if built is None:
                    built = shared[key] = RouteRule(r, backends)
                    if setting is not None and edge_hooks is not None:
                        built.gate, hooks = edge_hooks(setting)
                        built.policies = hooks + built.policies
                rules.append(built)
            vhost = VHost(vh, rules)
            name = vh.hostname.lower().encode()
            if name == b"*":
                self.any = vhost
            elif name.startswith(b"*."):
                self.wildcard[name[1:]] = vhost
            else:
                self.exact[name] = vhost

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
        # A big table is hundreds of thousands of small lists and dicts, none of them in a cycle:
        # the collector's passes over them while they are made took about 40 % of the build.
        paused = gc.isenabled()
        gc.disable()
        try:
            self.tables: dict[int, HostTable] = {
                listener.port: HostTable(listener, resolved, {}) for listener in snapshot.listeners
            }
        finally:
            if paused:
                gc.enable()
