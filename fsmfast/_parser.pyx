# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""The HTTP/1 codec in C: the Cython twin of ``fsmfast/codec/http1.py``.

That module is the specification (rules, RFC references); this one must return byte-identical
results for the same arguments, and ``tests/unit/test_parser_twin.py`` checks it does.

Theory of operation. Every function works in three steps over a C array of ``Hdr`` records:

1. *load*: read the header list once, keeping borrowed pointers into the name and value
   ``bytes`` and a ``flags`` word saying which known header each name is (length switch, then
   a case-insensitive compare against the lower-case literal: no lowered copy is allocated).
   Anything but a list of exact ``(bytes, bytes)`` tuples goes through ``_normalize`` first,
   which raises the errors the pure twin raises (``TypeError``, ``ValueError``) or builds a
   clean list.
2. *classify*: collect the Connection tokens as pointers into the values (up to
   ``MAX_TOKENS`` distinct ones, compared case-insensitively, length first) and mark each
   header kept, skipped, or X-Forwarded-For.
3. *fill*: add up the output size, allocate one ``bytes`` with
   ``PyBytes_FromStringAndSize(NULL, n)`` and ``memcpy`` the pieces into it.

The borrowed pointers are safe because no Python code can run between load and fill: only
``bytes`` (not tracked by the GC, so no collection and no finalizer can run) and ``PyMem``
blocks are allocated there. The one path that needs a Python set, a message naming more than
``MAX_TOKENS`` headers in Connection, first copies the list so that nothing else can change it.

