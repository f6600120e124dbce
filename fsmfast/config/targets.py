"""The Service a policy targets: one rule for every policy kind that names one (FSM's UpstreamTLSPolicy
and its five service-level policies by ``spec.targetRef``, Gateway API's BackendTLSPolicy and
BackendLBPolicy by ``spec.targetRefs``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fsmfast.config.checks import Checker


_NOT_A_SERVICE = 'must reference a Service (group "", kind Service), got '


def gk(group: str, kind: str) -> str:
    """How a group and kind are written in a message: ``Service``, ``flomesh.io/ServiceImport``."""
    return f"{group}/{kind}" if group else kind


def check_target_ref(c: Checker, target: Any) -> None:
    """``spec.targetRef`` of an FSM policy: a Service; a ServiceImport is warned about and ignored."""
    if (target.group, target.kind) == ("flomesh.io", "ServiceImport"):
        c.warn("spec.targetRef", "ServiceImport targets are not supported; policy ignored")
    elif (target.group, target.kind) != ("", "Service"):
        c.error("spec.targetRef", _NOT_A_SERVICE + gk(target.group, target.kind))


def check_target_refs(c: Checker, refs: Any) -> None:
    """``spec.targetRefs`` of a Gateway API policy: at least one, each a Service."""
    if not refs:
        c.error("spec.targetRefs", "at least one target is required")
    for i, ref in enumerate(refs):
        if (ref.group, ref.kind) != ("", "Service"):
            c.error(f"spec.targetRefs[{i}]", _NOT_A_SERVICE + gk(ref.group, ref.kind))


def port_once(c: Checker, seen: dict[int, int], i: int, port: int) -> None:
    """``spec.ports[i]`` is for ``port``: an error when an earlier entry (in ``seen``) was for it too.
    A policy takes each port in one entry only."""
    if port in seen:
        c.error(f"spec.ports[{i}].port", f"duplicate port {port} (also spec.ports[{seen[port]}])")
    seen.setdefault(port, i)
