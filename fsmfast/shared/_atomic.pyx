# cython: boundscheck=False, wraparound=False
"""Atomic int64 words over a shared buffer (the machine-wide arena, fsmfast/shared/arena.py).

Compiled with GCC's ``__atomic_*`` builtins: every operation is one lock-free instruction on the
mapped word, so it is exact between processes and a process killed at any point leaves no lock
behind. The pure-Python twin with the same API is fsmfast/shared/atomic.py; keep them in step.
"""

from libc.stdint cimport int64_t, uint64_t
from posix.time cimport CLOCK_MONOTONIC, clock_gettime, timespec

cdef extern from *:
    """
    #include <stdint.h>
    /* A word shared between processes must never go through libatomic's lock table, which is
       private to each process: refuse to build where int64 atomics are not lock-free. */
    _Static_assert(__atomic_always_lock_free(sizeof(int64_t), 0), "int64 atomics are not lock-free here");
    static inline int64_t fsm_load(int64_t *p) { return __atomic_load_n(p, __ATOMIC_SEQ_CST); }
    static inline void fsm_store(int64_t *p, int64_t v) { __atomic_store_n(p, v, __ATOMIC_SEQ_CST); }
    /* GCC defines signed atomic arithmetic as two's complement: an overflow wraps, as in the twin. */
    static inline int64_t fsm_add(int64_t *p, int64_t d) { return __atomic_add_fetch(p, d, __ATOMIC_SEQ_CST); }
    static inline int fsm_cas(int64_t *p, int64_t expected, int64_t desired) {
        return __atomic_compare_exchange_n(p, &expected, desired, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
    }
    """
    int64_t fsm_load(int64_t *p) nogil
    void fsm_store(int64_t *p, int64_t v) nogil
    int64_t fsm_add(int64_t *p, int64_t d) nogil
    bint fsm_cas(int64_t *p, int64_t expected, int64_t desired) nogil


cdef class Words:
    """The buffer as int64 words, indexed from 0; holds the buffer (an mmap cannot close under it)
    until ``release()``."""

    def __cinit__(self, buffer):
        cdef unsigned char[::1] view = buffer
        if view.shape[0] < 8 or view.shape[0] % 8 or (<size_t>&view[0]) % 8:
            raise ValueError("shared words need a non-empty buffer, 8-byte aligned, a multiple of 8 bytes long")
        self._view = view
        self.base = <int64_t *>&view[0]
        self.count = view.shape[0] // 8

    def __len__(self):
        return self.count

    cdef inline int64_t *word(self, Py_ssize_t i) except NULL:
        if <size_t>i >= <size_t>self.count:
            raise IndexError(f"shared word {i} is outside 0..{self.count - 1}" if self.count else "released")
        return self.base + i

    cpdef long long load(self, Py_ssize_t i) except? -1:
        return fsm_load(self.word(i))

    cpdef void store(self, Py_ssize_t i, long long value) except *:
        fsm_store(self.word(i), value)

    cpdef long long add(self, Py_ssize_t i, long long delta) except? -1:
        return fsm_add(self.word(i), delta)

    cpdef bint cas(self, Py_ssize_t i, long long expected, long long desired) except -1:
        return fsm_cas(self.word(i), expected, desired)

    cpdef long long sum(self, Py_ssize_t start, Py_ssize_t stride, Py_ssize_t n) except? -1:
        # Unsigned, so an overflowing sum wraps (as the twin's) instead of being undefined.
        cdef uint64_t total = 0
        cdef Py_ssize_t k
        for k in range(n):
            total += <uint64_t>fsm_load(self.word(start + k * stride))
        return <long long>total

    cpdef void zero(self, Py_ssize_t start, Py_ssize_t n) except *:
        cdef Py_ssize_t k
        for k in range(n):
            fsm_store(self.word(start + k), 0)

    def release(self):
        self._view = None
        self.base = NULL
        self.count = 0


