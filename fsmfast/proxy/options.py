"""Per-rule hardening knobs at run time: rule name -> options, for the rules that set any.

The knobs come from HTTPRoute annotations (``fsmfast.config.annotations``) compiled into the
snapshot's rules. They live in this side table rather than on the router's rules so that the
common request pays nothing: the client side only looks here for a request with a body or an
Upgrade, and only when some rule of the snapshot has a knob at all.
"""

from __future__ import annotations

from fsmfast.snapshot import Snapshot


class RuleOptions:
    __slots__ = ("max_body_size", "websocket")

    def __init__(self, max_body_size: int | None, websocket: bool) -> None:
        self.max_body_size = max_body_size  # bytes; None: no limit
        self.websocket = websocket


def rule_options(snapshot: Snapshot) -> dict[str, RuleOptions]:
    table: dict[str, RuleOptions] = {}
    for listener in snapshot.listeners:
        for vhost in listener.vhosts:
            for rule in vhost.rules:
                if rule.max_body_size is not None or rule.websocket:
                    table[rule.name] = RuleOptions(rule.max_body_size, rule.websocket)
    return table
