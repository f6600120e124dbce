# Compiled declarations for downstream.py (see upstream.pxd for why a .pxd and not a .pyx).
cimport cython

from fsmfast._parser cimport (
    normalize_target,
    read_request_head,
    scan_request,
    scan_request_line,
)
from fsmfast.pipeline.route cimport choose, find
from fsmfast.proxy.exchange cimport Exchange
from fsmfast.proxy.router cimport Choice, RouteRule
from fsmfast.proxy.roles cimport ClientSide

# States and framings as C ints (see exchange.pxd).
cdef int QUEUED, RESPONDING, DONE
cdef long long FRAME_CHUNKED, FRAME_NONE


# ctx, port, scheme, client_ip, out, stop_reading and body_at are ClientSide's (fsmfast.proxy.roles).
cdef class ClientConnection(ClientSide):
    cdef public object transport
    cdef public object parser
    cdef public object queue
    cdef public bint closing
    cdef public bint lingering
    cdef public bint _eof
    cdef public object held
    cdef public int _paused
    cdef public Py_ssize_t unsent
    cdef public Py_ssize_t max_request_line
    cdef public Py_ssize_t max_field_size
    cdef public Py_ssize_t max_header_count
    cdef public Py_ssize_t max_header_bytes
    cdef public bint in_head
    cdef public Py_ssize_t _head_room
    cdef public bint _line_seen
    cdef public bytes _url
    cdef public str _version
    cdef public list _line_part
    cdef public list _headers
    cdef public Exchange _parsing
    cdef public long long _body_left
    cdef public bint _after_close
    cdef public bint over_tls
    cdef public bint admit_every
    cdef public bytes _admitted
    cdef public double idle_since
    cdef public double head_started

    cpdef _start_head(self)
    @cython.locals(n=Py_ssize_t, end=Py_ssize_t, framing=cython.longlong)
    cdef Py_ssize_t _read_plain(self, bytes data, Py_ssize_t pos) except -1
    @cython.locals(left=cython.longlong, take=Py_ssize_t)
    cdef Py_ssize_t _plain_body(self, bytes data, Py_ssize_t pos) except -1
    cdef bint _feed(self, bytes data) except -1
    cdef Py_ssize_t _check_line(self, bytes data) except -2
    cpdef _request(self, bytes method, bytes target, bint http11, list headers, bint keep_alive, object parser)
    cpdef _message_done(self)
    @cython.locals(found=object, rule=RouteRule, decision=object, choice=Choice)
    cpdef _route(self, Exchange ex, bytes host, bytes path)
    cdef _delayed(self, Exchange ex, RouteRule rule, object delayed)
    @cython.locals(ex=Exchange)
    cpdef exchange_finished(self, finished)
    cpdef stop_after_queue(self)
    @cython.locals(active=Exchange)
    cdef _flush_both(self)
    cpdef flush(self)
    cpdef pause_reading(self, int reason)
    cpdef resume_reading(self, int reason)
    cpdef close(self)
    cpdef abort(self)


# Forwarding as a choice says: from _route, and after a route policy's delay.
@cython.locals(plan=object)
cdef _forward(ClientConnection conn, Exchange ex, RouteRule rule, Choice choice)
