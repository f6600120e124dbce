# Compiled declarations for upstream.py (Cython "augmenting .pxd"): the .py stays the one source and
# the pure-Python twin; these give its classes C attributes and C-level method calls.
# Whoever an UpstreamConnection serves (a client's Exchange or a MirrorRequest) is typed by its role,
# UpstreamUser (fsmfast.proxy.roles): calls to it are C vtable calls, and this module needs neither
# the exchange nor the worker's Context.

cimport cython

from fsmfast._parser cimport ResponseHead, parse_response_head, read_response_head, scan_response_head
from fsmfast.proxy.roles cimport UpstreamUser, WorkerState
from fsmfast.resilience.health cimport EndpointHealth

cdef Py_ssize_t MAX_RESPONSE_HEAD  # a C constant: read on every response


cdef class BackendState:
    cdef public Py_ssize_t _next
    cdef public object backend
    cdef public object name
    cdef public list pools
    cdef public object tls
    cdef public bint keyed
    cdef public object retry
    cdef public long long retry_requests

    cpdef Pool pick(self)
    cpdef Pool pick_for(self, ex)
    cpdef settle(self, Pool pool, bint failed)
    cpdef ended(self, ex)


cdef class PolicyBackend(BackendState):
    cdef public object breaker
    cdef public object counters
    cdef public EndpointHealth health
    cdef public dict index_of
    cdef public int lb
    cdef public tuple policies
    cdef public Py_ssize_t row
    cdef public object session
    cdef public list slots

    cpdef Pool pick(self)
    cdef bint _usable(self, Py_ssize_t i, long long now_ms, list tried) except -1
    @cython.locals(step=Py_ssize_t, i=Py_ssize_t, start=Py_ssize_t)
    cdef Py_ssize_t _rotate(self, Py_ssize_t n, long long now_ms, list tried) except -2
    @cython.locals(n=Py_ssize_t, start=Py_ssize_t, best=Py_ssize_t, step=Py_ssize_t, i=Py_ssize_t,
                   fewest=cython.longlong, count=cython.longlong)
    cdef Py_ssize_t _choose(self, ex, Py_ssize_t n, long long now_ms, list tried) except -2
    @cython.locals(n=Py_ssize_t, i=Py_ssize_t, now_ms=cython.longlong)
    cpdef Pool pick_for(self, ex)
    @cython.locals(i=Py_ssize_t)
    cdef Py_ssize_t _release(self, Pool pool) except -2
    @cython.locals(i=Py_ssize_t)
    cpdef settle(self, Pool pool, bint failed)
    cpdef ended(self, ex)


cdef class Pool:
    cdef public object _ssl_ctx
    cdef public object _ssl_error
    cdef public str address
    cdef public object backend_name
    cdef public WorkerState ctx
    cdef public str host
    cdef public object port
    cdef public list idle
    cdef public object tls

    cpdef UpstreamConnection take(self)
    cpdef give_back(self, UpstreamConnection conn)
    cpdef discard(self, UpstreamConnection conn)
    cpdef connect(self, UpstreamUser exchange)


cdef class UpstreamConnection:
    cdef public long long _body_left
    cdef public bint _keep_alive
    cdef public bytes _head
    cdef public Py_ssize_t _head_pos
    cdef public bint _in_head
    cdef public bint _informational
    cdef public bint _skip_body
    cdef public object _switched
    cdef public object error
    cdef public UpstreamUser exchange
    cdef public bint got_bytes
    cdef public double idle_since
    cdef public object parser
    cdef public bint paused
    cdef public ResponseHead plain_head
    cdef public Pool pool
    cdef public Py_ssize_t served
    cdef public object transport

    @cython.locals(left=cython.longlong, take=Py_ssize_t)
    cdef _plain_body(self, bytes data, Py_ssize_t pos)
    cpdef write(self, list pieces)
    cpdef pause_reading(self)
    cpdef resume_reading(self)
    cpdef close(self)
    cpdef abort(self)
