"""zmicro's exceptions: one tree rooted at :class:`Error`.

Native failures become these exceptions in exactly one place, the core's
``errors.pyx``: libzmq errno values become :class:`TransportError` and its
subclasses, the C codec's ``zm_err`` codes become :class:`WireError` (bytes
that are not a valid zmicro message) or :class:`MacError` (an unusable MAC
algorithm or key). This module imports nothing from the core, so the core can
import it.

Errors that cross the wire are :class:`RPCError`: a :class:`Code` (gRPC's
canonical status codes), a detail text and an id (the service the error comes
from, go-micro's error id).
"""

from __future__ import annotations

import enum
from collections.abc import Callable

__all__ = [
    "Code",
    "Error",
    "EventRefused",
    "RPCError",
    "WireErrorCode",
    "WireError",
    "MacError",
    "TransportError",
    "WouldBlock",
    "ContextTerminated",
    "SocketClosed",
    "HostUnreachable",
]


class Error(Exception):
    """Base of every exception zmicro raises."""


class WireErrorCode(enum.IntEnum):
    """Why bytes were refused: the ``zm_err`` codes of ``src/zm_common.h``.

    The values are part of the protocol documentation and never change;
    ``tests/transport/test_binding.py`` checks them against the C enum.
    """

    __str__ = enum.Enum.__str__  # "WireErrorCode.BOUNDS", not "7"

    SHORT = 1
    TOO_BIG = 2
    SEGMENTS = 3
    SEGMENT_SIZE = 4
    FAR_POINTER = 5
    POINTER_KIND = 6
    BOUNDS = 7
    TRAVERSAL = 8
    TEXT_NUL = 9
    TEXT_UTF8 = 10
    TEXT_SIZE = 11
    METADATA_COUNT = 12
    METADATA_KEY = 13
    BUFFER = 14
    NO_HEADER = 20
    FRAME_COUNT = 21
    VERSION = 22
    KIND = 23
    MAC_FRAME = 24
    ROUTING_ID = 25
    INLINE_BODY = 26
    MAC_ALG = 30
    MAC_KEY = 31
    MAC_MISMATCH = 32
    MAC_API = 33


class _Coded(Error):
    def __init__(self, code: int, message: str) -> None:
        try:
            self.code: WireErrorCode | int = WireErrorCode(code)
        except ValueError:
            self.code = code
        self.message = message
        super().__init__(code, message)

    def __str__(self) -> str:
        name = getattr(self.code, "name", str(self.code))
        return f"{self.message} ({name})"


class WireError(_Coded, ValueError):
    """A header or message that is not valid zmicro wire format.

    ``code`` is a :class:`WireErrorCode` naming the exact cause.
    """


class MacError(_Coded, ValueError):
    """A MAC algorithm or key that cannot be used."""


class TransportError(Error, OSError):
    """A libzmq call failed; ``errno`` and ``strerror`` are libzmq's."""

    def __init__(self, errno: int, strerror: str) -> None:
        super().__init__(errno, strerror)


class WouldBlock(TransportError):
    """Nothing to receive, or no room to send, within the time allowed (EAGAIN)."""


class ContextTerminated(TransportError):
    """The socket's context was terminated (ETERM)."""


class SocketClosed(TransportError):
    """The socket is closed or not a socket (ENOTSOCK)."""


class HostUnreachable(TransportError):
    """A ROUTER could not route to the peer (EHOSTUNREACH)."""


class Code(enum.IntEnum):
    """gRPC's canonical status codes (grpc/doc/statuscodes.md), the ``status``
    of an error reply.

    A code is an int (``Code.NOT_FOUND == 5``, ``int(code)`` is the wire
    value) that prints as its name: ``str()`` and f-strings give
    ``Code.NOT_FOUND``, ``.name`` gives ``NOT_FOUND``."""

    # IntEnum's str() is the number ("5" for a NOT_FOUND: issue 10); an
    # RPCError's code is for people to read, the number is for the wire.
    __str__ = enum.Enum.__str__

    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16


class RPCError(Error):
    """The one error type that crosses the wire.

    ``code`` is a :class:`Code`, ``detail`` a human-readable text safe to
    show to the caller (never a traceback or a secret), ``id`` the service
    the error comes from. Raise it in a handler to answer with that code;
    a client raises it for every error reply and for failures of the call
    itself (``UNAVAILABLE`` when no node could be reached, so nothing was
    processed; ``DEADLINE_EXCEEDED`` when the deadline passed first).

    ``processed`` says whether a handler may have run: ``False`` when it
    surely did not (the request was never sent, or the server refused it
    before any handler: the NOT_PROCESSED flag), so retrying it anywhere is
    safe; ``True`` for an error a handler answered; ``None`` when nobody
    knows (the reply never came). Clients retry a call that may have been
    processed only if its endpoint is idempotent.
    """

    def __init__(self, code: Code | int, detail: str = "", *, id: str = "",
                 processed: bool | None = True) -> None:
        try:
            code = Code(code)
        except ValueError:
            code = Code.UNKNOWN
        self.code: Code = code
        self.detail = detail
        self.id = id
        self.processed = processed
        super().__init__(code, detail, id)

    def __str__(self) -> str:
        origin = f" [{self.id}]" if self.id else ""
        return f"{self.code.name}: {self.detail}{origin}" if self.detail else f"{self.code.name}{origin}"

    def __reduce__(self) -> tuple[Callable[..., RPCError], tuple[int, str, str, bool | None]]:
        return (_rebuild_rpc_error, (int(self.code), self.detail, self.id, self.processed))


def _rebuild_rpc_error(code: int, detail: str, id: str,
                       processed: bool | None = True) -> RPCError:
    return RPCError(code, detail, id=id, processed=processed)


class EventRefused(Error):
    """An event frame a subscriber refuses (``zmicro._core.EventInbox.check``).

    ``reason`` says why, one of (in check order, docs/protocol.md §4.6):
    ``malformed``, ``version``, ``kind``, ``wrong_topic``, ``unsigned``,
    ``unknown_key``, ``bad_mac``, ``future``, ``stale``, ``replay_full``.
    The text names the reason only: never a key, a MAC or the frame.
    """

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)

    def __str__(self) -> str:
        return f"event refused: {self.reason}"

    def __reduce__(self) -> tuple[type[EventRefused], tuple[str]]:
        return (EventRefused, (self.reason,))
