# Compiled declarations for router.py (see upstream.pxd for why a .pxd and not a .pyx).
cimport cython


cdef class Choice:
    cdef public object backend
    cdef public object error
    cdef public object name
    cdef public object plan
    cdef public tuple policies
    cdef public object weight


cdef class RouteRule:
    cdef public list _current
    cdef public object _total
    cdef public bytes below
    cdef public list choices
    cdef public object conditions
    cdef public bytes exact
    cdef public object gate
    cdef public object name
    cdef public tuple policies
    cdef public bytes prefix
    cdef public object redirect
    cdef public object regex
    cdef public object source
    cdef public object timeouts

    cpdef Choice pick(self)


cdef class VHost:
    cdef public list anywhere
    cdef public bint conditioned
    cdef public dict exacts
    cdef public object hostname
    cdef public tuple lengths
    cdef public object listeners
    cdef public list prefixes
    cdef public list regexes
    cdef public list rules
    cdef public list targets

    @cython.locals(
        rules=list, exacts=dict, positions=list, rule=RouteRule, lengths=tuple, keys=list,
        best=Py_ssize_t, n=Py_ssize_t, i=Py_ssize_t, length=Py_ssize_t, pos=Py_ssize_t,
        lo=Py_ssize_t, hi=Py_ssize_t, mid=Py_ssize_t,
    )
    cpdef RouteRule match(self, bytes path, bytes method=*, list headers=*, bytes target=*)

    @cython.locals(rules=list, pos=Py_ssize_t, rule=RouteRule)
    cdef Py_ssize_t _earliest(self, list positions, Py_ssize_t best, object req)

    # Typed loop variable: the rule's fields are read as struct members, not by getattr (3 per rule).
    @cython.locals(rule=RouteRule, exact=bytes, prefix=bytes)
    cdef RouteRule _scan(self, bytes path, bytes method, list headers, bytes target)


cdef class HostTable:
    cdef public VHost any
    cdef public dict exact
    cdef public object port
    cdef public dict wildcard

    cpdef VHost find(self, bytes host)


cdef class Router:
    cdef public object generation
    cdef public dict tables

