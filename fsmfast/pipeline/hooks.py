"""Stage 4: policy hooks, an ordered list per route (``RouteRule.policies``) and per backend
(``BackendState.policies``, copied into each ``Choice`` that names the backend).

A policy is any callable taking the ``PolicyRequest`` view and returning None to let the
request go on, or a decision that answers it (``LocalReply``, ``Redirect``) or, for a route
policy, chooses its backend (a ``Choice`` of the rule: a session persistence hook); the first
answer wins and the later policies are not asked. Route policies run after the rule matched and before
a backend is chosen; backend policies after the choice. The lists are empty tuples until a
feature fills them when it builds the router, and an empty list costs the request one C truth
test: no view is made.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from fsmfast.pipeline.decision import Choice, Delayed, LocalReply, Redirect


class PolicyRequest:
    """What a policy sees of one request: normalized, routed, not yet forwarded."""

    __slots__ = ("backend", "client", "headers", "host", "method", "path", "rule", "target")

    def __init__(
        self,
        method: bytes,
        host: bytes,
        path: bytes,
        target: bytes,
        headers: list[tuple[bytes, bytes]],
        client: bytes,
        rule: Any,
    ) -> None:
        self.method = method
        self.host = host
        self.path = path  # as routed: normalized, without the query
        self.target = target  # as forwarded unless a filter rewrites it
        self.headers = headers
        self.client = client  # the client's address (b"-" when unknown)
        self.rule = rule  # the RouteRule that matched
        self.backend: Any = None  # set before the backend's own policies run


class Policy(Protocol):
    def __call__(self, request: PolicyRequest) -> Choice | LocalReply | Redirect | Delayed | None: ...


def run(
    policies: Sequence[Policy], request: PolicyRequest, delayed: Delayed | None = None
) -> Choice | LocalReply | Redirect | Delayed | None:
    """The first answer of ``policies`` in order, or None when every one lets the request go on.

    A wait (``Delayed`` with nothing after it: a rate limit's backlog or its fleet's decision, a
    fault's delay) is not an answer: the later policies are still asked, and what they answer comes
    after the wait (the longest of the waits; at most one policy waits on a future). ``delayed``: a
    wait already asked for before these policies (the rule's rate-limit gate, ``fsmfast.edge.gate``)."""
    for policy in policies:
        decision = policy(request)
        if decision is None:
            continue
        if type(decision) is Delayed and decision.then is None:
            if delayed is None:
                delayed = decision  # made for this request: it may be changed
            else:
                delayed.seconds = max(delayed.seconds, decision.seconds)
                if decision.future is not None:
                    delayed.future, delayed.resolve = decision.future, decision.resolve
            continue
        if delayed is not None:
            delayed.then = decision
            return delayed
        return decision  # a policy may hand out one reply object for every request: not changed here
    return delayed
