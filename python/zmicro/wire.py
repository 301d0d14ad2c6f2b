"""The zmicro wire protocol: the ``Header`` and the frames around it.

A message is ZeroMQ frames ``[routing id] header body* [mac]``; the header is
a single-segment Cap'n Proto message of ``wire.capnp``'s ``Header``, which
with the ``BODY_INLINE`` flag carries a small body after it in its frame
(``SCHEMA`` is its path in the installed package; ``load_schema()`` loads
it with pycapnp). The compiled core reads and writes it;
``docs/protocol.md`` specifies it for other languages.
"""

from __future__ import annotations

import enum
import os
from pathlib import Path
from typing import Any

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
    "load_schema",
    "parse_frames",
    "recv_message",
    "send_message",
]

SCHEMA = Path(__file__).with_name("wire.capnp")


def load_schema() -> Any:
    """``wire.capnp`` loaded with pycapnp (not a dependency of zmicro:
    ``pip install pycapnp``), as ``capnp.load`` returns it.

    The schema imports ``/capnp/c++.capnp`` for its C++ namespace, and
    ``capnp.load`` searches only the directories it is given: pycapnp ships
    that file in its ``capnp`` package, so the package's parent directory is
    the one (``docs/protocol.md`` section 3.8). Every load in a process must
    find the same file: two files with one id are a "Duplicate ID" error."""
    import capnp

    return capnp.load(str(SCHEMA), imports=[os.path.dirname(capnp.__path__[0])])


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
    EVENT = 8


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
