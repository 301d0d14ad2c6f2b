# errors.pyx - the one place where native error codes become exceptions.
#
# libzmq reports errno values (zmq_errno); src/ reports zm_err codes. Every
# core function that fails calls one of the two raisers below.

from libc.errno cimport EAGAIN, EINTR, EHOSTUNREACH, ENOTSOCK

from zmicro import errors as _errors

cdef object WireError = _errors.WireError
cdef object MacError = _errors.MacError
cdef object TransportError = _errors.TransportError
cdef object WouldBlock = _errors.WouldBlock
cdef object ContextTerminated = _errors.ContextTerminated
cdef object SocketClosed = _errors.SocketClosed
cdef object HostUnreachable = _errors.HostUnreachable

# gRPC status codes as C ints, for the server and client (one set per module).
cdef int C_OK = _errors.Code.OK
cdef int C_CANCELLED = _errors.Code.CANCELLED
cdef int C_INVALID_ARGUMENT = _errors.Code.INVALID_ARGUMENT
cdef int C_DEADLINE_EXCEEDED = _errors.Code.DEADLINE_EXCEEDED
cdef int C_RESOURCE_EXHAUSTED = _errors.Code.RESOURCE_EXHAUSTED
cdef int C_UNIMPLEMENTED = _errors.Code.UNIMPLEMENTED
cdef int C_INTERNAL = _errors.Code.INTERNAL
cdef int C_UNAVAILABLE = _errors.Code.UNAVAILABLE
cdef int C_UNAUTHENTICATED = _errors.Code.UNAUTHENTICATED


cdef int raise_zm(int code) except -1:
    """Raise the exception for a src/ zm_err code."""
    cdef str text = zm_strerror(code).decode("ascii")
    if ZM_E_MAC_ALG <= code <= ZM_E_MAC_API:
        raise MacError(code, text)
    raise WireError(code, text)


cdef int raise_errno(int err) except -1:
    """Raise the exception for a libzmq errno."""
    cdef str text = ZMQ.strerror(err).decode("utf-8", "replace")
    if err == EAGAIN:
        raise WouldBlock(err, text)
    if err == ZM_ETERM:
        raise ContextTerminated(err, text)
    if err == ENOTSOCK:
        raise SocketClosed(err, text)
    if err == EHOSTUNREACH:
        raise HostUnreachable(err, text)
    raise TransportError(err, text)


cdef int check_zmq(int rc) except -1:
    """Raise for a failed libzmq call (rc < 0); EINTR is the caller's."""
    if rc < 0:
        raise_errno(ZMQ.errno_())
    return rc


def _error_codes():
    """The zm_err codes compiled into the core, for the enum's test."""
    return {
        "SHORT": ZM_E_SHORT, "TOO_BIG": ZM_E_TOO_BIG,
        "SEGMENTS": ZM_E_SEGMENTS, "SEGMENT_SIZE": ZM_E_SEGMENT_SIZE,
        "FAR_POINTER": ZM_E_FAR_POINTER, "POINTER_KIND": ZM_E_POINTER_KIND,
        "BOUNDS": ZM_E_BOUNDS, "TRAVERSAL": ZM_E_TRAVERSAL,
        "TEXT_NUL": ZM_E_TEXT_NUL, "TEXT_UTF8": ZM_E_TEXT_UTF8,
        "TEXT_SIZE": ZM_E_TEXT_SIZE, "METADATA_COUNT": ZM_E_METADATA_COUNT,
        "METADATA_KEY": ZM_E_METADATA_KEY, "BUFFER": ZM_E_BUFFER,
        "NO_HEADER": ZM_E_NO_HEADER, "FRAME_COUNT": ZM_E_FRAME_COUNT,
        "VERSION": ZM_E_VERSION, "KIND": ZM_E_KIND,
        "MAC_FRAME": ZM_E_MAC_FRAME, "ROUTING_ID": ZM_E_ROUTING_ID,
        "INLINE_BODY": ZM_E_INLINE_BODY,
        "MAC_ALG": ZM_E_MAC_ALG, "MAC_KEY": ZM_E_MAC_KEY,
        "MAC_MISMATCH": ZM_E_MAC_MISMATCH, "MAC_API": ZM_E_MAC_API,
    }


def _raise_errno(int err):
    """Raise what a libzmq errno maps to (for tests of the mapping)."""
    raise_errno(err)
