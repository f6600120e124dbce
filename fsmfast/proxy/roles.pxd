# Compiled declarations for roles.py: the C shape of the three roles (see the module docstring). The
# classes that play them derive from these, so a call through a role is a C vtable call, not a lookup.
from fsmfast.metrics.counters cimport WorkerStats
from fsmfast.proxy.router cimport Router


cdef class WorkerState:
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
    cdef public WorkerStats stats


cdef class ClientSide:
    cdef public WorkerState ctx
    cdef public object port
    cdef public bytes scheme
    cdef public bytes client_ip
    cdef public list out
    cdef public bint stop_reading
    cdef public double body_at

    cpdef exchange_finished(self, ex)
    cpdef flush(self)
    cpdef pause_reading(self, int reason)
    cpdef resume_reading(self, int reason)
    cpdef abort(self)


cdef class UpstreamUser:
    cdef public double deadline
    cdef public bint is_head
    cdef public object upgrade

    cpdef upstream_ready(self, conn, bint reused)
    cpdef upstream_failed(self, err, pool)
    cpdef upstream_lost(self, conn, exc)
    cpdef upstream_protocol_error(self, str message)
    cpdef response_head(self, int status, long long length, bint chunked, bytes head, Py_ssize_t start,
                        Py_ssize_t end, bint up_keep_alive, Py_ssize_t body_end=*)
    cpdef whole_response(self, conn, int status, bytes data, Py_ssize_t end, long long length,
                         bint up_keep_alive)
    cpdef response_body(self, bytes data)
    cpdef response_complete(self, conn, bint up_keep_alive)
    cpdef upstream_write_paused(self)
    cpdef upstream_write_resumed(self)
    cpdef flush_client(self)
