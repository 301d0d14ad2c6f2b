# errors.pyx - the one place where native error codes become exceptions,
# and the owner of the error types and status codes the core raises.
#
# Uses: native.pyx (ZMQ.strerror), src/ (zm_strerror); zmicro.errors, which
# imports nothing from the core.
#
# libzmq reports errno values (zmq_errno); src/ reports zm_err codes. Every
# core function that fails calls one of the two raisers below. Errors that
# cross the wire are RPCError with a gRPC status code: the C ints below are
# read from zmicro.errors.Code once, so the two never disagree.

from libc.errno cimport EAGAIN, EINTR, EHOSTUNREACH, ENOTSOCK

from zmicro import errors as _errors

cdef object WireError = _errors.WireError
cdef object MacError = _errors.MacError
cdef object TransportError = _errors.TransportError
cdef object WouldBlock = _errors.WouldBlock
cdef object ContextTerminated = _errors.ContextTerminated
cdef object SocketClosed = _errors.SocketClosed
cdef object HostUnreachable = _errors.HostUnreachable
cdef object _RPCError = _errors.RPCError
cdef object _Code = _errors.Code

# gRPC status codes as C ints (zmicro.errors.Code).
cdef int C_OK = _Code.OK
cdef int C_CANCELLED = _Code.CANCELLED
cdef int C_UNKNOWN = _Code.UNKNOWN
cdef int C_INVALID_ARGUMENT = _Code.INVALID_ARGUMENT
cdef int C_DEADLINE_EXCEEDED = _Code.DEADLINE_EXCEEDED
cdef int C_RESOURCE_EXHAUSTED = _Code.RESOURCE_EXHAUSTED
cdef int C_FAILED_PRECONDITION = _Code.FAILED_PRECONDITION
cdef int C_UNIMPLEMENTED = _Code.UNIMPLEMENTED
cdef int C_INTERNAL = _Code.INTERNAL
cdef int C_UNAVAILABLE = _Code.UNAVAILABLE
cdef int C_UNAUTHENTICATED = _Code.UNAUTHENTICATED
cdef int C_CODES = 17          # codes 0..16; anything else is counted as UNKNOWN


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


# -- the RPCErrors the core makes itself ---------------------------------------


cdef object unsent(str detail):
    """UNAVAILABLE for a request that never left this client: safe to
    retry anywhere, and free for the retry budget (no server saw it)."""
    exc = _RPCError(C_UNAVAILABLE, detail, processed=False)
    exc._unsent = True
    return exc


cdef inline bint is_unsent(exc):
    return getattr(exc, "_unsent", False)


cdef object lost(str address):
    """The connection that carried a request went away: its answer will
    never come, and the request may have run."""
    exc = _RPCError(C_UNAVAILABLE,
                    f"the connection to {address} was lost while the call was in "
                    f"flight (it may have been processed)", processed=None)
    exc._lost = True
    return exc


cdef inline bint is_lost(exc):
    return getattr(exc, "_lost", False)


cdef object undecodable(exc):
    """A reply that does not decode: the server sent what the caller did not
    expect (gRPC calls this INTERNAL too)."""
    if isinstance(exc, _RPCError):
        return exc
    return _RPCError(C_INTERNAL, f"the reply does not decode: {exc}")


cdef object too_large(str what, size_t size, size_t limit, bint processed):
    """RESOURCE_EXHAUSTED for a message that would break a peer's
    max_message_size. libzmq's MAXMSGSIZE is per frame and drops the whole
    connection, with every call on it: the sender refuses it instead."""
    return _RPCError(C_RESOURCE_EXHAUSTED,
                     f"the {what} is {size} bytes in one frame, over the "
                     f"max_message_size of {limit} bytes", processed=processed)


cdef object answer_refused(str address):
    """An answer that failed the MAC checks (section 7 of protocol.md)."""
    return _RPCError(C_UNAUTHENTICATED,
                     f"the reply from {address} failed authentication (do client and "
                     f"server share the MAC secrets, mac.keys, and agree on the time?)",
                     processed=None)


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