Inputs: header names and values, method, target, client_ip, proto, reason must be ``bytes``
(anything else raises ``TypeError``; the pure twin happens to accept ``bytearray`` values
through ``b"".join`` and ignores ``str`` names in ``connection_tokens``); ``host`` may also be
None. ``framing`` and ``status`` are C ``long long``.
"""

from cpython.bytes cimport (
    PyBytes_AS_STRING,
    PyBytes_Check,
    PyBytes_CheckExact,
    PyBytes_FromStringAndSize,
    PyBytes_GET_SIZE,
)
from cpython.list cimport PyList_CheckExact
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from cpython.object cimport PyObject
from cpython.set cimport PySet_Add
from libc.stdint cimport uint64_t
from libc.string cimport memchr, memcmp, memcpy

from fsmfast.proxy.paths import BAD_CHAR as _BAD_CHAR
from fsmfast.proxy.paths import normalize_slow as _normalize_slow

cdef extern from "Python.h":
    # Borrowed-pointer spellings of the cpython.* declarations: the loops below read items of a
    # list that nothing can change while they run, so they skip the reference counting.
    Py_ssize_t _list_size "PyList_GET_SIZE" (object o)
    PyObject* _list_item "PyList_GET_ITEM" (object o, Py_ssize_t i)
    bint _tuple_exact "PyTuple_CheckExact" (PyObject* o)
    Py_ssize_t _tuple_size "PyTuple_GET_SIZE" (PyObject* o)
    PyObject* _tuple_item "PyTuple_GET_ITEM" (PyObject* o, Py_ssize_t i)
    bint _is_bytes "PyBytes_Check" (PyObject* o)
    char* _bytes_str "PyBytes_AS_STRING" (PyObject* o)
    Py_ssize_t _bytes_size "PyBytes_GET_SIZE" (PyObject* o)
    frozenset _new_frozenset "PyFrozenSet_New" (PyObject* iterable)

cdef extern from *:
    """
    #ifndef FSMFAST_DEBUG
    #define FSMFAST_DEBUG 0
    #endif
    #define FSM_LIT(name, text) static const char name[] = text; enum { name##_LEN = sizeof(text) - 1 };
    FSM_LIT(S_HTTP11_REQ, " HTTP/1.1\\r\\n")
    FSM_LIT(S_HTTP11, "HTTP/1.1 ")
    FSM_LIT(S_HTTP10, "HTTP/1.0 ")
    FSM_LIT(S_XFF, "X-Forwarded-For: ")
    FSM_LIT(S_XFP, "X-Forwarded-Proto: ")
    FSM_LIT(S_XFH, "X-Forwarded-Host: ")
    FSM_LIT(S_CL, "Content-Length: ")
    FSM_LIT(S_CHUNKED, "Transfer-Encoding: chunked\\r\\n")
    FSM_LIT(S_CLOSE, "Connection: close\\r\\n")
    FSM_LIT(S_KEEPALIVE, "Connection: keep-alive\\r\\n")
    FSM_LIT(S_RID, "X-Request-Id: ")
    /* Two lowercase hex digits per byte value: 00 01 ... ff. */
    #define FSM_H16(h) h "0" h "1" h "2" h "3" h "4" h "5" h "6" h "7" h "8" h "9" h "a" h "b" h "c" h "d" h "e" h "f"
    static const char fsm_hex2[513] = FSM_H16("0") FSM_H16("1") FSM_H16("2") FSM_H16("3") FSM_H16("4")
        FSM_H16("5") FSM_H16("6") FSM_H16("7") FSM_H16("8") FSM_H16("9") FSM_H16("a") FSM_H16("b")
        FSM_H16("c") FSM_H16("d") FSM_H16("e") FSM_H16("f");
    static inline void fsm_hex8(char* p, uint32_t v) {
        memcpy(p, fsm_hex2 + 2 * (v >> 24), 2);
        memcpy(p + 2, fsm_hex2 + 2 * ((v >> 16) & 0xFF), 2);
        memcpy(p + 4, fsm_hex2 + 2 * ((v >> 8) & 0xFF), 2);
        memcpy(p + 6, fsm_hex2 + 2 * (v & 0xFF), 2);
    }
    /* The 16 lowercase hex digits of v, a byte at a time from a table. A count of requests stays
       below 2**32 for months: its upper half is then eight zeros, one store. */
    static inline char* fsm_hex16(char* p, unsigned long long v) {
        if (v >> 32)
            fsm_hex8(p, (uint32_t)(v >> 32));
        else
            memcpy(p, "00000000", 8);
        fsm_hex8(p + 8, (uint32_t)v);
        return p + 16;
    }
    """
    const int FSMFAST_DEBUG  # -DFSMFAST_DEBUG=1 turns on the invariant checks
    const char* S_HTTP11_REQ
    const char* S_HTTP11
    const char* S_HTTP10
    const char* S_XFF
    const char* S_XFP
    const char* S_XFH
    const char* S_CL
    const char* S_CHUNKED
    const char* S_CLOSE
    const char* S_KEEPALIVE
    const char* S_RID
    char* fsm_hex16(char* p, unsigned long long v) noexcept nogil
    enum:
        S_HTTP11_REQ_LEN
        S_HTTP11_LEN
        S_HTTP10_LEN
        S_XFF_LEN
        S_XFP_LEN
        S_XFH_LEN
        S_CL_LEN
        S_CHUNKED_LEN
        S_CLOSE_LEN
        S_KEEPALIVE_LEN
        S_RID_LEN

# FRAME_NONE, FRAME_CHUNKED, FRAME_CLOSE: the cpdef enum in _parser.pxd.

HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"proxy-connection",
        b"content-length",
    }
)
GATEWAY_OWNED = frozenset({b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host", b"host", b"x-request-id"})

cdef object _DIGITS = frozenset(b"0123456789")
cdef bytes _CRLF = b"\r\n"
cdef const char* _HEX = b"0123456789abcdef"

cdef enum:
    # Hdr.flags
    F_HOP = 1  # in HOP_BY_HOP
    F_CONN = 2  # Connection itself
    F_EXPECT = 4
    F_XFF = 8
    F_OWNED_SET = 16  # X-Forwarded-Proto / X-Forwarded-Host: the gateway replaces them
    F_HOST = 32
    F_LISTED = 64  # named by a Connection token
    F_KEEP = 128  # written out
    F_RID = 256  # X-Request-Id
    F_TRACEPARENT = 512
    F_TRACESTATE = 1024
    MAX_TOKENS = 16

# Hdr and HdrBuf: _parser.pxd.

cdef struct Tok:
    const char* p
    Py_ssize_t n

cdef unsigned char _LOWER[256]  # what bytes.lower() does: ASCII A-Z only
cdef int _c
for _c in range(256):
    _LOWER[_c] = _c + 32 if 65 <= _c <= 90 else _c


cdef inline bint _ieq(const char* s, const char* lit, Py_ssize_t n) noexcept nogil:
    """s equals the lower-case literal lit, ignoring ASCII case in s."""
    cdef Py_ssize_t i
    for i in range(n):
        if _LOWER[<unsigned char>s[i]] != <unsigned char>lit[i]:
            return False
    return True


cdef inline bint _ieq2(const char* a, const char* b, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(n):
        if _LOWER[<unsigned char>a[i]] != _LOWER[<unsigned char>b[i]]:
            return False
    return True


cdef inline const char* _strip_ows(const char* s, Py_ssize_t* n) noexcept nogil:
    """Trim spaces and tabs at both ends (what ``bytes.strip(b" \\t")`` does)."""
    cdef Py_ssize_t a = 0, b = n[0]
    while a < b and (s[a] == 32 or s[a] == 9):
        a += 1
    while b > a and (s[b - 1] == 32 or s[b - 1] == 9):
        b -= 1
    n[0] = b - a
    return s + a


cdef inline long long _digits(const char* s, Py_ssize_t n) noexcept nogil:
    """1*DIGIT as a number, -1 for anything else; 18 digits always fit in a long long."""
    cdef Py_ssize_t i
    cdef long long r = 0
    cdef unsigned char c
    if n == 0 or n > 18:
        return -1
    for i in range(n):
        c = <unsigned char>s[i] - 48
        if c > 9:
            return -1
        r = r * 10 + c
    return r


cdef int _classify(const char* s, Py_ssize_t n) noexcept nogil:
    """Flags of a header name: which of the names the rules mention it is, if any."""
    cdef unsigned char c
    if n < 2 or n > 17:
        return 0
    c = _LOWER[<unsigned char>s[0]]
    if n == 2:
        return F_HOP if _ieq(s, b"te", 2) else 0
    if n == 4:
        return F_HOST if _ieq(s, b"host", 4) else 0
    if n == 6:
        return F_EXPECT if _ieq(s, b"expect", 6) else 0
    if n == 7:
        if (c == b't' and _ieq(s, b"trailer", 7)) or (c == b'u' and _ieq(s, b"upgrade", 7)):
            return F_HOP
        return 0
    if n == 10:
        if c == b'c':
            return F_HOP | F_CONN if _ieq(s, b"connection", 10) else 0
        if c == b't':
            return F_TRACESTATE if _ieq(s, b"tracestate", 10) else 0
        return F_HOP if c == b'k' and _ieq(s, b"keep-alive", 10) else 0
    if n == 11:
        return F_TRACEPARENT if c == b't' and _ieq(s, b"traceparent", 11) else 0
    if n == 12:
        return F_RID if c == b'x' and _ieq(s, b"x-request-id", 12) else 0
    if n == 14:
        return F_HOP if _ieq(s, b"content-length", 14) else 0
    if n == 15:
        return F_XFF if _ieq(s, b"x-forwarded-for", 15) else 0
    if n == 16:
        if c == b'p':
            return F_HOP if _ieq(s, b"proxy-connection", 16) else 0
        return F_OWNED_SET if c == b'x' and _ieq(s, b"x-forwarded-host", 16) else 0
    if n == 17:
        if c == b't':
            return F_HOP if _ieq(s, b"transfer-encoding", 17) else 0
        return F_OWNED_SET if c == b'x' and _ieq(s, b"x-forwarded-proto", 17) else 0
    return 0


cdef inline void _buf_init(HdrBuf* b) noexcept nogil:
    b.h = b.stack
    b.n = 0
    b.cap = STACK_HEADERS


cdef inline void _buf_free(HdrBuf* b) noexcept:
    if b.h != b.stack:
        PyMem_Free(b.h)
        b.h = b.stack
        b.cap = STACK_HEADERS


cdef int _load(list lst, HdrBuf* b) except -1:
    """Fills b from lst; 0 (b unusable) when an item is not an exact tuple of two bytes."""
    cdef Py_ssize_t i, n = _list_size(lst)
    cdef PyObject* item
    cdef PyObject* name
    cdef PyObject* value
    cdef Hdr* h
    if n > b.cap:
        h = <Hdr*>PyMem_Malloc(<size_t>n * sizeof(Hdr))
        if h == NULL:
            raise MemoryError()
        _buf_free(b)
        b.h = h
        b.cap = n
    for i in range(n):
        item = _list_item(lst, i)
        if not _tuple_exact(item) or _tuple_size(item) != 2:
            return 0
        name = _tuple_item(item, 0)
        value = _tuple_item(item, 1)
        if not _is_bytes(name) or not _is_bytes(value):
            return 0
        h = &b.h[i]
        h.name = _bytes_str(name)
        h.nlen = _bytes_size(name)
        h.value = _bytes_str(value)
        h.vlen = _bytes_size(value)
        h.flags = _classify(h.name, h.nlen)
    b.n = n
    return 1


cdef list _normalize(object headers):
    """The slow path: unpack like ``for name, value in headers`` and insist on bytes."""
    cdef list out = []
    for item in headers:
        name, value = item
        if not isinstance(name, bytes) or not isinstance(value, bytes):
            raise TypeError(
                f"headers must be (bytes, bytes) pairs, not ({type(name).__name__}, {type(value).__name__})"
            )
        out.append((name, value))
    return out


cdef list _prepare(object headers, HdrBuf* b, bint copy):
    """Loads b from headers; returns the list b points into (a private copy if copy)."""
    cdef list lst
    if copy or not PyList_CheckExact(headers):
        lst = list(headers)  # any iterable, like the pure twin's for loop
    else:
        lst = <list>headers
    if not _load(lst, b):
        lst = _normalize(lst)
        _load(lst, b)
    return lst


cdef inline bint _next_token(const char** p, const char* end, const char** tok, Py_ssize_t* tn) noexcept nogil:
    """The next non-empty item of the comma-separated list [p, end), without spaces and tabs at its
    ends (what ``value.split(b",")`` then ``strip(b" \\t")`` gives); False when none is left."""
    cdef const char* item
    while p[0] < end:
        item = p[0]
        while p[0] < end and p[0][0] != 44:  # ","
            p[0] += 1
        tn[0] = p[0] - item
        tok[0] = _strip_ows(item, tn)
        if p[0] < end:
            p[0] += 1  # past the comma
        if tn[0]:
            return True
    return False


cdef Py_ssize_t _scan_tokens(HdrBuf* b, Tok* toks) noexcept nogil:
    """Distinct Connection tokens (split on ",", strip " \\t") as pointers; -1 past MAX_TOKENS."""
    cdef Py_ssize_t i, j, nt = 0, tn
    cdef const char* p
    cdef const char* s
    cdef bint seen
    for i in range(b.n):
        if not (b.h[i].flags & F_CONN):
            continue
        p = b.h[i].value
        while _next_token(&p, b.h[i].value + b.h[i].vlen, &s, &tn):
            seen = False
            for j in range(nt):
                if toks[j].n == tn and _ieq2(toks[j].p, s, tn):
                    seen = True
                    break
            if not seen:
                if nt == MAX_TOKENS:
                    return -1
                toks[nt].p = s
                toks[nt].n = tn
                nt += 1
    return nt


cdef int _tokens_into(HdrBuf* b, object out) except -1:
    """Adds the lowered Connection tokens to the new set or frozenset out (only bytes are allocated)."""
    cdef Py_ssize_t i, k, tn
    cdef const char* p
    cdef const char* s
    cdef bytes tok
    cdef char* t
    for i in range(b.n):
        if not (b.h[i].flags & F_CONN):
            continue
        p = b.h[i].value
        while _next_token(&p, b.h[i].value + b.h[i].vlen, &s, &tn):
            tok = PyBytes_FromStringAndSize(NULL, tn)
            t = PyBytes_AS_STRING(tok)
            for k in range(tn):
                t[k] = <char>_LOWER[<unsigned char>s[k]]
            PySet_Add(out, tok)
    return 0


cdef inline void _mark_tokens(HdrBuf* b, Tok* toks, Py_ssize_t nt) noexcept nogil:
    """Sets F_LISTED on every header one of the nt Connection tokens names."""
    cdef Py_ssize_t i, j
    cdef Hdr* h
    for i in range(b.n):
        h = &b.h[i]
        for j in range(nt):
            if toks[j].n == h.nlen and _ieq2(toks[j].p, h.name, h.nlen):
                h.flags |= F_LISTED
                break


cdef list _mark_listed(list lst, HdrBuf* b):
    """Sets F_LISTED on every header a Connection token names; returns the list b now points into."""
    cdef Tok toks[MAX_TOKENS]
    cdef Py_ssize_t i, j, nt = _scan_tokens(b, toks)
    cdef set listed
    cdef bytes lname
    cdef char* t
    cdef Hdr* h
    if nt > 0:
        _mark_tokens(b, toks, nt)
    elif nt < 0:
        # Rare (a client naming many headers): hash the tokens like the pure twin, so the cost
        # stays linear. The set is a GC object, so reload b from a private copy of the list first.
        lst = _prepare(lst, b, True)
        listed = set()
        _tokens_into(b, listed)
        for i in range(b.n):
            h = &b.h[i]
            lname = PyBytes_FromStringAndSize(NULL, h.nlen)
            t = PyBytes_AS_STRING(lname)
            for j in range(h.nlen):
                t[j] = <char>_LOWER[<unsigned char>h.name[j]]
            if lname in listed:
                h.flags |= F_LISTED
    return lst


cdef inline char* _put(char* p, const char* s, Py_ssize_t n) noexcept nogil:
    memcpy(p, s, <size_t>n)
    return p + n


cdef inline char* _put_kept(char* p, HdrBuf* b) noexcept nogil:
    """The header lines marked F_KEEP, as ``name: value\\r\\n``."""
    cdef Py_ssize_t i
    cdef Hdr* h
    for i in range(b.n):
        h = &b.h[i]
        if h.flags & F_KEEP:
            p = _put(p, h.name, h.nlen)
            p = _put(p, b": ", 2)
            p = _put(p, h.value, h.vlen)
            p = _put(p, b"\r\n", 2)
    return p


cdef inline Py_ssize_t _fmt_dec(long long v, char* buf) noexcept nogil:
    """Decimal digits of v into buf (at least 20 chars), like b"%d"; returns the length."""
    cdef char tmp[24]
    cdef Py_ssize_t i = 0, n = 0
    cdef unsigned long long u = <unsigned long long>v
    if v < 0:
        u = 0ULL - u
        buf[0] = b'-'
        n = 1
    while True:
        tmp[i] = <char>(48 + <int>(u % 10ULL))
        i += 1
        u //= 10ULL
        if u == 0:
            break
    while i:
        i -= 1
        buf[n] = tmp[i]
        n += 1
    return n


cdef inline Py_ssize_t _framing_size(long long framing, char* digits, Py_ssize_t* ndigits) noexcept nogil:
    if framing >= 0:
        ndigits[0] = _fmt_dec(framing, digits)
        return S_CL_LEN + ndigits[0] + 2
    if framing == FRAME_CHUNKED:
        return S_CHUNKED_LEN
    return 0


cdef inline char* _put_framing(char* p, long long framing, const char* digits, Py_ssize_t ndigits) noexcept nogil:
    if framing >= 0:
        p = _put(p, S_CL, S_CL_LEN)
        p = _put(p, digits, ndigits)
        return _put(p, b"\r\n", 2)
    if framing == FRAME_CHUNKED:
        return _put(p, S_CHUNKED, S_CHUNKED_LEN)
    return p


cdef inline int _check_filled(bytes out, char* p) except -1:
    if FSMFAST_DEBUG and p != PyBytes_AS_STRING(out) + PyBytes_GET_SIZE(out):
        raise SystemError("fsmfast._parser: head size mismatch")
    return 0


cdef inline int _need_bytes(object value, str name) except -1:
    if not PyBytes_Check(value):
        raise TypeError(f"{name} must be bytes, not {type(value).__name__}")
    return 0


cpdef long long parse_content_length(object value) except? -2:
    """Strict Content-Length: 1*DIGIT, nothing else (no sign, space, comma list, ``_``).

    Returns -1 when invalid.
    """
    if PyBytes_CheckExact(value):
        return _digits(PyBytes_AS_STRING(value), PyBytes_GET_SIZE(value))
    # Anything else: exactly what the pure twin does, whatever that is for the type.
    if not value or len(value) > 18:
        return -1
    for ch in value:
        if ch not in _DIGITS:
            return -1
    return int(value)


cpdef frozenset connection_tokens(object headers):
    """Lower-cased tokens of every Connection header (it may repeat)."""
    cdef HdrBuf b
    cdef list lst
    # Filled in place (allowed on a frozenset nobody else has seen yet), and created before
    # _prepare so that nothing GC-tracked is allocated while b holds pointers.
    cdef frozenset tokens = _new_frozenset(NULL)
    _buf_init(&b)
    try:
        lst = _prepare(headers, &b, False)
        _tokens_into(&b, tokens)
    finally:
        _buf_free(&b)
    return tokens


cpdef bytes build_request_head(
    object method,
    object target,
    object headers,
    object client_ip,
    object proto,
    object host,
    long long framing,
    object rid_prefix,
    unsigned long long rid,
):
    """The HTTP/1.1 request head sent upstream, ending with the blank line.

    ``host`` is the client's Host value (for X-Forwarded-Host); ``framing`` is FRAME_NONE,
    FRAME_CHUNKED or a Content-Length. ``rid``: see the pure twin (0 keeps the client's
    X-Request-Id; else ``rid_prefix`` and ``rid`` in hex are the id sent).
    """
    cdef HdrBuf b
    cdef Hdr* h
    cdef list lst
    cdef Py_ssize_t i, size, ndigits = 0, nhost = 0, nprefix = 0
    cdef char digits[24]
    cdef bytes out
    cdef char* p
    cdef int f, seen = 0, drop = F_HOP | F_EXPECT | F_OWNED_SET
    _need_bytes(method, "method")
    _need_bytes(target, "target")
    _need_bytes(client_ip, "client_ip")
    _need_bytes(proto, "proto")
    if host is not None:
        _need_bytes(host, "host")
        nhost = PyBytes_GET_SIZE(host)
    if rid:
        if not PyBytes_Check(rid_prefix):
            _need_bytes(rid_prefix, "rid_prefix")
        nprefix = PyBytes_GET_SIZE(rid_prefix)
        drop |= F_RID  # the gateway's id replaces the client's
    _buf_init(&b)
    try:
        lst = _prepare(headers, &b, False)
        lst = _mark_listed(lst, &b)  # lst keeps alive what b points into
        size = PyBytes_GET_SIZE(method) + 1 + PyBytes_GET_SIZE(target) + S_HTTP11_REQ_LEN
        for i in range(b.n):
            h = &b.h[i]
            f = h.flags
            seen |= f
            if f & F_XFF:
                size += h.vlen + 2  # "value, "
            elif f & drop:
                pass
            elif f & F_LISTED and not f & (F_HOST | F_RID):  # Connection cannot remove Host or the id
                pass
            else:
                h.flags = f | F_KEEP
                size += h.nlen + h.vlen + 4
        if seen & F_TRACEPARENT:
            size -= _untrace(&b)
        size += S_XFF_LEN + PyBytes_GET_SIZE(client_ip) + 2
        size += S_XFP_LEN + PyBytes_GET_SIZE(proto) + 2
        if nhost:
            size += S_XFH_LEN + nhost + 2
        if rid:
            size += S_RID_LEN + nprefix + 16 + 2
        size += _framing_size(framing, digits, &ndigits) + 2

        out = PyBytes_FromStringAndSize(NULL, size)
        p = PyBytes_AS_STRING(out)
        p = _put(p, PyBytes_AS_STRING(method), PyBytes_GET_SIZE(method))
        p[0] = b' '
        p = _put(p + 1, PyBytes_AS_STRING(target), PyBytes_GET_SIZE(target))
        p = _put(p, S_HTTP11_REQ, S_HTTP11_REQ_LEN)
        p = _put_kept(p, &b)
        p = _put(p, S_XFF, S_XFF_LEN)
        for i in range(b.n):
            h = &b.h[i]
            if h.flags & F_XFF:
                p = _put(p, h.value, h.vlen)
                p = _put(p, b", ", 2)
        p = _put(p, PyBytes_AS_STRING(client_ip), PyBytes_GET_SIZE(client_ip))
        p = _put(p, b"\r\n", 2)
        p = _put(p, S_XFP, S_XFP_LEN)
        p = _put(p, PyBytes_AS_STRING(proto), PyBytes_GET_SIZE(proto))
        p = _put(p, b"\r\n", 2)
        if nhost:
            p = _put(p, S_XFH, S_XFH_LEN)
            p = _put(p, PyBytes_AS_STRING(host), nhost)
            p = _put(p, b"\r\n", 2)
        if rid:
            p = _put(p, S_RID, S_RID_LEN)
            if nprefix == 16:  # a worker's prefix: a copy of known size, inlined
                p = _put(p, PyBytes_AS_STRING(rid_prefix), 16)
            else:
                p = _put(p, PyBytes_AS_STRING(rid_prefix), nprefix)
            p = fsm_hex16(p, rid)
            p = _put(p, b"\r\n", 2)
        p = _put_framing(p, framing, digits, ndigits)
        p = _put(p, b"\r\n", 2)
        _check_filled(out, p)
    finally:
        _buf_free(&b)
    return out


cdef Py_ssize_t _untrace(HdrBuf* b) noexcept nogil:
    """Unless the head has exactly one traceparent and it is valid, takes F_KEEP off every traceparent
    and tracestate; returns how many bytes fewer the head has then."""
    cdef Py_ssize_t i, found = 0, removed = 0
    cdef Hdr* parent = NULL
    cdef Hdr* h
    for i in range(b.n):
        if b.h[i].flags & F_TRACEPARENT:
            found += 1
            parent = &b.h[i]
    if found == 1 and _traceparent_ok(parent.value, parent.vlen):
        return 0
    for i in range(b.n):
        h = &b.h[i]
        if h.flags & (F_TRACEPARENT | F_TRACESTATE) and h.flags & F_KEEP:
            h.flags &= ~F_KEEP
            removed += h.nlen + h.vlen + 4
    return removed


cdef unsigned char _RIDCHAR[256]  # X-Request-Id characters (see the pure twin)
cdef unsigned char _LCHEX[256]  # lowercase hex digits
for _c in range(256):
    _RIDCHAR[_c] = (48 <= _c <= 57) or (65 <= _c <= 90) or (97 <= _c <= 122) or _c in b"._:+/=-"
    _LCHEX[_c] = (48 <= _c <= 57) or (97 <= _c <= 102)


cdef inline bint _request_id_ok(const char* s, Py_ssize_t n) noexcept nogil:
    return 0 < n <= 128 and _all_in(_RIDCHAR, s, 0, n)


cdef inline bint _zeros(const char* s, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(n):
        if s[i] != 48:
            return False
    return True


cdef bint _traceparent_ok(const char* v, Py_ssize_t n) noexcept nogil:
    """valid_traceparent over n bytes at v: 00-<32>-<16>-<2> lowercase hex, more after a "-" only
    above version 00, never version ff, trace-id and parent-id not all zeros."""
    v = _strip_ows(v, &n)
    if n < 55 or v[2] != 45 or v[35] != 45 or v[52] != 45:  # "-"
        return False
    if not (_all_in(_LCHEX, v, 0, 2) and _all_in(_LCHEX, v, 3, 35) and _all_in(_LCHEX, v, 36, 52)
            and _all_in(_LCHEX, v, 53, 55)):
        return False
    if v[0] == 102 and v[1] == 102:  # version ff
        return False
    if n > 55 and (v[55] != 45 or (v[0] == 48 and v[1] == 48)):
        return False
    return not _zeros(v + 3, 32) and not _zeros(v + 36, 16)


cpdef bint valid_request_id(object value):
    """See ``fsmfast.codec.http1.valid_request_id``."""
    _need_bytes(value, "value")
    return _request_id_ok(PyBytes_AS_STRING(value), PyBytes_GET_SIZE(value))


cpdef bint valid_traceparent(object value):
    """See ``fsmfast.codec.http1.valid_traceparent``."""
    _need_bytes(value, "value")
    return _traceparent_ok(PyBytes_AS_STRING(value), PyBytes_GET_SIZE(value))


cpdef bytes build_response_head(
    bint http11,
    long long status,
    object reason,
    object headers,
    long long framing,
    bint keep_alive,
):
    """The response head sent to the client, ending with the blank line.

    ``http11`` is the client's version; a 1.0 client gets ``HTTP/1.0`` and an explicit
    ``Connection: keep-alive`` when the connection stays open (it is not its default).
    """
    cdef HdrBuf b
    cdef list lst
    _need_bytes(reason, "reason")
    _buf_init(&b)
    try:
        lst = _prepare(headers, &b, False)
        lst = _mark_listed(lst, &b)  # lst keeps alive what b points into
        return _emit_response(&b, http11, status, PyBytes_AS_STRING(reason), PyBytes_GET_SIZE(reason), framing,
                              keep_alive, NULL, 0)
    finally:
        _buf_free(&b)


cdef bytes _emit_response(HdrBuf* b, bint http11, long long status, const char* reason, Py_ssize_t rlen,
                          long long framing, bint keep_alive, const char* tail, Py_ssize_t tlen):
    """The response head of build_response_head from b, whose Connection-listed headers are marked,
    followed by the tlen bytes at tail."""
    cdef Hdr* h
    cdef Py_ssize_t i, size, nstatus, ndigits = 0
    cdef char digits[24]
    cdef char status_digits[24]
    cdef bytes out
    cdef char* p
    nstatus = _fmt_dec(status, status_digits)
    size = S_HTTP11_LEN + nstatus + 1 + rlen + 2
    for i in range(b.n):
        h = &b.h[i]
        if not h.flags & (F_HOP | F_LISTED):
            h.flags |= F_KEEP
            size += h.nlen + h.vlen + 4
    size += _framing_size(framing, digits, &ndigits)
    if not keep_alive:
        size += S_CLOSE_LEN
    elif not http11:
        size += S_KEEPALIVE_LEN
    size += 2 + tlen

    out = PyBytes_FromStringAndSize(NULL, size)
    p = PyBytes_AS_STRING(out)
    p = _put(p, S_HTTP11 if http11 else S_HTTP10, S_HTTP11_LEN)
    p = _put(p, status_digits, nstatus)
    p[0] = b' '
    p = _put(p + 1, reason, rlen)
    p = _put(p, b"\r\n", 2)
    p = _put_kept(p, b)
    p = _put_framing(p, framing, digits, ndigits)
    if not keep_alive:
        p = _put(p, S_CLOSE, S_CLOSE_LEN)
    elif not http11:
        p = _put(p, S_KEEPALIVE, S_KEEPALIVE_LEN)
    p = _put(p, b"\r\n", 2)
    if tlen:
        p = _put(p, tail, tlen)
    _check_filled(out, p)
    return out


cpdef list chunk(object data):
    """One chunk of chunked transfer coding, as pieces for ``writelines``."""
    cdef Py_ssize_t n = len(data)
    cdef char buf[24]
    cdef Py_ssize_t i = 20
    buf[20] = b'\r'
    buf[21] = b'\n'
    while True:
        i -= 1
        buf[i] = _HEX[n & 15]
        n >>= 4
        if n == 0:
            break
    return [PyBytes_FromStringAndSize(buf + i, 22 - i), data, _CRLF]


cdef list _exact_pairs(object headers):
    """The header list itself when it is a list of (bytes, bytes); else the normalized copy."""
    cdef Py_ssize_t i
    cdef PyObject* item
    if PyList_CheckExact(headers):
        for i in range(_list_size(headers)):
            item = _list_item(headers, i)
            if not (_tuple_exact(item) and _tuple_size(item) == 2 and PyBytes_CheckExact(<object>_tuple_item(item, 0))
                    and PyBytes_CheckExact(<object>_tuple_item(item, 1))):
                return _normalize(headers)
        return <list>headers
    return _normalize(headers)


cdef unsigned char _HOSTCHAR[256]  # valid_host: letters, digits, "-", ".", "_"
cdef unsigned char _V6CHAR[256]  # inside "[...]": hex digits, ":", "."
cdef unsigned char _BADANY[256]  # normalize_target: refused anywhere in the target
cdef unsigned char _BADPATH[256]  # ... and in the path ("\\" too)
for _c in range(256):
    _HOSTCHAR[_c] = (48 <= _c <= 57) or (65 <= _c <= 90) or (97 <= _c <= 122) or _c in (45, 46, 95)
    _V6CHAR[_c] = (48 <= _c <= 57) or (65 <= _c <= 70) or (97 <= _c <= 102) or _c in (58, 46)
    _BADANY[_c] = _c <= 32 or _c >= 127 or _c in (35, 34, 60, 62)  # CTL SP DEL non-ASCII # " < >
    _BADPATH[_c] = _BADANY[_c] or _c == 92


cdef bint _host_ok(const char* s, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i = 0, k
    cdef unsigned char c
    cdef long port = 0
    if n == 0:
        return False
    if s[0] == 91:  # "["
        i = 1
        while i < n and s[i] != 93:  # "]"
            if not _V6CHAR[<unsigned char>s[i]]:
                return False
            i += 1
        if i == n or i == 1:
            return False
        i += 1
    else:
        while i < n and s[i] != 58:  # ":"
            c = <unsigned char>s[i]
            if not _HOSTCHAR[c] or (c == 46 and i > 0 and s[i - 1] == 46):
                return False
            i += 1
        if i == 0:
            return False
    if i == n:
        return True
    if s[i] != 58 or n - i - 1 > 5:
        return False
    for k in range(i + 1, n):
        if s[k] < 48 or s[k] > 57:
            return False
        port = port * 10 + (s[k] - 48)
    return 1 <= port <= 65535


cpdef bint valid_host(object value):
    """See ``fsmfast.codec.http1.valid_host``."""
    _need_bytes(value, "value")
    return _host_ok(PyBytes_AS_STRING(value), PyBytes_GET_SIZE(value))


cpdef tuple scan_request(object headers, Py_ssize_t max_field):
    """See ``fsmfast.codec.http1.scan_request``."""
    cdef list lst = _exact_pairs(headers)
    cdef Py_ssize_t i, n, vn
    cdef PyObject* item
    cdef object name, value
    cdef const char* s
    cdef const char* v
    cdef long long cl, content_length = -1
    cdef Py_ssize_t ids = 0
    cdef PyObject* request_id = NULL  # borrowed from lst: no reference counting per request
    host = None
    te = None
    expect = None
    upgrade = None
    for i in range(_list_size(lst)):
        item = _list_item(lst, i)
        name = <object>_tuple_item(item, 0)
        value = <object>_tuple_item(item, 1)
        n = PyBytes_GET_SIZE(name)
        vn = PyBytes_GET_SIZE(value)
        s = PyBytes_AS_STRING(name)
        if n + vn > max_field:
            return host, content_length, te, expect, upgrade, (431, f"a header field exceeds {max_field} bytes"), None
        if n == 4 and _ieq(s, b"host", 4):
            if host is not None:
                return host, content_length, te, expect, upgrade, (400, "more than one Host header"), None
            if not _host_ok(PyBytes_AS_STRING(value), vn):
                return host, content_length, te, expect, upgrade, (400, "invalid Host header"), None
            host = value
        elif n == 14 and _ieq(s, b"content-length", 14):
            v = _strip_ows(PyBytes_AS_STRING(value), &vn)
            cl = _digits(v, vn)
            if cl < 0:
                return host, content_length, te, expect, upgrade, (400, "invalid Content-Length"), None
            if content_length >= 0 and cl != content_length:
                return host, content_length, te, expect, upgrade, (400, "conflicting Content-Length headers"), None
            content_length = cl
        elif n == 17 and _ieq(s, b"transfer-encoding", 17):
            if te is not None:
                return host, content_length, te, expect, upgrade, (400, "more than one Transfer-Encoding header"), None
            te = value
        elif n == 6 and _ieq(s, b"expect", 6):
            expect = value
        elif n == 7 and upgrade is None and _ieq(s, b"upgrade", 7):
            upgrade = value
        elif n == 12 and _ieq(s, b"x-request-id", 12):
            ids += 1
            request_id = <PyObject*>value
    if request_id == NULL:
        return host, content_length, te, expect, upgrade, None, None
    return host, content_length, te, expect, upgrade, None, _kept_id(<bytes>request_id, ids)


cdef object _kept_id(bytes value, Py_ssize_t count):
    """scan_request's request_id from the value of the last of count X-Request-Id headers."""
    cdef Py_ssize_t n = PyBytes_GET_SIZE(value)
    cdef const char* s = _strip_ows(PyBytes_AS_STRING(value), &n)
    if count != 1 or not _request_id_ok(s, n):
        return None
    if n == PyBytes_GET_SIZE(value):
        return value
    return PyBytes_FromStringAndSize(s, n)


