"""The virtual hosts of one port: every (route, rule, match) a request may use, in Gateway API order.

A request is served by exactly one Gateway listener of its port, the one with the most specific
hostname matching its Host (listener isolation), and only by routes attached to that listener.
Among those, Gateway API ranks candidates by the route hostname that matched (more characters
of a precise name, then more characters), and only then by the match itself (§5 of the
semantics digest). Both steps are decided here, once per snapshot, so the worker does one hash
lookup and scans one list.

The keys of a port are its listener hostnames plus every intersected route hostname. For a
given Host, the most specific key it matches determines everything: which listener owns the
request, and which less specific keys also match (exactly the keys that cover it). So each key
gets one list that already includes, in order, the rules of the less specific hostnames a
request would fall through to if no rule of the specific hostname matched.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from fsmfast.compile.attach import Attachment, ListenerRef
from fsmfast.compile.index import age_key
from fsmfast.config import model as m
from fsmfast.config.hostnames import ANY, covers, intersect, specificity
from fsmfast.snapshot import Rule, VirtualHost

# A match's place among the candidates of one hostname, without the route hostname part.
Precedence = tuple[Any, ...]


def match_precedence(route: m.HTTPRoute, i: int, j: int, match: m.HTTPRouteMatch, path_value: str) -> Precedence:
    """Gateway API match precedence, smallest first.

    Exact path, then the longest PathPrefix (``path_value`` is the stored prefix, trailing "/"
    dropped), then RegularExpression paths, which Gateway API leaves to the implementation:
    fsmfast puts them after every prefix, even "/", so a regex never shadows a plain prefix
    silently. Then a method match, more header matches, more query matches, the oldest route,
    ``namespace/name``, rule order, match order.
    """
    kind = {"Exact": 0, "PathPrefix": 1, "RegularExpression": 2}[match.path.type]
    length = 0 if kind == 2 else -len(path_value)
    headers = len({h.name.lower() for h in match.headers})
    query = len({q.name for q in match.query_params})
    return (kind, length, 0 if match.method else 1, -headers, -query, *age_key(route), i, j)


def host_rank(route_hostname: str | None) -> tuple[int, int]:
    """Gateway API: most characters in a matching precise hostname, then in a matching hostname.

    A route without hostnames has no matching hostname and ranks last.
    """
    if route_hostname is None:
        return (0, 0)
    if route_hostname.startswith("*."):
        return (0, -len(route_hostname))
    return (-len(route_hostname), -len(route_hostname))


def served_pairs(att: Attachment) -> list[tuple[str, str | None]]:
    """(intersected hostname, the route hostname it came from) for what ``att`` serves."""
    listener_host = att.listener.listener.hostname
    if not att.route.spec.hostnames:
        name = listener_host or ANY
        return [(name, None)] if name in att.hostnames else []
    pairs: list[tuple[str, str | None]] = []
    for route_host in att.route.spec.hostnames:
        hit = intersect(listener_host, route_host)
        if hit is not None and hit in att.hostnames:
            pairs.append((hit, route_host))
    return pairs


def _owners(key: str, listeners: list[ListenerRef]) -> list[ListenerRef]:
    covering = [ref for ref in listeners if covers(ref.listener.hostname or ANY, key)]
    if not covering:
        return []
    best = min(specificity(ref.listener.hostname)[:2] for ref in covering)
    return [ref for ref in covering if specificity(ref.listener.hostname)[:2] == best]


def covering_names(key: str) -> list[str]:
    """Every hostname that covers ``key``: itself, each wildcard over it, and ``*``.

    ``a.b.example.com`` -> itself, ``*.b.example.com``, ``*.example.com``, ``*.com``, ``*``.
    """
    names = [key]
    if key != ANY:
        rest = key[2:] if key.startswith("*.") else key
        dot = rest.find(".")
        while dot >= 0:
            names.append("*" + rest[dot:])
            dot = rest.find(".", dot + 1)
        names.append(ANY)
    return names


def build_vhosts(
    listeners: list[ListenerRef],
    attachments: Iterable[Attachment],
    entries: dict[str, list[tuple[Precedence, Rule]]],
) -> tuple[VirtualHost, ...]:
    """Virtual hosts of one port, most specific first. ``entries`` maps a route key to its
    (precedence, Rule) pairs; ``attachments`` are those to ``listeners`` (this port).

    Cost: one pass over the attachments, then per hostname a dict lookup per label; never
    hostnames x routes, so 10,000 routes with their own hostnames compile in linear time.
    """
    keys = {ref.listener.hostname or ANY for ref in listeners}
    # served hostname -> (attachment, route hostname it came from)
    served: dict[str, list[tuple[Attachment, str | None]]] = defaultdict(list)
    for att in attachments:
        for name, route_host in served_pairs(att):
            served[name].append((att, route_host))
            keys.add(name)
    out = []
    for key in sorted(keys, key=specificity):
        owners = {ref.name for ref in _owners(key, listeners)}
        # The best route-hostname rank of each attached route that serves this key.
        ranks: dict[int, tuple[tuple[int, int], Attachment]] = {}
        for name in covering_names(key):
            for att, route_host in served.get(name, ()):
                if att.listener.name in owners:
                    rank = host_rank(route_host)
                    held = ranks.get(id(att))
                    if held is None or rank < held[0]:
                        ranks[id(att)] = (rank, att)
        best: dict[str, tuple[tuple[tuple[int, int], Precedence], Rule]] = {}
        for rank, att in ranks.values():
            for prec, rule in entries.get(att.route.key, []):
                order = (rank, prec)
                held_rule = best.get(rule.name)
                if held_rule is None or order < held_rule[0]:
                    best[rule.name] = (order, rule)
        rules = tuple(rule for _, rule in sorted(best.values(), key=lambda pair: pair[0]))
        out.append(VirtualHost(hostname=key, rules=rules, listeners=tuple(sorted(owners))))
    # A hostname with no rules only matters when it hides a less specific one that has rules
    # (a listener of its own, which must answer 404 rather than let another listener serve).
    with_rules = {vh.hostname for vh in out if vh.rules}
    return tuple(
        vh for vh in out if vh.rules or any(n in with_rules for n in covering_names(vh.hostname) if n != vh.hostname)
    )
