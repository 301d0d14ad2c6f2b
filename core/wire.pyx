# wire.pyx - Header objects <-> wire bytes, through src/zm_wire.c, and the
# text helpers every file uses to point a zm_header at Python strings.
#
# Uses: errors.pyx (raise_zm), src/zm_wire.h, src/zm_limits.h.
#
# The C reader and writer do all parsing and validation; this file only moves
# values between a zm_header on the stack and a Header object. The Python
# objects made here (the Header, its strings, bytes and dict) are the only
# allocations of a decode.

cdef extern from "Python.h":
    const char *PyUnicode_AsUTF8AndSize(object s, Py_ssize_t *size) except NULL
    object PyUnicode_DecodeUTF8(const char *s, Py_ssize_t size, const char *errors)

WIRE_VERSION = ZM_WIRE_VERSION
MAX_HEADER = ZM_WIRE_MAX_HEADER
MAX_NAME = ZM_WIRE_MAX_NAME
MAX_VALUE = ZM_WIRE_MAX_VALUE
MAX_METADATA = ZM_WIRE_MAX_METADATA
FLAG_SIGNED = ZM_FLAG_SIGNED
FLAG_BODY_INLINE = ZM_FLAG_BODY_INLINE
FLAG_MAC_TRAILER = ZM_FLAG_MAC_TRAILER
FLAG_NOT_PROCESSED = ZM_FLAG_NOT_PROCESSED

cdef uint64_t _U64 = 0xFFFFFFFFFFFFFFFF


cdef inline str _text(zm_slice s):
    if s.len == 0:
        return ""
    return PyUnicode_DecodeUTF8(<const char *>s.ptr, <Py_ssize_t>s.len, NULL)


cdef inline bytes _data(zm_slice s):
    if s.len == 0:
        return b""
    return PyBytes_FromStringAndSize(<const char *>s.ptr, <Py_ssize_t>s.len)


cdef inline int _slice_text(str s, zm_slice *out) except -1:
    cdef Py_ssize_t n = 0
    out.ptr = NULL
    out.len = 0
    if s is None or not s:
        return 0
    try:
        out.ptr = <const uint8_t *>PyUnicode_AsUTF8AndSize(s, &n)
    except UnicodeEncodeError:  # lone surrogates have no UTF-8 form
        raise_zm(ZM_E_TEXT_UTF8)
    out.len = <size_t>n
    return 0


cdef inline int _slice_data(bytes b, zm_slice *out) except -1:
    out.ptr = NULL
    out.len = 0
    if b is not None:
        out.ptr = <const uint8_t *>PyBytes_AS_STRING(b)
        out.len = <size_t>PyBytes_GET_SIZE(b)
    return 0


cdef int fill_metadata(dict metadata, zm_header *h) except -1:
    """Point h.metadata at the entries of `metadata` (str keys; bytes
    values, or str sent as UTF-8). Borrowed: keep the dict alive and
    unchanged until the header is written."""
    cdef uint32_t i = 0
    h.n_metadata = 0
    if not metadata:
        return 0
    if len(metadata) > ZM_WIRE_MAX_METADATA:
        raise_zm(ZM_E_METADATA_COUNT)
    for key, value in metadata.items():
        if type(key) is not str:
            raise TypeError(f"metadata keys are str, got {type(key).__name__}")
        _slice_text(key, &h.metadata[i].key)
        if type(value) is bytes:
            _slice_data(value, &h.metadata[i].value)
        elif type(value) is str:
            _slice_text(value, &h.metadata[i].value)
        else:
            raise TypeError(f"metadata values are bytes or str, got {type(value).__name__}"
                            f" for {key!r}")
        i += 1
    h.n_metadata = i
    return 0