cpdef Py_ssize_t scan_request_line(object data) except? -2:
    """See ``fsmfast.codec.http1.scan_request_line``."""
    cdef const char* s
    cdef Py_ssize_t n, i = 0
    _need_bytes(data, "data")
    s = PyBytes_AS_STRING(data)
    n = PyBytes_GET_SIZE(data)
    while i + 1 < n and s[i] == 13 and s[i + 1] == 10:
        i += 2
    if i < n and s[i] == 32:
        # A leading space is refused whether or not the line is complete, like the pure twin.
        while i < n and s[i] != 10:
            i += 1
        return -1 if i < n else 0
    while i < n and s[i] != 10:
        if s[i] == 32 and i + 1 < n and s[i + 1] == 32:
            while i < n and s[i] != 10:
                i += 1
            return -1 if i < n else 0
        i += 1
    return i + 1 if i < n else 0


cpdef tuple normalize_target(object target):
    """See ``fsmfast.proxy.paths.normalize_target``: the scan in C, the rare rewrite in Python."""
    cdef const char* s
    cdef Py_ssize_t n, i, q = -1
    cdef unsigned char c, prev = 0
    cdef bint work = False
    _need_bytes(target, "target")
    s = PyBytes_AS_STRING(target)
    n = PyBytes_GET_SIZE(target)
    for i in range(n):
        if s[i] == 63:  # "?"
            q = i
            break
    path = target if q < 0 else PyBytes_FromStringAndSize(s, q)
    if q >= 0:
        for i in range(q + 1, n):
            if _BADANY[<unsigned char>s[i]]:
                return path, target, _BAD_CHAR
    for i in range(n if q < 0 else q):
        c = <unsigned char>s[i]
        if _BADPATH[c]:
            return path, target, _BAD_CHAR
        if c == 37 or (prev == 47 and (c == 47 or c == 46)):  # "%", "//", "/."
            work = True
        prev = c
    if not work:
        return path, target, None
    return _normalize_slow(path, target, q)


