"""Service port -> ready endpoints, the way kube-proxy resolves it.

The Service port's ``name`` ("" when unnamed) selects the port of each EndpointSlice (or
Endpoints subset); that port's number is where traffic goes, so a named ``targetPort`` works
without knowing the pods. Only when the endpoints object lists no ports at all is a numeric
``targetPort`` (default: the Service port) used directly.
"""

from __future__ import annotations

import msgspec

from fsmfast.compile.index import Index
from fsmfast.config import model as m
from fsmfast.snapshot import Endpoint


class Resolved(msgspec.Struct, frozen=True):
    endpoints: tuple[Endpoint, ...]
    # Why there are none, when that is not simply "none ready"; None otherwise.
    problem: str | None = None


def _numeric_target(port: m.ServicePort) -> int | None:
    target = port.target_port
    if target is None:
        return port.port
    return target if isinstance(target, int) else None


def _port_for(ports: list[tuple[str | None, int | None]], sp: m.ServicePort) -> tuple[bool, int | None]:
    """(listed, number): whether the object lists ports, and the matching number if any."""
    if not ports:
        return False, _numeric_target(sp)
    for name, number in ports:
        if (name or "") == sp.name and number is not None:
            return True, number
    return True, None


def resolve(index: Index, svc: m.Service, sp: m.ServicePort) -> Resolved:
    slices = index.slices.get(svc.key)
    found: list[Endpoint] = []
    unmatched = False
    named_unresolved = False
    if slices:
        for eps in slices:
            listed, number = _port_for([(p.name, p.port) for p in eps.ports], sp)
            if number is None:
                unmatched |= listed
                named_unresolved |= not listed
                continue
            for endpoint in eps.endpoints:
                # ready absent means ready (EndpointConditions); only the first address counts.
                if endpoint.conditions.ready is not False and endpoint.addresses:
                    found.append(Endpoint(host=endpoint.addresses[0], port=number))
        source = "EndpointSlice"
    elif svc.key in index.endpoints:
        for subset in index.endpoints[svc.key].subsets:
            listed, number = _port_for([(p.name, p.port) for p in subset.ports], sp)
            if number is None:
                unmatched |= listed
                named_unresolved |= not listed
                continue
            found.extend(Endpoint(host=a.ip, port=number) for a in subset.addresses)
        source = "Endpoints"
    else:
        return Resolved((), f"no EndpointSlice or Endpoints for service {svc.key}")
    unique = tuple(sorted(set(found), key=lambda e: (e.host, e.port)))
    if unique:
        return Resolved(unique)
    if unmatched:
        return Resolved((), f'no {source} port named "{sp.name}" for service {svc.key}')
    if named_unresolved:
        return Resolved((), f'named targetPort "{sp.target_port}" needs ports in the {source}')
    return Resolved(())
