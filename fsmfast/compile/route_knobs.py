"""HTTPRoute annotations for the data-plane knobs Gateway API has no field for.

- ``fsmfast.io/max-body-size``: request bodies larger than this get 413, on every rule of the
  route. A Kubernetes quantity: ``1048576``, ``512Ki``, ``10Mi``, ``1Gi``, ``500k``, ``2M``.
  Off by default. A Content-Length over the limit is refused before anything goes upstream; a
  chunked body is counted as it streams and refused when it goes over (the upstream connection
  is then reset, so the part it got never passes for a whole request).
- ``fsmfast.io/websocket``: ``"true"`` lets every rule of the route tunnel WebSocket handshakes
  (``fsmfast.proxy.websocket``); a comma-separated list of rule names (``spec.rules[].name``) or
  indexes (``"0, chat"``) limits that to those rules. ``"false"`` or absent: ``Upgrade`` is
  stripped like any hop-by-hop header.

An invalid value is a configuration error: a limit silently ignored is worse than a refused
reload. The knobs are compiled into the snapshot's rules (``Rule.max_body_size``,
``Rule.websocket``) after the routes are compiled, by rule name.
"""

from __future__ import annotations

import re

import msgspec

from fsmfast.config import model as m
from fsmfast.config.issues import Issues, Where
from fsmfast.snapshot import Rule, Snapshot

MAX_BODY_SIZE = "fsmfast.io/max-body-size"
WEBSOCKET = "fsmfast.io/websocket"

_QUANTITY = re.compile(r"([0-9]{1,18})(Ki|Mi|Gi|Ti|k|M|G|T)?")
_FACTOR = {None: 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}
_FACTOR.update({"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40})


class Knobs(msgspec.Struct, frozen=True):
    max_body_size: int | None = None
    websocket: frozenset[int] = frozenset()  # rule indexes


def parse_size(text: str) -> int | None:
    """A positive Kubernetes quantity in bytes, or None when it is not one."""
    match = _QUANTITY.fullmatch(text.strip())
    if match is None:
        return None
    value = int(match.group(1)) * _FACTOR[match.group(2)]
    return value if value > 0 else None


def route_knobs(route: m.HTTPRoute, issues: Issues) -> Knobs | None:
    """The knobs one route's annotations set, or None; problems are errors in ``issues``."""
    annotations = route.metadata.annotations
    size_text = annotations.get(MAX_BODY_SIZE)
    ws_text = annotations.get(WEBSOCKET)
    if size_text is None and ws_text is None:
        return None
    where = Where.of(route)
    size = None
    if size_text is not None:
        size = parse_size(size_text)
        if size is None:
            issues.error(
                where,
                f"metadata.annotations[{MAX_BODY_SIZE}]",
                f"expected a positive size such as 1048576, 512Ki or 10Mi, got {size_text!r}",
            )
    rules: frozenset[int] = frozenset()
    if ws_text is not None:
        rules = _websocket_rules(route, ws_text, issues, where)
    return Knobs(max_body_size=size, websocket=rules)


def _websocket_rules(route: m.HTTPRoute, text: str, issues: Issues, where: Where) -> frozenset[int]:
    value = text.strip().lower()
    count = len(route.spec.rules)
    if value == "true":
        return frozenset(range(count))
    if value == "false" or not value:
        return frozenset()
    names = {rule.name: i for i, rule in enumerate(route.spec.rules) if rule.name}
    chosen = set()
    for item in text.split(","):
        item = item.strip()
        if item in names:
            chosen.add(names[item])
        elif item.isdecimal() and int(item) < count:
            chosen.add(int(item))
        else:
            issues.error(
                where,
                f"metadata.annotations[{WEBSOCKET}]",
                f'expected "true", "false" or rule names/indexes of this route, got {item!r} in {text!r}',
            )
    return frozenset(chosen)


def apply_route_knobs(snapshot: Snapshot, routes: list[m.HTTPRoute], issues: Issues) -> Snapshot:
    """``snapshot`` with each rule carrying its route's knobs (the same object when none are set)."""
    knobs: dict[str, Knobs] = {}
    for route in routes:
        found = route_knobs(route, issues)
        if found is not None:
            knobs[f"httproute/{route.namespace}/{route.name}"] = found
    if not knobs:
        return snapshot
    listeners = tuple(
        msgspec.structs.replace(
            listener,
            vhosts=tuple(
                msgspec.structs.replace(vhost, rules=tuple(_with_knobs(rule, knobs) for rule in vhost.rules))
                for vhost in listener.vhosts
            ),
        )
        for listener in snapshot.listeners
    )
    return msgspec.structs.replace(snapshot, listeners=listeners)


def _with_knobs(rule: Rule, knobs: dict[str, Knobs]) -> Rule:
    # Rule names are "httproute/<ns>/<name>/rule/<i>/match/<j>" (fsmfast.snapshot.Rule).
    route_key, sep, rest = rule.name.partition("/rule/")
    found = knobs.get(route_key) if sep else None
    if found is None:
        return rule
    index = int(rest.split("/", 1)[0])
    return msgspec.structs.replace(rule, max_body_size=found.max_body_size, websocket=index in found.websocket)
