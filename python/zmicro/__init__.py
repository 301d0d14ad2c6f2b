"""zmicro: microservices for Python on ZeroMQ.

A :class:`Service` serves named endpoints; a :class:`Client` or
:class:`AsyncClient` calls them by service name, finding nodes in the
registry. A :class:`Publisher` (or :class:`AsyncPublisher`) publishes
events to topics; a service's subscribers (``@svc.subscriber``) handle
them, through a broker (:mod:`zmicro.broker`). The compiled core
(``zmicro._core``) does framing, the wire header, MACs and every libzmq
call; this package is the Python API over it.
"""

from __future__ import annotations

from . import broker, codec, errors, middleware, registry, security, wire
from .security import mac
from .client import AsyncClient, Client
from .context import Context, current_context
from .errors import (
    Code,
    Error,
    EventRefused,
    MacError,
    RPCError,
    TransportError,
    WireError,
    WireErrorCode,
    WouldBlock,
)
from . import events  # (after security: events imports auth, which needs security first)
from .events import AsyncPublisher, EventContext, Nack, Publisher, Reject
from .middleware import Call
from .service import Service, blocking
from .wire import Header, Kind, Message, decode_header, recv_message, send_message

__version__ = "0.1.0.dev0"

__all__ = [
    "AsyncClient",
    "AsyncPublisher",
    "Call",
    "Client",
    "Code",
    "Context",
    "Error",
    "EventContext",
    "EventRefused",
    "Header",
    "Kind",
    "MacError",
    "Message",
    "Nack",
    "Publisher",
    "RPCError",
    "Reject",
    "Service",
    "TransportError",
    "WireError",
    "WireErrorCode",
    "WouldBlock",
    "blocking",
    "broker",
    "codec",
    "current_context",
    "decode_header",
    "errors",
    "events",
    "mac",
    "middleware",
    "recv_message",
    "registry",
    "security",
    "send_message",
    "wire",
]