cpdef tuple response_framing(object headers):
    """See ``fsmfast.codec.http1.response_framing``."""
    cdef list lst = _exact_pairs(headers)
    cdef Py_ssize_t i, n, vn, k
    cdef PyObject* item
    cdef object name, value
    cdef const char* s
    cdef const char* v
    cdef long long length = -1
    cdef bint chunked = False
    for i in range(_list_size(lst)):
        item = _list_item(lst, i)
        name = <object>_tuple_item(item, 0)
        value = <object>_tuple_item(item, 1)
        n = PyBytes_GET_SIZE(name)
        s = PyBytes_AS_STRING(name)
        if n == 17 and _ieq(s, b"transfer-encoding", 17):
            v = PyBytes_AS_STRING(value)
            vn = PyBytes_GET_SIZE(value)
            k = vn
            while k > 0 and v[k - 1] != 44:  # the last comma-separated coding
                k -= 1
            vn = vn - k
            v = _strip_ows(v + k, &vn)
            chunked = vn == 7 and _ieq(v, b"chunked", 7)
        elif n == 14 and _ieq(s, b"content-length", 14):
            vn = PyBytes_GET_SIZE(value)
            v = _strip_ows(PyBytes_AS_STRING(value), &vn)
            length = _digits(v, vn)
    return length, chunked


