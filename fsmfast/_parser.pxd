# C declarations of the compiled HTTP/1 codec (the twin of fsmfast/codec/http1.py), for the compiled
# proxy modules (downstream, exchange, upstream): with them Cython calls each function in C instead of
# through a Python-level call. Python code (and the pure-Python twins under FSMFAST_NO_EXTENSIONS=1)
# imports them from fsmfast.codec. tests/unit/test_codec_api.py holds these signatures, _parser.pyx's,
# the spec's and _parser.pyi's to the same names and parameters.

# Framing of the message being written, as in the spec (the same test checks the values); cpdef: the
# module exports them as Python ints too.
cpdef enum:
    FRAME_NONE = -1  # no body and no framing header (GET without body, 204, 304)
    FRAME_CHUNKED = -2  # Transfer-Encoding: chunked
    FRAME_CLOSE = -3  # body delimited by closing the connection (HTTP/1.0 clients)
    # n >= 0: Content-Length: n

cdef enum:
    STACK_HEADERS = 32  # header records a HdrBuf holds before it allocates

# One header line: borrowed pointers into the bytes that hold it (see _parser.pyx).
cdef struct Hdr:
    const char* name
    const char* value
    Py_ssize_t nlen
    Py_ssize_t vlen
    int flags

cdef struct HdrBuf:
    Hdr* h  # stack, or a PyMem block for long lists
    Py_ssize_t n
    Py_ssize_t cap
    Hdr stack[STACK_HEADERS]


# read_response_head's fields of a head, for relay_response_head (see the spec's ResponseHead).
cdef class ResponseHead:
    cdef readonly object buf  # the bytes fields points into; None when there is nothing to take
    cdef Py_ssize_t start, end, reason_at, reason_len
    cdef long long status
    cdef HdrBuf fields


cpdef long long parse_content_length(object value) except? -2
cpdef frozenset connection_tokens(object headers)
cpdef bytes build_request_head(
    object method, object target, object headers, object client_ip, object proto, object host, long long framing,
    object rid_prefix, unsigned long long rid
)
cpdef bytes build_response_head(
    bint http11, long long status, object reason, object headers, long long framing, bint keep_alive
)
cpdef list chunk(object data)
cpdef bint valid_host(object value)
cpdef bint valid_request_id(object value)
cpdef bint valid_traceparent(object value)
cpdef tuple scan_request(object headers, Py_ssize_t max_field)
cpdef Py_ssize_t scan_request_line(object data) except? -2
cpdef tuple normalize_target(object target)
cpdef tuple response_framing(object headers)
cpdef tuple parse_response_head(bytes buf, Py_ssize_t start, Py_ssize_t end)
cpdef tuple scan_response_head(bytes buf, Py_ssize_t start, Py_ssize_t end)
cpdef bytes relay_response_head(
    bytes buf, Py_ssize_t start, Py_ssize_t end, bint http11, long long framing, bint keep_alive,
    Py_ssize_t body_end=*, ResponseHead head=*
)
cpdef bytes normalize_host(bytes value)
cpdef object read_request_head(object data, Py_ssize_t start, Py_ssize_t max_head, Py_ssize_t max_headers)
cpdef object read_response_head(object data, Py_ssize_t start, Py_ssize_t max_head, ResponseHead head=*)