cdef class Header:
    """The zmicro wire header: one Cap'n Proto ``Header`` (``wire.capnp``).

    Fields are typed: integers are range-checked on assignment, texts are
    ``str``, ``nonce`` is ``bytes``, ``metadata`` maps ``str`` keys to
    ``bytes`` values. ``trace_id`` is the 128-bit W3C trace id as an int.
    """

    def __init__(self, *, uint16_t version=ZM_WIRE_VERSION, uint16_t kind=0,
                 uint32_t flags=0, uint64_t request_id=0,
                 uint64_t deadline_us=0, uint16_t status=0,
                 uint32_t key_id=0, uint64_t timestamp_us=0, trace_id=0,
                 uint64_t span_id=0, str content_type="", str service="",
                 str endpoint="", dict metadata=None, bytes nonce=b"",
                 str principal="", str detail="", uint32_t max_reply_size=0):
        self.version = version
        self.kind = kind
        self.flags = flags
        self.request_id = request_id
        self.deadline_us = deadline_us
        self.status = status
        self.key_id = key_id
        self.timestamp_us = timestamp_us
        self.trace_id = trace_id
        self.span_id = span_id
        self.content_type = content_type
        self.service = service
        self.endpoint = endpoint
        self.metadata = {} if metadata is None else metadata
        self.nonce = nonce
        self.principal = principal
        self.detail = detail
        self.max_reply_size = max_reply_size

    @property
    def trace_id(self):
        """The 128-bit W3C trace id (0 = none)."""
        return (<object>self.trace_hi << 64) | self.trace_lo

    @trace_id.setter
    def trace_id(self, value):
        if not 0 <= value < (1 << 128):
            raise OverflowError("trace_id must fit in 128 unsigned bits")
        self.trace_hi = <uint64_t>(value >> 64)
        self.trace_lo = <uint64_t>(value & _U64)

    @staticmethod
    cdef Header _from_c(const zm_header *h):
        cdef Header self = Header.__new__(Header)
        cdef dict metadata = {}
        cdef uint32_t i
        self.version = h.version
        self.kind = h.kind
        self.flags = h.flags
        self.request_id = h.request_id
        self.deadline_us = h.deadline_us
        self.status = h.status
        self.key_id = h.key_id
        self.timestamp_us = h.timestamp_us
        self.trace_hi = h.trace_hi
        self.trace_lo = h.trace_lo
        self.span_id = h.span_id
        self.content_type = _text(h.content_type)
        self.service = _text(h.service)
        self.endpoint = _text(h.endpoint)
        self.nonce = _data(h.nonce)
        self.principal = _text(h.principal)
        self.detail = _text(h.detail)
        self.max_reply_size = h.max_reply
        for i in range(h.n_metadata):
            metadata[_text(h.metadata[i].key)] = _data(h.metadata[i].value)
        self.metadata = metadata
        return self

    cdef int _to_c(self, zm_header *h) except -1:
        """Point *h at this header's values (borrowed: keep self alive)."""
        h.version = self.version
        h.kind = self.kind
        h.flags = self.flags
        h.request_id = self.request_id
        h.deadline_us = self.deadline_us
        h.status = self.status
        h.key_id = self.key_id
        h.timestamp_us = self.timestamp_us
        h.trace_hi = self.trace_hi
        h.trace_lo = self.trace_lo
        h.span_id = self.span_id
        h.max_reply = self.max_reply_size
        _slice_text(self.content_type, &h.content_type)
        _slice_text(self.service, &h.service)
        _slice_text(self.endpoint, &h.endpoint)
        _slice_data(self.nonce, &h.nonce)
        _slice_text(self.principal, &h.principal)
        _slice_text(self.detail, &h.detail)
        fill_metadata(self.metadata, h)
        return 0

    def encode(self):
        """The canonical wire bytes of this header."""
        cdef zm_header h
        cdef size_t size, written = 0
        cdef bytes out
        self._to_c(&h)
        size = zm_wire_size(&h)
        if size > ZM_WIRE_MAX_HEADER:
            raise_zm(zm_wire_write(&h, NULL, 0, &written))
        out = PyBytes_FromStringAndSize(NULL, <Py_ssize_t>size)
        rc = zm_wire_write(&h, <uint8_t *>PyBytes_AS_STRING(out), size, &written)
        if rc != ZM_OK:
            raise_zm(rc)
        return out

    def _fields(self):
        return (self.version, self.kind, self.flags, self.request_id,
                self.deadline_us, self.status, self.key_id, self.timestamp_us,
                self.trace_id, self.span_id, self.content_type, self.service,
                self.endpoint, self.metadata or {}, self.nonce, self.principal,
                self.detail, self.max_reply_size)

    def __eq__(self, other):
        if not isinstance(other, Header):
            return NotImplemented
        return self._fields() == (<Header>other)._fields()

    __hash__ = None

    def __repr__(self):
        names = ("version", "kind", "flags", "request_id", "deadline_us",
                 "status", "key_id", "timestamp_us", "trace_id", "span_id",
                 "content_type", "service", "endpoint", "metadata", "nonce",
                 "principal", "detail", "max_reply_size")
        parts = [f"{n}={v!r}" for n, v in zip(names, self._fields()) if v]
        return f"Header({', '.join(parts)})"


def decode_header(data):
    """Parse wire bytes (any contiguous buffer) into a Header.

    Raises WireError, whose ``code`` names the reason, for anything that is
    not a valid header.
    """
    cdef zm_header h
    cdef Py_buffer view
    cdef int rc
    if type(data) is bytes:
        rc = zm_wire_read(<const uint8_t *>PyBytes_AS_STRING(data),
                          <size_t>PyBytes_GET_SIZE(data), &h)
        if rc != ZM_OK:
            raise_zm(rc)
        return Header._from_c(&h)
    PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
    try:
        rc = zm_wire_read(<const uint8_t *>view.buf, <size_t>view.len, &h)
        if rc != ZM_OK:
            raise_zm(rc)
        return Header._from_c(&h)
    finally:
        PyBuffer_Release(&view)


def utf8_valid(data):
    """True if `data` is well-formed UTF-8 by the C reader's rules."""
    cdef const unsigned char[::1] view = data
    if view.shape[0] == 0:
        return True
    return bool(zm_utf8_valid(&view[0], <size_t>view.shape[0]))
