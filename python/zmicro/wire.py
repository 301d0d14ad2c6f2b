"""The zmicro wire protocol: the ``Header`` and the frames around it.

A message is ZeroMQ frames ``[routing id] header body* [mac]``; the header is
a single-segment Cap'n Proto message of ``wire.capnp``'s ``Header``, which
with the ``BODY_INLINE`` flag carries a small body after it in its frame
(``SCHEMA`` is its path in the installed package). The compiled core reads
and writes it; ``docs/protocol.md`` specifies it for other languages.
"""

from __future__ import annotations

import enum
from pathlib import Path

from ._core import (
    FLAG_BODY_INLINE,
    FLAG_MAC_TRAILER,
    FLAG_NOT_PROCESSED,
    FLAG_SIGNED,
    MAX_HEADER,
    MAX_METADATA,
    MAX_NAME,
    MAX_VALUE,
    WIRE_VERSION,
    Header,
    Message,
    decode_header,
    parse_frames,
    recv_message,
    send_message,
)

__all__ = [
    "FLAG_BODY_INLINE",
    "FLAG_MAC_TRAILER",
    "FLAG_NOT_PROCESSED",
    "FLAG_SIGNED",
    "MAX_HEADER",
    "MAX_METADATA",
    "MAX_NAME",
    "MAX_VALUE",
    "SCHEMA",
    "WIRE_VERSION",
    "Flags",
    "Header",
    "Kind",
    "Message",
    "decode_header",
    "parse_frames",
    "recv_message",
    "send_message",
]

SCHEMA = Path(__file__).with_name("wire.capnp")


class Kind(enum.IntEnum):
    """``Header.kind``: what a message is (``wire.capnp`` enum Kind)."""

    REQUEST = 0
    REPLY = 1
    ERROR = 2
    STREAM_DATA = 3
    STREAM_END = 4
    CANCEL = 5
    PING = 6
    PONG = 7


class Flags(enum.IntFlag):
    """``Header.flags`` bits (``docs/protocol.md`` section 3.2).

    ``NOT_PROCESSED`` on an ``error`` means no handler ran for the request
    (a refusal: wrong service, draining, busy, unknown endpoint, bad
    request, MAC check...): the caller may retry it on any node, even for a
    non-idempotent endpoint."""

    SIGNED = FLAG_SIGNED
    BODY_INLINE = FLAG_BODY_INLINE
    MAC_TRAILER = FLAG_MAC_TRAILER
    NOT_PROCESSED = FLAG_NOT_PROCESSED