cdef inline Py_ssize_t _find_crlf(const char* s, Py_ssize_t pos, Py_ssize_t end) noexcept nogil:
    cdef const char* p
    while pos + 1 < end:
        # memchr is vectorized: a head is mostly long lines with one CR each.
        p = <const char*>memchr(s + pos, 13, <size_t>(end - 1 - pos))
        if p == NULL:
            return -1
        pos = p - s
        if s[pos + 1] == 10:
            return pos
        pos += 1
    return -1


cdef inline void _trim(const char* s, Py_ssize_t* a, Py_ssize_t* b) noexcept nogil:
    """Narrow [a, b) past spaces and tabs at both ends."""
    while a[0] < b[0] and (s[a[0]] == 32 or s[a[0]] == 9):
        a[0] += 1
    while b[0] > a[0] and (s[b[0] - 1] == 32 or s[b[0] - 1] == 9):
        b[0] -= 1


cdef inline bint _next_line(const char* s, Py_ssize_t* pos, Py_ssize_t end, Py_ssize_t* a,
                            Py_ssize_t* eol) noexcept nogil:
    """The next non-empty line of a head from pos (ended by CRLF or by end) as [a, eol); False at the end."""
    cdef Py_ssize_t e
    while pos[0] < end:
        e = _find_crlf(s, pos[0], end)
        if e < 0:
            e = end
        a[0] = pos[0]
        pos[0] = e + 2
        if a[0] != e:
            eol[0] = e
            return True
    return False


