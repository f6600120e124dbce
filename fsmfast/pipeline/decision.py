"""What a pipeline stage decides, as plain values.

Forwarding is the rule's own ``fsmfast.proxy.router.Choice`` (backend and request plan, made
once per snapshot). The two answers the gateway gives itself are made here, only when a request
gets one.
"""

from __future__ import annotations

from typing import Any

from fsmfast.proxy.router import Choice

__all__ = ["Choice", "Decision", "Delayed", "LocalReply", "Redirect"]


class LocalReply:
    """An answer without an upstream: status, the body's text, the access log's reason code.

    ``detail`` replaces ``text`` where detailed errors are on (it may name namespaces and
    Services); ``rule`` is the rule that matched, if any (the access log's route); ``headers``
    go on the answer ((name, value) bytes: a rate limit's ``RateLimit-*`` and ``Retry-After``).
    """

    __slots__ = ("code", "detail", "headers", "rule", "status", "text")

    def __init__(
        self,
        status: int,
        text: str,
        code: str,
        detail: str | None = None,
        rule: Any = None,
        headers: tuple[tuple[bytes, bytes], ...] = (),
    ) -> None:
        self.status = status
        self.text = text
        self.code = code
        self.detail = detail
        self.rule = rule
        self.headers = headers

    def __repr__(self) -> str:
        return f"LocalReply({self.status}, {self.text!r}, {self.code!r})"


class Redirect:
    """A RequestRedirect filter's answer: status and Location."""

    __slots__ = ("location", "rule", "status")

    def __init__(self, status: int, location: bytes, rule: Any = None) -> None:
        self.status = status
        self.location = location
        self.rule = rule

    @property
    def text(self) -> str:
        return f"redirect to {self.location.decode('latin-1')}"

    def __repr__(self) -> str:
        return f"Redirect({self.status}, {self.location!r})"


class Delayed:
    """Wait ``seconds``, then do ``then``: a LocalReply (a fault's abort), or the Choice the rule made
    (the request is then forwarded). A route policy (fault injection, a rate limit's backlog) returns
    it with ``then`` None when the request goes on; ``choose`` puts the rule's own decision there.

    With ``future`` (a fleet-wide rate limit asking Redis), the request waits for it instead, then
    ``resolve(future)`` says what now: a ``LocalReply`` (a refusal), more seconds to wait, or None
    (go on, after ``seconds`` if any)."""

    __slots__ = ("future", "resolve", "seconds", "then")

    def __init__(self, seconds: float, then: Any, future: Any = None, resolve: Any = None) -> None:
        self.seconds = seconds
        self.then = then
        self.future = future
        self.resolve = resolve

    def __repr__(self) -> str:
        return f"Delayed({self.seconds:g}s, {self.then!r})"


Decision = Choice | LocalReply | Redirect | Delayed
