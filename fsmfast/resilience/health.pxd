# Compiled declarations for health.py (see fsmfast/proxy/upstream.pxd for why a .pxd and not a .pyx):
# every request to a health-checked backend asks ``usable`` of the endpoint it picks and tells
# ``succeeded``/``failed`` how it went, so these are C calls on the arena's C words.
from fsmfast.shared._atomic cimport Cells as SharedCells


cdef class EndpointHealth:
    cdef public SharedCells _cells
    cdef public bint _never_out
    cdef public tuple bases
    cdef public long long max_fails
    cdef public long long out_ms

    cpdef bint usable(self, Py_ssize_t i, long long now_ms) except -1
    cpdef bint state(self, Py_ssize_t i, long long now_ms) except -1
    cpdef long long failures(self, Py_ssize_t i) except? -1
    cpdef long long probe_failures(self, Py_ssize_t i) except? -1
    cpdef long long out_until(self, Py_ssize_t i) except? -1
    cpdef bint failed(self, Py_ssize_t i, long long now_ms) except -1
    cpdef succeeded(self, Py_ssize_t i)
    cpdef int probed(self, Py_ssize_t i, bint ok, long long now_ms) except? -2