cdef inline bint _field(const char* s, Py_ssize_t a, Py_ssize_t eol, Py_ssize_t* colon, Py_ssize_t* va,
                        Py_ssize_t* vb) noexcept nogil:
    """A header line [a, eol) as name [a, colon) and trimmed value [va, vb); False without a name or colon."""
    cdef const char* p = <const char*>memchr(s + a, 58, <size_t>(eol - a))
    if p == NULL or p == s + a:
        return False
    colon[0] = p - s
    va[0] = colon[0] + 1
    vb[0] = eol
    _trim(s, va, vb)
    return True


# -- response heads straight from the upstream's bytes ------------------------------------------------
# The usual response (no obs-fold, no HTTPRoute response filter) never becomes Python header objects:
# its framing is read and its client head written from the received buffer. Anything unusual falls
# back to parse_response_head, so both paths give what the pure twins (built on it) give.


cdef Py_ssize_t _status_line(bytes buf, Py_ssize_t start, Py_ssize_t end, long long* status,
                             Py_ssize_t* reason_at, Py_ssize_t* reason_len) except -2:
    """The status line of the response head buf[start:end]: sets the outputs; returns where the header
    lines start. Checks the bounds for the three readers of a response head."""
    cdef const char* s = PyBytes_AS_STRING(buf)
    cdef Py_ssize_t line_end, sp1, sp2, i
    cdef long long code = 0
    if start < 0 or end > PyBytes_GET_SIZE(buf) or start > end:
        raise ValueError("head bounds outside the buffer")
    line_end = _find_crlf(s, start, end)
    if line_end < 0:
        line_end = end
    sp1 = start
    while sp1 < line_end and s[sp1] != 32:
        sp1 += 1
    sp2 = sp1 + 1
    while sp2 < line_end and s[sp2] != 32:
        sp2 += 1
    if sp1 >= line_end or sp2 == sp1 + 1:
        raise ValueError("invalid status line")
    for i in range(sp1 + 1, sp2):
        if s[i] < 48 or s[i] > 57:
            raise ValueError("invalid status code")
        code = code * 10 + (s[i] - 48)
    status[0] = code
    reason_at[0] = sp2 + 1 if sp2 < line_end else line_end
    reason_len[0] = line_end - sp2 - 1 if sp2 < line_end else 0
    return line_end + 2


cpdef tuple parse_response_head(bytes buf, Py_ssize_t start, Py_ssize_t end):
    """See ``fsmfast.codec.http1.parse_response_head``."""
    cdef const char* s = PyBytes_AS_STRING(buf)
    cdef Py_ssize_t pos, a, eol, colon, va, vb, i, reason_at, reason_len
    cdef long long status
    cdef list headers = []
    cdef bytes name, value
    pos = _status_line(buf, start, end, &status, &reason_at, &reason_len)
    reason = PyBytes_FromStringAndSize(s + reason_at, reason_len)
    while _next_line(s, &pos, end, &a, &eol):
        if s[a] == 32 or s[a] == 9:
            # obs-fold: join to the previous value with one space
            _trim(s, &a, &eol)
            if headers:
                i = len(headers) - 1  # no negative indexing: the module sets wraparound=False
                name, value = headers[i]
                headers[i] = (name, value + b" " + PyBytes_FromStringAndSize(s + a, eol - a))
            continue
        if _field(s, a, eol, &colon, &va, &vb):
            headers.append((PyBytes_FromStringAndSize(s + a, colon - a), PyBytes_FromStringAndSize(s + va, vb - va)))
    return status, reason, headers


cdef Hdr* _push(HdrBuf* b) except NULL:
    """The next free record of b (b.n is the caller's to advance), growing b's array when full."""
    cdef Py_ssize_t cap
    cdef Hdr* grown
    if b.n == b.cap:
        cap = b.cap * 2
        grown = <Hdr*>PyMem_Malloc(<size_t>cap * sizeof(Hdr))
        if grown == NULL:
            raise MemoryError()
        memcpy(grown, b.h, <size_t>b.n * sizeof(Hdr))
        _buf_free(b)
        b.h = grown
        b.cap = cap
    return &b.h[b.n]


cdef int _load_raw(const char* s, Py_ssize_t pos, Py_ssize_t end, HdrBuf* b) except -1:
    """Fills b with the header lines of s[pos:end] as parse_response_head reads them (pointers into s);
    0 when a line is folded (obs-fold): the caller takes the slow path then."""
    cdef Py_ssize_t a, eol, colon, va, vb
    cdef Hdr* h
    b.n = 0
    while _next_line(s, &pos, end, &a, &eol):
        if s[a] == 32 or s[a] == 9:
            return 0
        if not _field(s, a, eol, &colon, &va, &vb):
            continue
        h = _push(b)
        h.name = s + a
        h.nlen = colon - a
        h.value = s + va
        h.vlen = vb - va
        h.flags = _classify(h.name, h.nlen)
        b.n += 1
    return 1


