"""A rule's local rate limits, checked before anything else about the request (issue 20).

A limit that is never reached must cost next to nothing (issue 20: at most 5 % of S1's CPU a request).
Asked as a policy hook, a rate limit costs the view of the request (``PolicyRequest``), the hook call and
its Python, whatever it answers. But a local limit with one quota for every client needs nothing of the
request: so when a rule's edge policies start with rate limits that are all of that kind (no access
control before them, no ``key``, no ``mode: Global``), ``fsmfast.edge.hooks.edge_hooks`` hands them out as
a ``QuotaGate`` (``RouteRule.gate``) rather than as a hook, and ``fsmfast.pipeline.route.choose`` asks the
gate first, the rule's policies after it.

``check`` takes a token from each quota at once, in order (``Cells.take_now``: GCRA's load and
compare-and-swap on the quota's arena word, with CLOCK_MONOTONIC read in C; compiled, one C call a
limit). Only a quota with no token free at once sends the request the whole way, from that quota on
(``slow``: ``RateLimitHook.after``): a wait in the backlog, or the refusal. The quotas before it gave
their token, as they do in the hook (a request refused by the route's limit has used the hostname's).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

from fsmfast.pipeline.decision import Delayed, LocalReply


class Quota(Protocol):
    """What the gate reads of ``fsmfast.edge.ratelimit.Quota``: where its word is, and its GCRA numbers."""

    @property
    def place(self) -> int: ...
    @property
    def tolerance(self) -> int: ...
    @property
    def emission(self) -> int: ...


class QuotaGate:
    """The unkeyed local quotas of one rule, domain first; ``cells`` is the arena's."""

    __slots__ = ("cells", "count", "emissions", "places", "slow", "tolerances")

    def __init__(self, cells: Any, quotas: Sequence[Quota], slow: Callable[[int], LocalReply | Delayed | None]) -> None:
        self.cells = cells
        self.places = tuple(q.place for q in quotas)
        self.tolerances = tuple(q.tolerance for q in quotas)
        self.emissions = tuple(q.emission for q in quotas)
        self.count = len(quotas)
        self.slow = slow  # slow(k): the answer once quota k had no token at once

    def check(self) -> LocalReply | Delayed | None:
        """None when every quota gave a token at once; else what the slow path says (a
        ``LocalReply`` refusal, a ``Delayed`` wait for a backlog slot, or None)."""
        cells = self.cells
        for k in range(self.count):
            if not cells.take_now(self.places[k], self.tolerances[k], self.emissions[k]):
                return self.slow(k)
        return None
