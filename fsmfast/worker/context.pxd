# Compiled declarations for context.py (see fsmfast/proxy/upstream.pxd for why a .pxd and not a .pyx):
# its fields are WorkerState's (fsmfast.proxy.roles), the role the protocols read the clock, the
# response window and the live router through on every request, without importing this module.
# ``publisher`` is its own: the tick's heartbeat and metrics publishing (fsmfast.metrics.publish);
# ``arena`` and ``prober`` too: the machine-wide state of the resilience policies (fsmfast.shared) and
# the active health checks this worker runs for the machine (fsmfast.resilience.prober).
from fsmfast.proxy.roles cimport WorkerState


cdef class Context(WorkerState):
    cdef public object publisher
    cdef public object arena
    cdef public object prober
    cdef public list budgeted
    cdef public object fleet
