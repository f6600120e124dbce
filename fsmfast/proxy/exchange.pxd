# Compiled declarations for exchange.py (see upstream.pxd for why a .pxd and not a .pyx).
cimport cython
# time.monotonic() in exchange.py compiles to a C read of the clock (Cython's cpython.time).
from cpython cimport time

from fsmfast._parser cimport (
    ResponseHead, build_request_head, build_response_head, chunk, parse_response_head, relay_response_head,
)
from fsmfast.proxy.roles cimport ClientSide, UpstreamUser
from fsmfast.proxy.upstream cimport BackendState, Pool, UpstreamConnection
from fsmfast.metrics.counters cimport WorkerStats

# The states and framings, imported from fsmfast.proxy.states and .headers as Python ints, held as C
# ints here: comparing a C field with them then costs no boxing and no global lookup.
cdef int QUEUED, CONNECTING, SENDING, RESPONDING, DONE, WAITING
cdef long long FRAME_CHUNKED, FRAME_CLOSE, FRAME_NONE
# Whether transitions are checked against the table (fsmfast.proxy.states): a C flag, so an
# unchecked build pays one C `if` per transition.
cdef bint CHECK_STATES
# The request ids this worker makes (see exchange.py): C globals, so that numbering a request is a C
# increment; seed_request_ids sets them.
cdef str RID_TEXT
cdef bytes RID_PREFIX
cdef unsigned long long RID_SEQ


# deadline, is_head and upgrade are UpstreamUser's: the upstream connection reads them in C.
cdef class Exchange(UpstreamUser):
    cdef public BackendState backend
    cdef public long long body_bytes
    cdef public long long body_room
    cdef public ClientSide client
    cdef public bint close_delimited
    cdef public UpstreamConnection conn
    cdef public bint expect_continue
    cdef public list headers
    cdef public bytes host
    cdef public bint http11
    cdef public bint keep_alive
    cdef public object local
    cdef public bytes method
    cdef public object mirrors
    cdef public list pending
    cdef public Py_ssize_t pending_size
    cdef public object plan
    cdef public Pool pool
    cdef public object reason
    cdef public long long req_framing
    cdef public bint request_done
    cdef public object request_id
    cdef public long long resp_framing
    cdef public bint retried
    cdef public object retry
    cdef public object attempts
    cdef public bint reused
    cdef public unsigned long long rid
    cdef public object rule
    cdef public double started
    cdef public int state
    cdef public int status
    cdef public bytes target
    cdef public object timer
    cdef public list up_out
    cdef public bint up_paused

    @staticmethod
    @cython.locals(self=Exchange)
    cdef Exchange start(ClientSide client, bytes method, bytes target, bint http11, list headers, bytes host,
                        long long req_framing, bint keep_alive, bint expect_continue, object request_id)
    cpdef set_local(self, int status, str text, str code, bytes location=*, tuple headers=*)
    cpdef answer(self, decision)
    @cython.locals(pool=Pool)
    cpdef activate(self)
    cpdef request_body(self, bytes data)
    cpdef request_complete(self)
    cpdef _send_up(self, list pieces, Py_ssize_t size)
    cdef _keep(self, list pieces, Py_ssize_t size, int state)
    cdef _keep_for_retry(self, retry)
    cpdef _no_endpoint(self)
    cdef _hold(self)
    cpdef _settled(self, future)
    cdef bint _may_retry(self, bint not_sent) except -1
    cdef _backoff(self, Pool pool, str why)
    cpdef flush_up(self)
    cpdef flush_client(self)
    cpdef touch(self)
    cpdef client_lost(self)
    # The role's signatures (roles.pxd) take the connection and pool untyped; typed locals get them back.
    @cython.locals(conn=UpstreamConnection)
    cpdef upstream_ready(self, connection, bint reused)
    cpdef upstream_failed(self, err, pool)
    @cython.locals(conn=UpstreamConnection)
    cpdef upstream_lost(self, connection, exc)
    cpdef upstream_protocol_error(self, str message)
    cpdef upstream_write_paused(self)
    cpdef upstream_write_resumed(self)
    # plain typed: relay_response_head takes a ResponseHead, and an untyped local costs a type test per response.
    @cython.locals(plain=ResponseHead)
    cpdef response_head(self, int status, long long length, bint chunked, bytes head, Py_ssize_t start,
                        Py_ssize_t end, bint up_keep_alive, Py_ssize_t body_end=*)
    cpdef whole_response(self, conn, int status, bytes data, Py_ssize_t end, long long length,
                         bint up_keep_alive)
    cpdef response_body(self, bytes data)
    @cython.locals(conn=UpstreamConnection, pool=Pool)
    cpdef response_complete(self, connection, bint up_keep_alive)
    cpdef reply(self, int status, str text, str code, bytes location=*, tuple headers=*)
    cpdef bint detailed_errors(self) except -1
    cdef bint _client_stalled(self) except -1
    cpdef _finish(self)
    @cython.locals(client=ClientSide, stats=WorkerStats)
    cpdef _record(self)
