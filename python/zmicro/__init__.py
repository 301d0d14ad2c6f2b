"""zmicro: microservices for Python on ZeroMQ.

A :class:`Service` serves named endpoints; a :class:`Client` or
:class:`AsyncClient` calls them by service name, finding nodes in the
registry. The compiled core (``zmicro._core``) does framing, the wire
header, MACs and every libzmq call; this package is the Python API over it.
"""

from __future__ import annotations

from . import codec, errors, middleware, registry, security, wire
from .security import mac
from .client import AsyncClient, Client
from .context import Context, current_context
from .errors import (
    Code,
    Error,
    MacError,
    RPCError,
    TransportError,
    WireError,
    WireErrorCode,
    WouldBlock,
)
from .middleware import Call
from .service import Service, blocking
from .wire import Header, Kind, Message, decode_header, recv_message, send_message

__version__ = "0.1.0.dev0"

__all__ = [
    "AsyncClient",
    "Call",
    "Client",
    "Code",
    "Context",
    "Error",
    "Header",
    "Kind",
    "MacError",
    "Message",
    "RPCError",
    "Service",
    "TransportError",
    "WireError",
    "WireErrorCode",
    "WouldBlock",
    "blocking",
    "codec",
    "current_context",
    "decode_header",
    "errors",
    "mac",
    "middleware",
    "recv_message",
    "registry",
    "security",
    "send_message",
    "wire",
]
