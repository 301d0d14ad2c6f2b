# context.pyx - the per-request Context, and the context variable through
# which calls made inside a handler inherit its deadline and metadata.
#
# Uses: nothing of the core's (CLOCK_MONOTONIC through posix.time).

from posix.time cimport clock_gettime, timespec, CLOCK_MONOTONIC
import contextvars as _contextvars
import time as _time

# time.monotonic() is CLOCK_MONOTONIC on Linux: the same clock as monotonic().
CURRENT = _contextvars.ContextVar("zmicro.context")
from types import MappingProxyType as _MappingProxyType
cdef object _EMPTY_METADATA = _MappingProxyType({})


cdef double monotonic() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return <double>ts.tv_sec + <double>ts.tv_nsec * 1e-9


@cython.freelist(64)
@cython.auto_pickle(False)
cdef class Context:
    """The request a handler serves: who called what, until when.

    ``deadline`` is an absolute ``time.monotonic()`` value (None: the caller
    set none); ``time_remaining()`` the seconds left. ``metadata`` is the
    caller's (read-only mapping of str to bytes). ``cancelled`` turns true
    when the caller cancels or gives up; an async handler's task is then
    cancelled too. Calls a handler makes through zmicro's clients inherit
    this deadline and metadata, also from blocking and async handlers.
    """

    def __init__(self):
        raise TypeError("Context objects are made by the server")

    @property
    def deadline(self):
        return self.deadline_at if self.deadline_at > 0 else None

    def time_remaining(self):
        """Seconds until the deadline (may be negative), or None."""
        if self.deadline_at <= 0:
            return None
        return self.deadline_at - monotonic()

    @property
    def expired(self):
        return self.deadline_at > 0 and monotonic() >= self.deadline_at

    @property
    def metadata(self):
        if self._metadata is None:
            return _EMPTY_METADATA
        return _MappingProxyType(self._metadata)

    @property
    def principal(self):
        """Who is calling (zmicro.auth.Principal): the caller's key, named
        and given roles by the allowlist, refined by the service's security
        interceptors (an end user's token). None in insecure mode."""
        if self._principal is None and self._resolve is not None:
            self._principal = self._resolve(self.user_id)
        return self._principal

    @principal.setter
    def principal(self, value):
        self._principal = value

    @property
    def cancelled(self):
        return self._cancelled

    @property
    def trace_id(self):
        return (<object>self.trace_hi << 64) | self.trace_lo

    cdef void _cancel(self):
        self._cancelled = True
        if self._task is not None:
            self._task.cancel()

    def __repr__(self):
        left = self.time_remaining()
        left = "none" if left is None else f"{left:.3f}s"
        return (f"<Context {self.service}/{self.endpoint} id={self.request_id} "
                f"deadline={left} cancelled={self._cancelled}>")


def _test_context(*, str service="svc", str endpoint="Svc.Call", uint64_t request_id=1,
                  dict metadata=None, principal=None, timeout=None, bytes peer=b"peer",
                  str content_type="application/msgpack", str user_id=None):
    """A Context as a server would make it, for unit tests of interceptors."""
    cdef Context ctx = Context.__new__(Context)
    ctx.service = service
    ctx.endpoint = endpoint
    ctx.request_id = request_id
    ctx.peer = peer
    ctx.content_type = content_type
    ctx._principal = principal
    ctx.user_id = user_id
    ctx._metadata = {k: (v.encode() if type(v) is str else v)
                     for k, v in metadata.items()} if metadata else None
    ctx.deadline_at = monotonic() + timeout if timeout is not None else 0.0
    return ctx


def current_context():
    """The Context of the handler running in this task or thread, or None."""
    return CURRENT.get(None)
