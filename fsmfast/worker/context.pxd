# Compiled declarations for context.py (see fsmfast/proxy/upstream.pxd for why a .pxd and not a .pyx):
# the protocols read the clock, the response window and the live router from here on every request.
from fsmfast.proxy.router cimport Router


cdef class Context:
    cdef public object loop
    cdef public object settings
    cdef public object index
    cdef public object pid
    cdef public object generation
    cdef public Router router
    cdef public dict rule_options
    cdef public frozenset detailed_ports
    cdef public object admission
    cdef public Py_ssize_t crowded
    cdef public dict pools
    cdef public set connections
    cdef public dict ports
    cdef public object tls_contexts
    cdef public set tunnels
    cdef public object access_log
    cdef public bint draining
    cdef public double clock
    cdef public double clock_upper
    cdef public double response_window
    cdef public object _tick_handle
