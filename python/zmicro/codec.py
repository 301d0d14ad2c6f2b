"""Codecs: how request and reply bodies become bytes, chosen by content type.

A message's header names the content type of its body; the server decodes a
request with the codec registered for it and answers in the same content
type. Built in:

- ``application/msgpack`` (the default) and ``application/json``, through
  msgspec. A handler whose request is annotated with a type (a
  ``msgspec.Struct``, a dataclass, ``dict[str, int]``...) gets a validated
  value; a body that does not fit is an ``INVALID_ARGUMENT`` naming the field
  (msgspec's path, e.g. ``$.name``).
- ``application/octet-stream``: bytes in, bytes out, no codec cost; bodies
  of :data:`ZERO_COPY_MIN` bytes or more are not copied.
- ``application/capnp``: pycapnp structs, for users with Cap'n Proto schemas
  (the request annotation is the struct type, e.g. ``schema.Point``).

``register_codec`` adds or replaces one.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, NoReturn, Protocol, runtime_checkable

import msgspec

from . import _core
from .errors import Code, RPCError

__all__ = [
    "CAPNP",
    "Codec",
    "DEFAULT_CONTENT_TYPE",
    "JSON",
    "MSGPACK",
    "OCTET_STREAM",
    "ZERO_COPY_MIN",
    "CapnpCodec",
    "JsonCodec",
    "MsgpackCodec",
    "OctetStreamCodec",
    "get_codec",
    "register_codec",
]

MSGPACK = "application/msgpack"
JSON = "application/json"
OCTET_STREAM = "application/octet-stream"
CAPNP = "application/capnp"
DEFAULT_CONTENT_TYPE = MSGPACK

#: Bodies at least this large go to and from libzmq without a copy
#: (src/zm_limits.h).
ZERO_COPY_MIN = _core.ZERO_COPY_MIN

Decode = Callable[[Any], Any]


@runtime_checkable
class Codec(Protocol):
    """Turns values into body bytes and back, for one content type.

    ``encode(value)`` returns a bytes-like object. ``decoder(type)`` returns
    a function from a bytes-like body to a value of ``type`` (``Any``:
    untyped). A body that does not decode or does not fit the type raises
    one of the exceptions in ``invalid`` (their text becomes the
    ``INVALID_ARGUMENT`` detail, so make it name the field), or an
    :class:`RPCError`. Decoders are built once per endpoint and called on
    every request: make building them do the work.

    Optional, for codecs that do not transform: ``passthrough = True``
    means ``encode`` returns the value itself (a bytes-like object), and
    ``decoder`` may return None for "the body is the value"; the core then
    calls neither.
    """

    content_type: str
    invalid: tuple[type[BaseException], ...]

    def encode(self, value: Any) -> Any: ...

    def decoder(self, type: Any = Any) -> Decode | None: ...


class _MsgspecCodec:
    _module: Any
    # msgspec's messages name the path ("Expected `str`, got `int` - at `$.name`").
    invalid: tuple[type[BaseException], ...] = (msgspec.ValidationError, msgspec.DecodeError)

    def __init__(self) -> None:
        self.encode: Callable[[Any], bytes] = self._module.Encoder().encode

    def decoder(self, type: Any = Any) -> Decode:
        decode: Decode = self._module.Decoder(type).decode  # msgspec's own: no wrapper
        return decode


class MsgpackCodec(_MsgspecCodec):
    """``application/msgpack`` through msgspec (the default codec)."""

    content_type = MSGPACK
    _module = msgspec.msgpack


class JsonCodec(_MsgspecCodec):
    """``application/json`` through msgspec."""

    content_type = JSON
    _module = msgspec.json


_BYTES_TYPES = (Any, object, bytes, bytearray, memoryview, None)


class OctetStreamCodec:
    """``application/octet-stream``: the body is the value, as bytes-like.

    Received bodies under :data:`ZERO_COPY_MIN` bytes are ``bytes``; larger
    ones are read-only ``memoryview`` objects over the received frame.
    """

    content_type = OCTET_STREAM
    invalid: tuple[type[BaseException], ...] = ()
    passthrough = True

    @staticmethod
    def encode(value: Any) -> Any:
        if isinstance(value, (bytes, bytearray, memoryview)):
            return value
        raise TypeError(f"{OCTET_STREAM} carries bytes-like values, not {type(value).__name__}")

    def decoder(self, type: Any = Any) -> Decode | None:
        if type in _BYTES_TYPES:
            return None  # the body is the value
        name = getattr(type, "__name__", repr(type))

        def refuse(data: Any) -> NoReturn:
            raise RPCError(Code.INVALID_ARGUMENT,
                           f"{OCTET_STREAM} carries bytes; this endpoint takes {name}")

        return refuse


class CapnpCodec:
    """``application/capnp`` through pycapnp (imported on first use).

    The type is a pycapnp struct (``schema.Point``); values are its builders
    or readers. Decoded values are builders, independent of the frame.
    """

    content_type = CAPNP
    invalid: tuple[type[BaseException], ...] = ()

    @staticmethod
    def encode(value: Any) -> bytes:
        try:
            data: bytes = value.to_bytes()
            return data
        except AttributeError:
            raise TypeError(f"{CAPNP} carries pycapnp structs, not {type(value).__name__}") from None

    def decoder(self, type: Any = Any) -> Decode:
        if type in _BYTES_TYPES or not hasattr(type, "from_bytes"):
            name = getattr(type, "__name__", repr(type))

            def refuse(data: Any) -> NoReturn:
                raise RPCError(Code.INVALID_ARGUMENT,
                               f"{CAPNP} needs a pycapnp struct type; this endpoint takes {name}")

            return refuse

        def decode(data: Any) -> Any:
            try:
                with type.from_bytes(bytes(data)) as reader:
                    return reader.as_builder()
            except Exception as exc:  # pycapnp raises KjException and friends
                raise RPCError(Code.INVALID_ARGUMENT, f"not a valid {type}: {exc}") from None

        return decode


_lock = threading.Lock()
_codecs: dict[str, Codec] = {}


def register_codec(codec: Codec) -> None:
    """Use ``codec`` for its content type, in clients and services created
    from now on (a service keeps the codecs it started with)."""
    if not (isinstance(getattr(codec, "content_type", None), str)
            and callable(getattr(codec, "encode", None))
            and callable(getattr(codec, "decoder", None))):
        raise TypeError("a codec has content_type, encode() and decoder()")
    if not hasattr(codec, "invalid"):
        codec.invalid = ()
    with _lock:
        _codecs[codec.content_type] = codec


def get_codec(content_type: str) -> Codec:
    """The codec for ``content_type``; ``KeyError`` if none is registered."""
    return _codecs[content_type]


def codecs() -> dict[str, Codec]:
    """A snapshot of the registered codecs, by content type."""
    with _lock:
        return dict(_codecs)


for _codec in (MsgpackCodec(), JsonCodec(), OctetStreamCodec(), CapnpCodec()):
    register_codec(_codec)
