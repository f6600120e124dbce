# Compiled declarations for counters.py (see fsmfast/proxy/upstream.pxd for why a .pxd and not a .pyx).
# The proxy core cimports WorkerStats (fsmfast.proxy.roles types WorkerState.stats with it), so a
# count is a C call on C fields. ``time`` is Cython's cpython.time here: time.monotonic() in the .py
# compiles to a C read of the clock the time module reads, not a Python call.
cimport cython
from cpython cimport time

cdef Py_ssize_t LOWEST, CODES
cdef frozenset _UPSTREAM

cpdef Py_ssize_t bucket(double seconds) noexcept


@cython.final
cdef class Series:
    cdef public tuple labels
    cdef public long long[::1] codes
    cdef public list seen
    cdef public dict other
    cdef public long long[::1] buckets
    cdef public double seconds

    @cython.locals(index=Py_ssize_t)
    cpdef add(self, int status, double seconds)
    @cython.locals(i=Py_ssize_t, n=cython.longlong, seen=list, buckets=list)
    cpdef counts(self)


@cython.final
cdef class PortCounts:
    cdef public long long open
    cdef public long long total


@cython.final
cdef class WorkerStats:
    cdef public dict series
    cdef public dict by_labels
    cdef public object _port
    cdef public object _rule
    cdef public object _backend
    cdef public Series _last
    cdef public dict ports
    cdef public dict upstream_errors
    cdef public dict tls_errors
    cdef public dict events
    cdef public long long changes

    @cython.locals(series=Series)
    cpdef request(self, object port, object rule, object backend, int status, double started)
    @cython.locals(series=Series)
    cpdef Series _find(self, object port, object rule, object backend)
    cpdef ended(self, str backend, str reason)
    @cython.locals(counts=PortCounts)
    cpdef opened(self, object port)
    @cython.locals(counts=PortCounts)
    cpdef closed(self, object port)
    cpdef tls_failed(self, object port, str reason)
    cpdef event(self, str what, str backend, str label)
    cpdef forget(self)
    cpdef counts(self)
