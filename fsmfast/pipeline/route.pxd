# Compiled declarations for route.py (see fsmfast/proxy/upstream.pxd for why a .pxd and not a .pyx).
cimport cython

from fsmfast._parser cimport normalize_host
from fsmfast.edge.gate cimport QuotaGate
from fsmfast.proxy.router cimport Choice, HostTable, RouteRule, VHost


@cython.locals(vhost=VHost, rule=RouteRule)
cpdef object find(HostTable table, bytes host, bytes path, bytes method, list headers, bytes target)

@cython.locals(choice=Choice, gate=QuotaGate)
cpdef object choose(
    RouteRule rule, bytes scheme, bytes host, object port, bytes method, list headers, bytes target, bytes path,
    bytes client,
)
