# cython: language_level=3, boundscheck=False, wraparound=False
"""TLS records of an established connection, sealed and opened by OpenSSL directly.

The pure-Python twin, with the same API and behaviour, is ``fsmfast.tls.records``; the
tests run both over the same handshakes.

Why: once a handshake is over, each request costs one SSL_read and one SSL_write. Through
``ssl.SSLObject`` each is a Python-level call that releases and retakes the GIL, allocates
its result at the largest size asked (uvloop asks for 256 KiB) and shrinks it, and checks the
memory BIOs through more Python calls; for a small request that glue costs about as much as
OpenSSL's own work. Here the same calls are C calls on the same ``SSL`` object.

How, without linking OpenSSL: the handshake still runs in Python's ``ssl`` (SNI callback,
verification, sessions), and its ``SSL *`` is read from the ``_ssl._SSLSocket`` behind the
SSLObject. The functions are looked up in the OpenSSL that ``_ssl`` itself is linked with
(ctypes reopens the loaded ``_ssl`` module and ``dlsym`` searches its dependencies), so a
wheel carries no OpenSSL of its own and can never mix two. ctypes rather than ``dlopen`` from
here: since glibc 2.34 a direct call binds to ``dlopen@GLIBC_2.34``, and the wheel would no
longer be manylinux_2_17. The pointer is trusted only after two
checks: OpenSSL's app data of that ``SSL`` is the ``_SSLSocket`` itself (``_ssl`` sets it so),
and its BIOs are the ones of the MemoryBIOs given. Anything else (another interpreter, a
static OpenSSL whose symbols are hidden) raises ``Unavailable`` and the twin is used.

The worker is single-threaded: the GIL is held throughout, and one static buffer receives
plaintext before it is copied into the bytes returned.
"""

import ctypes
import os
import ssl
import sys

import _ssl

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer


cdef extern from *:
    """
    /* The head of CPython's PySSLSocket and PySSLMemoryBIO (Modules/_ssl.c, unchanged from
       3.7 to 3.14): the pointers are checked against each other before use (see above). */
    typedef struct { PyObject_HEAD PyObject *Socket; void *ssl; } fsmfast_PySSLSocket;
    typedef struct { PyObject_HEAD void *bio; } fsmfast_PySSLMemoryBIO;
    static void *fsmfast_ssl_of(PyObject *o) { return ((fsmfast_PySSLSocket *)o)->ssl; }
    static void *fsmfast_bio_of(PyObject *o) { return ((fsmfast_PySSLMemoryBIO *)o)->bio; }
    """
    void *fsmfast_ssl_of(object o)
    void *fsmfast_bio_of(object o)


ctypedef int (*ssl_rw_f)(void *ssl, void *buf, size_t num, size_t *done) noexcept nogil
ctypedef int (*ssl_int_f)(void *ssl) noexcept nogil
ctypedef int (*ssl_const_int_f)(const void *ssl) noexcept nogil
ctypedef int (*ssl_get_error_f)(const void *ssl, int ret) noexcept nogil
ctypedef void *(*ssl_get_ptr_f)(const void *ssl) noexcept nogil
ctypedef void *(*ssl_get_ex_data_f)(const void *ssl, int idx) noexcept nogil
ctypedef int (*bio_rw_f)(void *bio, void *buf, int num) noexcept nogil
ctypedef size_t (*bio_pending_f)(void *bio) noexcept nogil
ctypedef unsigned long (*err_get_f)() noexcept nogil
ctypedef void (*err_clear_f)() noexcept nogil
ctypedef const char *(*err_string_f)(unsigned long e) noexcept nogil

cdef ssl_rw_f SSL_read_ex = NULL
cdef ssl_rw_f SSL_write_ex = NULL
cdef ssl_get_error_f SSL_get_error = NULL
cdef ssl_get_ptr_f SSL_get_rbio = NULL
cdef ssl_get_ptr_f SSL_get_wbio = NULL
cdef ssl_get_ex_data_f SSL_get_ex_data = NULL
cdef ssl_int_f SSL_shutdown = NULL
cdef ssl_const_int_f SSL_pending = NULL
cdef bio_rw_f BIO_write = NULL
cdef bio_rw_f BIO_read = NULL
cdef bio_pending_f BIO_ctrl_pending = NULL
cdef err_get_f ERR_peek_error = NULL
cdef err_get_f ERR_peek_last_error = NULL
cdef err_clear_f ERR_clear_error = NULL
cdef err_string_f ERR_reason_error_string = NULL

