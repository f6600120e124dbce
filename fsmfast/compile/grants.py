"""ReferenceGrant checks for references this package resolves beyond HTTPRoute -> Service."""

from __future__ import annotations

from fsmfast.compile.index import Index
from fsmfast.config import model as m


def granted(index: Index, from_kind: str, from_ns: str, to_kind: str, to_ns: str, to_name: str) -> bool:
    """A ReferenceGrant in ``to_ns`` lets ``from_kind`` objects of ``from_ns`` refer to ``to_kind/to_name``.

    ``from_kind`` is a Gateway API kind (Gateway, TLSRoute, TCPRoute); ``to_kind`` a core kind
    (Secret, ConfigMap, Service).
    """
    if from_ns == to_ns:
        return True
    for grant in index.grants.get(to_ns, []):
        allowed_from = any(
            f.group == m.GATEWAY_GROUP and f.kind == from_kind and f.namespace == from_ns for f in grant.spec.from_
        )
        allowed_to = any(
            t.group == "" and t.kind == to_kind and (t.name is None or t.name == to_name) for t in grant.spec.to
        )
        if allowed_from and allowed_to:
            return True
    return False
