"""Stages 3-5: which rule a request takes (``find``), then what it gets (``choose``): a redirect,
a policy's answer, or a backend with its request plan (a route policy may choose that backend
itself: a session that names an endpoint of one of the rule's backends).

The same two calls serve the worker (``fsmfast.proxy.downstream``) and ``fsmfast explain``, so
what explain prints is what a request gets. Compiled with the router's C types (route.pxd): the
client side calls these as C functions, as it called its own ``_route`` before, and the plain
path returns the rule's precomputed ``Choice`` without allocating anything.
"""

from __future__ import annotations

from fsmfast.codec import normalize_host
from fsmfast.pipeline import hooks
from fsmfast.pipeline.decision import Delayed, LocalReply, Redirect
from fsmfast.proxy.router import Choice, HostTable, RouteRule


def find(
    table: HostTable | None, host: bytes, path: bytes, method: bytes, headers: list[tuple[bytes, bytes]], target: bytes
) -> RouteRule | LocalReply:
    """The rule ``path`` takes on the port's ``table`` for ``host``, or the 404 saying why none.

    ``path`` is the normalized path (stage 2), ``target`` the normalized target (its query)."""
    vhost = table.find(normalize_host(host)) if table is not None else None
    if vhost is None:
        return LocalReply(404, f"no route for host {host.decode('latin-1')!r}", "no_route")
    rule = vhost.match(path, method, headers, target)
    if rule is None:
        return LocalReply(404, f"no route for {path.decode('latin-1')!r} on host {vhost.hostname}", "no_route")
    return rule


def choose(
    rule: RouteRule,
    scheme: bytes,
    host: bytes,
    port: int,
    method: bytes,
    headers: list[tuple[bytes, bytes]],
    target: bytes,
    path: bytes,
    client: bytes,
) -> Choice | LocalReply | Redirect | Delayed:
    """What ``rule`` does with the request: redirect it, let a policy answer, or forward it (after a
    route policy's delay: ``Delayed`` holding the rest)."""
    if rule.redirect is not None:
        location = rule.redirect.location(scheme, normalize_host(host), port, target)
        return Redirect(rule.redirect.status, location, rule)
    view = None
    choice = None
    delayed = None
    waiting = None
    if rule.gate is not None:
        # The rule's local rate limits, before any view of the request is made (fsmfast.edge.gate):
        # None when each gave a token at once, else a refusal or a wait in the backlog.
        gate = rule.gate
        gated = gate.check()
        if isinstance(gated, LocalReply):
            return gated
        waiting = gated
    answer: Choice | LocalReply | Redirect | Delayed | None = waiting
    if rule.policies:
        view = hooks.PolicyRequest(method, host, path, target, headers, client, rule)
        answer = hooks.run(rule.policies, view, waiting)
    if answer is not None:
        if isinstance(answer, Choice):
            choice = answer  # forward here: a session names this backend (it beats the weights)
        elif type(answer) is Delayed and (answer.then is None or isinstance(answer.then, Choice)):
            delayed = answer  # a wait (a backlog, a fault's delay), then what the rule (or a session) says
            choice = answer.then
        else:
            return answer
    if choice is None:
        choice = rule.pick()
    if choice is None or choice.backend is None:
        # The rule's name holds its namespace and route (the access log's "route" has it).
        why = " has no backend" if choice is None else f": {choice.error}"
        reply = LocalReply(500, "no usable backend for this route", "invalid_backend", f"route {rule.name}{why}", rule)
        return _after(delayed, reply)
    if choice.policies:
        if view is None:
            view = hooks.PolicyRequest(method, host, path, target, headers, client, rule)
        view.backend = choice.backend
        answer = hooks.run(choice.policies, view)
        if answer is not None:
            return _after(delayed, answer)  # type: ignore[arg-type]  # a backend policy's answer: not a delay
    if delayed is not None:
        delayed.then = choice
        return delayed
    return choice


def _after(
    delayed: Delayed | None, decision: Choice | LocalReply | Redirect
) -> Choice | LocalReply | Redirect | Delayed:
    """``decision``, after the delay a route policy asked for, if any."""
    if delayed is None:
        return decision
    delayed.then = decision
    return delayed