# OpenSSL's SSL_get_error results.
cdef enum:
    SSL_ERROR_SSL = 1
    SSL_ERROR_WANT_READ = 2
    SSL_ERROR_ZERO_RETURN = 6

# A TLS record carries at most 16 KiB of plaintext; a few records per read into one buffer.
cdef enum:
    READ_BUFFER = 65536
cdef char read_buffer[READ_BUFFER]


class Unavailable(Exception):
    """This interpreter's ``ssl`` cannot be driven from here; use the pure-Python twin."""


cdef void *_symbol(lib, str name) except NULL:
    try:
        address = ctypes.cast(getattr(lib, name), ctypes.c_void_p).value
    except AttributeError:
        address = None
    if not address:
        raise Unavailable(f"{name} is not visible in the OpenSSL of _ssl")
    return <void *><size_t>address


cdef str _load():
    """Finds OpenSSL's functions; returns why it cannot, or None."""
    global SSL_read_ex, SSL_write_ex, SSL_get_error, SSL_get_rbio, SSL_get_wbio, SSL_get_ex_data
    global SSL_shutdown, SSL_pending, ERR_peek_error, BIO_write, BIO_read, BIO_ctrl_pending, ERR_peek_last_error, ERR_clear_error
    global ERR_reason_error_string
    if sys.implementation.name != "cpython" or not (3, 10) <= sys.version_info[:2] <= (3, 14):
        return f"{sys.implementation.name} {sys.version_info[:2]} is not a known layout of _ssl"
    path = getattr(_ssl, "__file__", None)
    if not path:
        return "_ssl is built into the interpreter"
    try:
        lib = ctypes.CDLL(path, mode=os.RTLD_LAZY | os.RTLD_NOLOAD)
    except OSError as exc:
        return f"cannot reopen _ssl: {exc}"
    try:
        SSL_read_ex = <ssl_rw_f>_symbol(lib, "SSL_read_ex")
        SSL_write_ex = <ssl_rw_f>_symbol(lib, "SSL_write_ex")
        SSL_get_error = <ssl_get_error_f>_symbol(lib, "SSL_get_error")
        SSL_get_rbio = <ssl_get_ptr_f>_symbol(lib, "SSL_get_rbio")
        SSL_get_wbio = <ssl_get_ptr_f>_symbol(lib, "SSL_get_wbio")
        SSL_get_ex_data = <ssl_get_ex_data_f>_symbol(lib, "SSL_get_ex_data")
        SSL_shutdown = <ssl_int_f>_symbol(lib, "SSL_shutdown")
        SSL_pending = <ssl_const_int_f>_symbol(lib, "SSL_pending")
        BIO_write = <bio_rw_f>_symbol(lib, "BIO_write")
        BIO_read = <bio_rw_f>_symbol(lib, "BIO_read")
        BIO_ctrl_pending = <bio_pending_f>_symbol(lib, "BIO_ctrl_pending")
        ERR_peek_error = <err_get_f>_symbol(lib, "ERR_peek_error")
        ERR_peek_last_error = <err_get_f>_symbol(lib, "ERR_peek_last_error")
        ERR_clear_error = <err_clear_f>_symbol(lib, "ERR_clear_error")
        ERR_reason_error_string = <err_string_f>_symbol(lib, "ERR_reason_error_string")
    except Unavailable as exc:
        SSL_read_ex = NULL  # marks the module unusable
        return str(exc)
    return None


UNAVAILABLE = _load()


cdef inline void _clean_queue() noexcept:
    # SSL_get_error is only right over an empty error queue. Clearing it costs ~800 instructions
    # (all its slots), looking costs a tenth: clear only what something else left there.
    if ERR_peek_error():
        ERR_clear_error()


cdef object _error(str what, int code):
    """The ssl.SSLError for a failed call; empties OpenSSL's error queue."""
    # The last error is the one that says why (the first is often the EVP layer's "cipher
    # operation failed" under "decryption failed or bad record mac"), as Python's ssl reports.
    cdef unsigned long e = ERR_peek_last_error()
    cdef const char *reason = ERR_reason_error_string(e) if e else NULL
    ERR_clear_error()
    if reason != NULL:
        return ssl.SSLError(code, f"{what}: {reason.decode('latin-1')}")
    return ssl.SSLError(code, f"{what}: SSL_get_error {code}")


