# Compiled declarations for gate.py (see fsmfast/proxy/upstream.pxd for why a .pxd and not a .pyx):
# every request of a rule with a local rate limit asks ``check``, a C call from ``pipeline.route.choose``
# that makes one C call on the arena's cells a quota.
cimport cython

from fsmfast.shared._atomic cimport Cells as SharedCells


cdef class QuotaGate:
    cdef public SharedCells cells
    cdef public Py_ssize_t count
    cdef public tuple emissions
    cdef public tuple places
    cdef public object slow
    cdef public tuple tolerances

    @cython.locals(k=Py_ssize_t)
    cpdef object check(self)
