"""zmicro's exceptions: one tree rooted at :class:`Error`.

Native failures become these exceptions in exactly one place, the core's
``errors.pyx``: libzmq errno values become :class:`TransportError` and its
subclasses, the C codec's ``zm_err`` codes become :class:`WireError` (bytes
that are not a valid zmicro message) or :class:`MacError` (an unusable MAC
algorithm or key). This module imports nothing from the core, so the core can
import it.
"""

from __future__ import annotations

import enum

__all__ = [
    "Error",
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
    ``tests/wire/test_errors.py`` checks them against the C enum.
    """

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