cdef void _framing_of(HdrBuf* b, long long* length, bint* chunked) noexcept nogil:
    """response_framing over b."""
    cdef Py_ssize_t i, vn, k
    cdef const char* v
    cdef Hdr* h
    length[0] = -1
    chunked[0] = False
    for i in range(b.n):
        h = &b.h[i]
        if h.nlen == 17 and _ieq(h.name, b"transfer-encoding", 17):
            v = h.value
            vn = h.vlen
            k = vn
            while k > 0 and v[k - 1] != 44:
                k -= 1
            vn = vn - k
            v = _strip_ows(v + k, &vn)
            chunked[0] = vn == 7 and _ieq(v, b"chunked", 7)
        elif h.nlen == 14 and _ieq(h.name, b"content-length", 14):
            vn = h.vlen
            v = _strip_ows(h.value, &vn)
            length[0] = _digits(v, vn)


cpdef tuple scan_response_head(bytes buf, Py_ssize_t start, Py_ssize_t end):
    """See ``fsmfast.codec.http1.scan_response_head``."""
    cdef const char* s = PyBytes_AS_STRING(buf)
    cdef HdrBuf b
    cdef long long status, length
    cdef bint chunked
    cdef Py_ssize_t pos, reason_at, reason_len
    pos = _status_line(buf, start, end, &status, &reason_at, &reason_len)
    _buf_init(&b)
    try:
        if not _load_raw(s, pos, end, &b):
            parsed = parse_response_head(buf, start, end)
            length, chunked = response_framing(parsed[2])
            return status, length, chunked
        _framing_of(&b, &length, &chunked)
    finally:
        _buf_free(&b)
    return status, length, chunked


cdef class ResponseHead:
    """See ``fsmfast.codec.http1.ResponseHead``: here the fields of the head read_response_head accepted
    (the upstream's read -> Exchange.response_head), as records pointing into ``buf``, which this holds
    until the relay takes them or the next read replaces them."""

    def __cinit__(self):
        self.buf = None
        _buf_init(&self.fields)

    def __dealloc__(self):
        _buf_free(&self.fields)


# read_response_head's records when its caller passes no ResponseHead (it reads into one all the same).
cdef ResponseHead _SCRATCH = ResponseHead()


cpdef bytes relay_response_head(
    bytes buf, Py_ssize_t start, Py_ssize_t end, bint http11, long long framing, bint keep_alive,
    Py_ssize_t body_end=0, ResponseHead head=None
):
    """See ``fsmfast.codec.http1.relay_response_head``."""
    cdef const char* s = PyBytes_AS_STRING(buf)
    cdef HdrBuf b
    cdef Tok toks[MAX_TOKENS]
    cdef Py_ssize_t nt, pos, reason_at, reason_len, tlen = 0
    cdef long long status
    if body_end > end + 4:
        if body_end > PyBytes_GET_SIZE(buf):
            raise ValueError("body_end outside the buffer")
        tlen = body_end - end - 4
    if head is not None and head.buf is buf and start == head.start and end == head.end:
        head.buf = None  # one use: _mark_tokens changes the flags
        nt = _scan_tokens(&head.fields, toks)
        if nt >= 0:
            _mark_tokens(&head.fields, toks, nt)
            return _emit_response(&head.fields, http11, head.status, s + head.reason_at, head.reason_len, framing,
                                  keep_alive, s + end + 4, tlen)
    pos = _status_line(buf, start, end, &status, &reason_at, &reason_len)
    _buf_init(&b)
    try:
        nt = _scan_tokens(&b, toks) if _load_raw(s, pos, end, &b) else -1
        if nt < 0:  # folded lines or many Connection tokens: the general path
            parsed = parse_response_head(buf, start, end)
            out = build_response_head(http11, parsed[0], parsed[1], parsed[2], framing, keep_alive)
            return out + PyBytes_FromStringAndSize(s + end + 4, tlen) if tlen else out
        _mark_tokens(&b, toks, nt)
        return _emit_response(&b, http11, status, s + reason_at, reason_len, framing, keep_alive, s + end + 4, tlen)
    finally:
        _buf_free(&b)


cpdef bytes normalize_host(bytes value):
    """See ``fsmfast.codec.http1.normalize_host``; returns ``value`` itself when nothing changes."""
    cdef const char* s = PyBytes_AS_STRING(value)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(value), end = n, i
    cdef bint upper = False
    cdef bytes out
    cdef char* t
    if n and s[0] == 91:  # "[": an IPv6 literal keeps its brackets
        for i in range(1, n):
            if s[i] == 93:  # "]"
                end = i + 1
                break
    else:
        i = n - 1
        while i >= 0 and s[i] != 58:  # the last ":" starts the port
            i -= 1
        if i >= 0:
            end = i
    if end and s[end - 1] == 46:  # one trailing "."
        end -= 1
    for i in range(end):
        if 65 <= s[i] <= 90:
            upper = True
            break
    if end == n and not upper:
        return value
    out = PyBytes_FromStringAndSize(NULL, end)
    t = PyBytes_AS_STRING(out)
    for i in range(end):
        t[i] = <char>_LOWER[<unsigned char>s[i]]
    return out


# -- request heads in one call ------------------------------------------------------------------------
# The heads every client sends (see the pure twin for what "plain" means) are read here in one pass
# instead of through llhttp's per-header Python callbacks; anything else returns None for llhttp.

cdef unsigned char _TCHAR[256]  # header-name token characters
cdef unsigned char _RTCHAR[256]  # ... in a request: "_" sends the head to llhttp (see the pure twin)
cdef unsigned char _TARGETC[256]  # RFC 3986 path and query characters
cdef unsigned char _VALUEC[256]  # VCHAR, SP, HTAB
for _c in range(256):
    _TCHAR[_c] = (48 <= _c <= 57) or (65 <= _c <= 90) or (97 <= _c <= 122) or _c in b"!#$%&'*+-.^_`|~"
    _RTCHAR[_c] = _TCHAR[_c] and _c != 95
    _TARGETC[_c] = (48 <= _c <= 57) or (65 <= _c <= 90) or (97 <= _c <= 122) or _c in b"-._~!$&'()*+,;=:@/?%"
    _VALUEC[_c] = (0x21 <= _c <= 0x7E) or _c == 0x20 or _c == 0x09

cdef bytes _M_GET = b"GET"
cdef bytes _M_PUT = b"PUT"
cdef bytes _M_HEAD = b"HEAD"
cdef bytes _M_POST = b"POST"
cdef bytes _M_PATCH = b"PATCH"
cdef bytes _M_DELETE = b"DELETE"
cdef bytes _M_OPTIONS = b"OPTIONS"


cdef object _plain_method(const char* s, Py_ssize_t n):
    if n == 3:
        if memcmp(s, b"GET", 3) == 0:
            return _M_GET
        if memcmp(s, b"PUT", 3) == 0:
            return _M_PUT
    elif n == 4:
        if memcmp(s, b"HEAD", 4) == 0:
            return _M_HEAD
        if memcmp(s, b"POST", 4) == 0:
            return _M_POST
    elif n == 5:
        if memcmp(s, b"PATCH", 5) == 0:
            return _M_PATCH
    elif n == 6:
        if memcmp(s, b"DELETE", 6) == 0:
            return _M_DELETE
    elif n == 7:
        if memcmp(s, b"OPTIONS", 7) == 0:
            return _M_OPTIONS
    return None


cdef inline bint _all_in(const unsigned char* table, const char* s, Py_ssize_t a, Py_ssize_t b) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(a, b):
        if not table[<unsigned char>s[i]]:
            return False
    return True


