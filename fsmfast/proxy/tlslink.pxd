# Compiled declarations for tlslink.py (see upstream.pxd for why a .pxd and not a .pyx).
# The record layer stays an untyped object: the compiled one or its twin (fsmfast.proxy.records).

cdef int HANDSHAKE, OPEN, CLOSED
cdef Py_ssize_t TLS_RECORD


cdef class TLSLink:
    cdef public object _incoming
    cdef public object _open
    cdef public object _outgoing
    cdef public object _timeout
    cdef public object _timer
    cdef public object app
    cdef public bint closing
    cdef public object error
    cdef public object loop
    cdef public object raw
    cdef public object ready
    cdef public object records
    cdef public object sslobj
    cdef public int state

    cdef _handshake(self)
    cdef _send_queued(self)
    cdef _handshake_failed(self, exc)
    cdef _cancel_timer(self)
    cdef _wake(self, exc)
    cdef _peer_closed(self)
    cdef _fail(self, exc)
