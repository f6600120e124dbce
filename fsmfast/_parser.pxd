# C declarations of _parser's functions, for the compiled proxy modules (downstream, exchange,
# upstream): with them Cython calls each function in C instead of through a Python-level call.
# Python code (and the pure-Python twins under FSMFAST_NO_EXTENSIONS=1) imports them from
# fsmfast._accel as before. Keep in step with the signatures in _parser.pyx.

cpdef long long parse_content_length(object value) except? -2
cpdef frozenset connection_tokens(object headers)
cpdef bytes build_request_head(
    object method, object target, object headers, object client_ip, object proto, object host, long long framing
)
cpdef bytes build_response_head(
    bint http11, long long status, object reason, object headers, long long framing, bint keep_alive
)
cpdef list chunk(object data)
cpdef bint valid_host(object value)
cpdef tuple scan_request(object headers, Py_ssize_t max_field)
cpdef Py_ssize_t scan_request_line(object data) except? -2
cpdef tuple normalize_target(object target)
cpdef tuple response_framing(object headers)
cpdef tuple parse_response_head(bytes buf, Py_ssize_t start, Py_ssize_t end)
cpdef tuple scan_response_head(bytes buf, Py_ssize_t start, Py_ssize_t end)
cpdef bytes relay_response_head(
    bytes buf, Py_ssize_t start, Py_ssize_t end, bint http11, long long framing, bint keep_alive,
    Py_ssize_t body_end=*
)
cpdef bytes normalize_host(bytes value)
cpdef object read_request_head(object data, Py_ssize_t start, Py_ssize_t max_head, Py_ssize_t max_headers)
cpdef object read_response_head(object data, Py_ssize_t start, Py_ssize_t max_head)