cdef inline bint _visible(const char* s, Py_ssize_t a, Py_ssize_t b) noexcept nogil:
    """_all_in(_VALUEC, ...) eight bytes at a time: a word with no byte below 0x20 and none above 0x7E
    is visible ASCII and spaces throughout; a word with one (a tab, or a byte to refuse) is looked at
    byte by byte."""
    cdef uint64_t w
    while a + 8 <= b:
        memcpy(&w, s + a, 8)
        # Some byte < 0x20, some byte > 0x7E (the "hasless"/"hasmore" word tricks; exact as tests).
        if ((w - 0x2020202020202020ULL) & ~w & 0x8080808080808080ULL) or (
            ((w + 0x0101010101010101ULL) | w) & 0x8080808080808080ULL
        ):
            if not _all_in(_VALUEC, s, a, a + 8):
                return False
        a += 8
    return _all_in(_VALUEC, s, a, b)


cdef int _connection_flags(const char* v, Py_ssize_t vn) noexcept nogil:
    """Bits of the Connection tokens llhttp acts on: 1 close, 2 keep-alive, 4 upgrade."""
    cdef const char* p = v
    cdef const char* t
    cdef Py_ssize_t tn
    cdef int flags = 0
    while _next_token(&p, v + vn, &t, &tn):
        if tn == 5 and _ieq(t, b"close", 5):
            flags |= 1
        elif tn == 10 and _ieq(t, b"keep-alive", 10):
            flags |= 2
        elif tn == 7 and _ieq(t, b"upgrade", 7):
            flags |= 4
    return flags


cdef int _plain_fields(const char* s, Py_ssize_t pos, Py_ssize_t limit, const unsigned char* tchar, HdrBuf* b,
                       Py_ssize_t* end, int* conn, long long* length) except -1:
    """Reads the header lines from pos up to the empty line into b; 1 with end just past it, 0 when
    the head is not plain or not whole before limit. Names must be all tchar (_TCHAR, or _RTCHAR for a
    request). Sets the Connection bits and the Content-Length (-1 when there is none)."""
    cdef Py_ssize_t eol, colon, va, vlen
    cdef const char* p
    cdef Hdr* h
    length[0] = -1
    while True:
        eol = _find_crlf(s, pos, limit)
        if eol < 0:
            return 0
        if eol == pos:
            end[0] = pos + 2
            return 1
        p = <const char*>memchr(s + pos, 58, <size_t>(eol - pos))
        if p == NULL or p == s + pos:
            return 0
        colon = p - s
        va = colon + 1
        while va < eol and (s[va] == 32 or s[va] == 9):
            va += 1
        if not _all_in(tchar, s, pos, colon) or not _visible(s, va, eol):
            return 0
        h = _push(b)
        h.name = s + pos
        h.nlen = colon - pos
        h.value = s + va
        h.vlen = eol - va
        h.flags = 0
        b.n += 1
        if h.nlen == 14 and _ieq(h.name, b"content-length", 14):
            if length[0] >= 0:
                return 0
            vlen = h.vlen
            while vlen and (h.value[vlen - 1] == 32 or h.value[vlen - 1] == 9):
                vlen -= 1  # RFC 9110 §5.5: OWS around a value is not part of it (the field keeps it, as llhttp's)
            length[0] = _digits(h.value, vlen)
            if length[0] < 0:
                return 0
        elif h.nlen == 10 and _ieq(h.name, b"connection", 10):
            conn[0] |= _connection_flags(h.value, h.vlen)
            if conn[0] & 4:
                return 0
        elif (
            (h.nlen == 17 and _ieq(h.name, b"transfer-encoding", 17))
            or (h.nlen == 7 and _ieq(h.name, b"upgrade", 7))
            or (h.nlen == 16 and _ieq(h.name, b"proxy-connection", 16))
        ):
            return 0
        pos = eol + 2


cdef Py_ssize_t _first_line(object data, Py_ssize_t start, Py_ssize_t max_head, Py_ssize_t* limit) except -2:
    """Checks the arguments of the two readers; sets limit (the head must end before it) and returns
    where the head's first line ends, -1 when not before limit."""
    cdef Py_ssize_t n
    _need_bytes(data, "data")
    n = PyBytes_GET_SIZE(data)
    if start < 0 or start > n:
        raise ValueError("start outside the buffer")
    limit[0] = start + max_head if max_head < n - start else n
    return _find_crlf(PyBytes_AS_STRING(data), start, limit[0])


cpdef object read_request_head(object data, Py_ssize_t start, Py_ssize_t max_head, Py_ssize_t max_headers):
    """See ``fsmfast.codec.http1.read_request_head``."""
    cdef const char* s
    cdef Py_ssize_t limit, line_end, sp, target_end, end, i
    cdef const char* p
    cdef int conn = 0
    cdef long long length
    cdef bint http11
    cdef HdrBuf b
    cdef list headers
    cdef Hdr* h
    line_end = _first_line(data, start, max_head, &limit)
    s = PyBytes_AS_STRING(data)
    if line_end < 0:
        return None
    p = <const char*>memchr(s + start, 32, <size_t>(line_end - start))
    if p == NULL:
        return None
    sp = p - s
    method = _plain_method(s + start, sp - start)
    target_end = line_end - 9
    if method is None or target_end <= sp + 1 or s[target_end] != 32 or s[sp + 1] != 47:
        return None
    if memcmp(s + target_end + 1, b"HTTP/1.", 7) != 0 or (s[line_end - 1] != 49 and s[line_end - 1] != 48):
        return None
    http11 = s[line_end - 1] == 49
    if not _all_in(_TARGETC, s, sp + 1, target_end):
        return None
    _buf_init(&b)
    try:
        if not _plain_fields(s, line_end + 2, limit, _RTCHAR, &b, &end, &conn, &length) or b.n > max_headers:
            return None
        headers = []
        for i in range(b.n):
            h = &b.h[i]
            headers.append((PyBytes_FromStringAndSize(h.name, h.nlen), PyBytes_FromStringAndSize(h.value, h.vlen)))
    finally:
        _buf_free(&b)
    return (
        end,
        method,
        PyBytes_FromStringAndSize(s + sp + 1, target_end - sp - 1),
        http11,
        headers,
        not (conn & 1) if http11 else (conn & 2) != 0,
    )


cpdef object read_response_head(object data, Py_ssize_t start, Py_ssize_t max_head, ResponseHead head=None):
    """See ``fsmfast.codec.http1.read_response_head``."""
    cdef const char* s
    cdef Py_ssize_t limit, line_end, end, i, vlen
    cdef int conn = 0, status
    cdef long long length
    cdef Hdr* h
    cdef bint ok
    cdef HdrBuf* b
    if head is None:
        head = _SCRATCH
    head.buf = None
    line_end = _first_line(data, start, max_head, &limit)
    s = PyBytes_AS_STRING(data)
    if (
        line_end - start < 12
        or memcmp(s + start, b"HTTP/1.", 7) != 0
        or (s[start + 7] != 48 and s[start + 7] != 49)
        or s[start + 8] != 32
        or _digits(s + start + 9, 3) < 0
        or (line_end - start > 12 and s[start + 12] != 32)
        or not _visible(s, start + 13, line_end)
    ):
        return None
    status = <int>_digits(s + start + 9, 3)
    if status < 200 or status > 599 or status == 204 or status == 304:
        return None
    b = &head.fields
    b.n = 0
    ok = _plain_fields(s, line_end + 2, limit, _TCHAR, b, &end, &conn, &length)
    if not ok or length < 0:
        return None
    # Kept for relay_response_head, as its own reading (_load_raw) would leave them: values trimmed at
    # both ends, names classified. The status line is the one checked above.
    for i in range(b.n):
        h = &b.h[i]
        vlen = h.vlen
        while vlen and (h.value[vlen - 1] == 32 or h.value[vlen - 1] == 9):
            vlen -= 1
        h.vlen = vlen
        h.flags = _classify(h.name, h.nlen)
    if head is not _SCRATCH:
        head.buf = data
    head.start = start
    head.end = end - 4
    head.status = status
    head.reason_at = start + 13 if line_end - start > 12 else line_end
    head.reason_len = line_end - head.reason_at
    return end, status, length, not (conn & 1) if s[start + 7] == 49 else (conn & 2) != 0