cdef class Records:
    """Plaintext in and out of one established TLS connection; ciphertext as bytes for its transport.

    ``unseal`` takes what the peer sent and returns the plaintext it completes (b"" when a
    record is still partial or only handshake messages came); ``closed`` turns true at the
    peer's close_notify. ``seal`` returns the records of some plaintext, preceded by anything
    OpenSSL queued on its own. ``outgoing`` is that queue alone (a TLS 1.3 key update answer,
    a session ticket): ``wants_write`` says when it is not empty. Errors are ``ssl.SSLError``.
    """

    # Attributes and C-level methods: see _records.pxd.

    def __init__(self, sslobj, incoming, outgoing):
        if UNAVAILABLE is not None:
            raise Unavailable(UNAVAILABLE)
        inner = getattr(sslobj, "_sslobj", None)
        if type(inner) is not _ssl._SSLSocket or type(incoming) is not _ssl.MemoryBIO or type(outgoing) is not _ssl.MemoryBIO:
            raise Unavailable("not an SSLObject over two MemoryBIOs")
        cdef void *p = fsmfast_ssl_of(inner)
        if p == NULL or SSL_get_ex_data(p, 0) != <void *>inner:
            raise Unavailable("the SSL object of _ssl is not where expected")
        if SSL_get_rbio(p) != fsmfast_bio_of(incoming) or SSL_get_wbio(p) != fsmfast_bio_of(outgoing):
            raise Unavailable("the BIOs of _ssl are not where expected")
        self.ssl = p
        self.rbio = fsmfast_bio_of(incoming)
        self.wbio = fsmfast_bio_of(outgoing)
        self.sslobj = sslobj
        self.closed = False
        self.wants_write = BIO_ctrl_pending(self.wbio) > 0

    cpdef bytes unseal(self, data):
        cdef Py_buffer view
        cdef size_t got = 0
        cdef size_t used = 0
        cdef int ok, code
        cdef list chunks = None
        if data:
            PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
            try:
                # A memory BIO grows as needed: it takes everything or fails on memory.
                if BIO_write(self.rbio, view.buf, <int>view.len) != view.len:
                    raise MemoryError("TLS input buffer")
            finally:
                PyBuffer_Release(&view)
        _clean_queue()
        while True:
            ok = SSL_read_ex(self.ssl, read_buffer + used, READ_BUFFER - used, &got)
            if ok:
                used += got
                if used == READ_BUFFER:
                    if chunks is None:
                        chunks = []
                    chunks.append(PyBytes_FromStringAndSize(read_buffer, used))
                    used = 0
                # Nothing left to decrypt: stop here rather than pay a read that fails with
                # want-read (a third of a record's cost). A partial record OpenSSL already holds
                # waits for its rest either way.
                if not SSL_pending(self.ssl) and not BIO_ctrl_pending(self.rbio):
                    break
                continue
            code = SSL_get_error(self.ssl, 0)
            if code == SSL_ERROR_WANT_READ:
                break
            if code == SSL_ERROR_ZERO_RETURN:
                self.closed = True
                break
            raise _error("TLS read failed", code)
        # Reading can make OpenSSL answer (a key update, an alert): the caller sends it.
        self.wants_write = BIO_ctrl_pending(self.wbio) > 0
        if chunks is None:
            return PyBytes_FromStringAndSize(read_buffer, used) if used else b""
        if used:
            chunks.append(PyBytes_FromStringAndSize(read_buffer, used))
        return b"".join(chunks)

    cpdef bytes seal(self, data):
        cdef Py_buffer view
        cdef size_t done = 0
        cdef int ok
        PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
        try:
            if view.len:
                _clean_queue()
                # Without SSL_MODE_ENABLE_PARTIAL_WRITE (Python never sets it) and with a
                # memory BIO that grows, a write takes everything or fails.
                ok = SSL_write_ex(self.ssl, view.buf, <size_t>view.len, &done)
                if not ok:
                    raise _error("TLS write failed", SSL_get_error(self.ssl, 0))
        finally:
            PyBuffer_Release(&view)
        return self._drain()

    cpdef bytes outgoing(self):
        return self._drain()

    cdef bytes _drain(self):
        cdef size_t n = BIO_ctrl_pending(self.wbio)
        self.wants_write = False
        if not n:
            return b""
        out = PyBytes_FromStringAndSize(NULL, <Py_ssize_t>n)
        if BIO_read(self.wbio, PyBytes_AS_STRING(out), <int>n) != <int>n:
            raise MemoryError("TLS output buffer")
        return out

    cpdef bytes close_notify(self):
        """Our close_notify (once; later calls return b""), after anything still queued."""
        _clean_queue()
        SSL_shutdown(self.ssl)  # 0: sent, the peer's not yet seen; 1: both; <0: already failed
        _clean_queue()
        return self._drain()
