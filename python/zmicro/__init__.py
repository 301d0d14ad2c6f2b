"""zmicro: microservices for Python on ZeroMQ.

The compiled core (``zmicro._core``) does framing, the wire header, MACs and
libzmq calls; this package is the Python API over it.
"""

from __future__ import annotations

from . import errors, mac, wire
from .errors import (
    Error,
    MacError,
    TransportError,
    WireError,
    WireErrorCode,
    WouldBlock,
)
from .wire import Header, Kind, Message, decode_header, recv_message, send_message

__version__ = "0.1.0.dev0"

__all__ = [
    "Error",
    "Header",
    "Kind",
    "MacError",
    "Message",
    "TransportError",
    "WireError",
    "WireErrorCode",
    "WouldBlock",
    "decode_header",
    "errors",
    "mac",
    "recv_message",
    "send_message",
    "wire",
]
