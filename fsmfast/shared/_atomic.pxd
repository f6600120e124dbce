# C-level declarations of fsmfast/shared/_atomic.pyx, so compiled callers update shared words in C.

from libc.stdint cimport int64_t

cdef class Words:
    cdef object _view  # the buffer export that keeps the mapping open
    cdef int64_t *base
    cdef readonly Py_ssize_t count

    cdef int64_t *word(self, Py_ssize_t i) except NULL
    cpdef long long load(self, Py_ssize_t i) except? -1
    cpdef void store(self, Py_ssize_t i, long long value) except *
    cpdef long long add(self, Py_ssize_t i, long long delta) except? -1
    cpdef bint cas(self, Py_ssize_t i, long long expected, long long desired) except -1
    cpdef long long sum(self, Py_ssize_t start, Py_ssize_t stride, Py_ssize_t n) except? -1
    cpdef void zero(self, Py_ssize_t start, Py_ssize_t n) except *

cdef class Counters:
    cdef readonly Words words
    cdef readonly Py_ssize_t base, workers, slots, stride

    cdef Py_ssize_t cell(self, Py_ssize_t worker, Py_ssize_t slot) except -1
    cpdef long long add(self, Py_ssize_t worker, Py_ssize_t slot, long long delta) except? -1
    cpdef long long get(self, Py_ssize_t worker, Py_ssize_t slot) except? -1
    cpdef long long total(self, Py_ssize_t slot) except? -1
    cpdef void clear_row(self, Py_ssize_t worker) except *
    cpdef void clear_slot(self, Py_ssize_t slot) except *

cdef class Cells:
    cdef readonly Words words
    cdef readonly Py_ssize_t base, count

    cdef int64_t *cell(self, Py_ssize_t i) except NULL
    cpdef long long load(self, Py_ssize_t i) except? -1
    cpdef void store(self, Py_ssize_t i, long long value) except *
    cpdef long long add(self, Py_ssize_t i, long long delta) except? -1
    cpdef bint cas(self, Py_ssize_t i, long long expected, long long desired) except -1
    cpdef bint take_now(self, Py_ssize_t i, long long tolerance, long long emission) except -1
