# Compiled declarations for link.py (see fsmfast/proxy/upstream.pxd for why a .pxd and not a .pyx).
# ``records`` is untyped: the compiled record layer or its twin (fsmfast.tls.records); ``direct``
# is the same object typed, when it is the compiled one, so the hot paths call it in C.
cimport cython

from fsmfast.tls._records cimport Records

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
    cdef public Records direct
    cdef public object error
    cdef public object failed
    cdef public object loop
    cdef public object raw
    cdef public object ready
    cdef public object records
    cdef public object sslobj
    cdef public int state

    @cython.locals(size=Py_ssize_t)
    cpdef writelines(self, pieces)
    cdef _send(self, data)
    cdef _handshake(self)
    cdef _send_queued(self)
    cdef _handshake_failed(self, exc)
    cdef _tell_failed(self, exc)
    cdef _cancel_timer(self)
    cdef _wake(self, exc)
    cdef _peer_closed(self)
    cdef _fail(self, exc)
