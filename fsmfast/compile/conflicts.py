"""FSM's conflict rule for policies, shared by the resilience policies (issue 19) and the edge
policies (issue 20): for one target and one kind, the oldest policy wins; a later one whose computed
setting differs is reported as Conflicted on its entry and ignored there; one with the same setting
changes nothing and is not reported."""

from __future__ import annotations

from typing import Any

import msgspec

from fsmfast.config import model as m
from fsmfast.config.issues import Issues, Where


class Candidate(msgspec.Struct, frozen=True):
    """One policy entry competing for a target, oldest first in a list of them."""

    policy: m.Object
    field: str  # where in the policy the entry (or target) is
    value: Any  # a snapshot struct with ``policy`` naming its source


def same(a: Any, b: Any) -> bool:
    """Equal computed settings, whichever policy they came from."""
    return bool(msgspec.structs.replace(a, policy="") == msgspec.structs.replace(b, policy=""))


def oldest(issues: Issues, candidates: list[Candidate], what: str) -> Candidate:
    """The oldest of ``candidates`` (already in age order); the others that differ are reported."""
    first = candidates[0]
    for loser in candidates[1:]:
        if loser.policy is first.policy or same(loser.value, first.value):
            continue
        issues.warn(
            Where.of(loser.policy),
            loser.field,
            f"Conflicted: conflicts with {first.policy.kind} {first.policy.key} (older) on {what}; ignored there",
        )
    return first