cdef class Counters:
    """Per-worker counter rows: ``rows[worker][slot]``, one writer per cell (the worker owning the
    row); readers sum a slot over the rows. Row ``worker`` starts at word ``base + worker * stride``."""

    def __cinit__(self, Words words, Py_ssize_t base, Py_ssize_t workers, Py_ssize_t slots, Py_ssize_t stride):
        if workers < 1 or slots < 1 or stride < slots or base < 0 or base + workers * stride > words.count:
            raise ValueError("counter rows do not fit the shared words")
        self.words = words
        self.base = base
        self.workers = workers
        self.slots = slots
        self.stride = stride

    cdef inline Py_ssize_t cell(self, Py_ssize_t worker, Py_ssize_t slot) except -1:
        if <size_t>worker >= <size_t>self.workers:
            raise IndexError(f"worker {worker} is outside 0..{self.workers - 1}")
        if <size_t>slot >= <size_t>self.slots:
            raise IndexError(f"slot {slot} is outside 0..{self.slots - 1}")
        return self.base + worker * self.stride + slot

    cpdef long long add(self, Py_ssize_t worker, Py_ssize_t slot, long long delta) except? -1:
        return fsm_add(self.words.word(self.cell(worker, slot)), delta)

    cpdef long long get(self, Py_ssize_t worker, Py_ssize_t slot) except? -1:
        return fsm_load(self.words.word(self.cell(worker, slot)))

    cpdef long long total(self, Py_ssize_t slot) except? -1:
        return self.words.sum(self.cell(0, slot), self.stride, self.workers)

    def totals(self):
        return [self.words.sum(self.base + slot, self.stride, self.workers) for slot in range(self.slots)]

    cpdef void clear_row(self, Py_ssize_t worker) except *:
        self.words.zero(self.cell(worker, 0), self.slots)

    cpdef void clear_slot(self, Py_ssize_t slot) except *:
        cdef Py_ssize_t worker
        for worker in range(self.workers):
            fsm_store(self.words.word(self.cell(worker, slot)), 0)


cdef class Cells:
    """Single int64 cells shared by every process, for state one compare-and-swap updates whole."""

    def __cinit__(self, Words words, Py_ssize_t base, Py_ssize_t count):
        if count < 0 or base < 0 or base + count > words.count:
            raise ValueError("cells do not fit the shared words")
        self.words = words
        self.base = base
        self.count = count

    def __len__(self):
        return self.count

    cdef inline int64_t *cell(self, Py_ssize_t i) except NULL:
        if <size_t>i >= <size_t>self.count:
            raise IndexError(f"cell {i} is outside 0..{self.count - 1}")
        return self.words.word(self.base + i)

    cpdef long long load(self, Py_ssize_t i) except? -1:
        return fsm_load(self.cell(i))

    cpdef void store(self, Py_ssize_t i, long long value) except *:
        fsm_store(self.cell(i), value)

    cpdef long long add(self, Py_ssize_t i, long long delta) except? -1:
        return fsm_add(self.cell(i), delta)

    cpdef bint cas(self, Py_ssize_t i, long long expected, long long desired) except -1:
        return fsm_cas(self.cell(i), expected, desired)

    cpdef bint take_now(self, Py_ssize_t i, long long tolerance, long long emission) except -1:
        # GCRA's "a token at once?" on the theoretical arrival time in cell ``i`` (ns of CLOCK_MONOTONIC,
        # read here: the clock every process shares, as time.monotonic_ns()). The rate limit's fast path
        # (fsmfast.edge.gate), one C call a request; False changes nothing.
        cdef int64_t *w = self.cell(i)
        cdef timespec ts
        clock_gettime(CLOCK_MONOTONIC, &ts)
        cdef int64_t now = <int64_t>ts.tv_sec * 1000000000 + ts.tv_nsec
        cdef int64_t old, tat
        while True:
            old = fsm_load(w)
            tat = old if old > now else now
            if tat - now > tolerance:
                return False
            if fsm_cas(w, old, tat + emission):
                return True
