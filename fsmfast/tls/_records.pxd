# C-level declarations of fsmfast/tls/_records.pyx, so the compiled TLS link calls the record layer in C.

cdef class Records:
    cdef void *ssl
    cdef void *rbio
    cdef void *wbio
    cdef object sslobj  # owns the SSL and both BIOs
    cdef public bint closed
    cdef public bint wants_write

    cpdef bytes unseal(self, data)
    cpdef bytes seal(self, data)
    cpdef bytes outgoing(self)
    cpdef bytes close_notify(self)
    cdef bytes _drain(self)
