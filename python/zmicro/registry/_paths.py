"""How a name becomes file-name components inside the embedded registry.

A name (service, version, node id) is UTF-8 percent-encoded: bytes in
``[A-Za-z0-9._-]`` stay, every other byte becomes ``%XX`` (upper-case hex),
so the result is ASCII without "/" or NUL. That can reach 765 characters
(255 bytes, each escaped) while a file name holds 255 bytes, so the encoded
text is cut into chunks of at most :data:`CHUNK` characters, never inside an
escape. Each chunk is one path component with a sigil in front: ``+`` when
more chunks of the same name follow (a directory), ``=`` for the last one.
The sigil also keeps every component non-empty (version "" is ``=``), never
"." or "..", and never starting with "." (reserved for temporary files).

The mapping is a bijection between valid names and canonical component
lists: :func:`decode` refuses anything :func:`encode` would not produce.
"""

from __future__ import annotations

import re

from .base import NAME_MAX

__all__ = ["CHUNK", "FINAL", "MORE", "SUFFIX", "decode", "encode"]

MORE = "+"
FINAL = "="
#: Appended to the last component of a node id: the node's file.
SUFFIX = ".json"
#: Longest chunk: sigil + chunk + SUFFIX stays within NAME_MAX (255) bytes.
CHUNK = 240

_SAFE = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-")
_QUOTED = re.compile(r"(?:[A-Za-z0-9._-]|%[0-9A-F]{2})*")
_ESCAPE = re.compile(r"%([0-9A-F]{2})")


def quote(value: str) -> str:
    return "".join(chr(b) if b in _SAFE else f"%{b:02X}" for b in value.encode())


def unquote(text: str) -> str:
    """Inverse of :func:`quote`; ValueError for text it would not produce."""
    if not _QUOTED.fullmatch(text):
        raise ValueError(f"not a quoted name: {text!r}")
    raw = _ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), text).encode("latin-1")
    value = raw.decode()  # UnicodeDecodeError is a ValueError
    if quote(value) != text:  # e.g. "%41" for "A": two spellings of one name
        raise ValueError(f"not the canonical spelling of a name: {text!r}")
    return value


def encode(value: str) -> list[str]:
    """The path components for ``value`` (validated beforehand by check_name)."""
    text = quote(value)
    chunks, start = [], 0
    while len(text) - start > CHUNK:
        end = start + CHUNK
        # An escape is three characters starting with "%": do not cut one.
        if text[end - 1] == "%":
            end -= 1
        elif text[end - 2] == "%":
            end -= 2
        chunks.append(text[start:end])
        start = end
    chunks.append(text[start:])
    return [MORE + c for c in chunks[:-1]] + [FINAL + chunks[-1]]


def decode(components: list[str] | tuple[str, ...]) -> str:
    """The name whose :func:`encode` is exactly ``components``, else ValueError."""
    if not components or any(not c for c in components):
        raise ValueError("no components")
    *more, last = components
    if last[0] != FINAL or any(c[0] != MORE for c in more):
        raise ValueError(f"bad sigils: {components!r}")
    value = unquote("".join(c[1:] for c in components))
    if "/" in value or "\0" in value or len(value.encode()) > NAME_MAX:
        raise ValueError(f"not a valid name: {value!r}")
    if encode(value) != list(components):
        raise ValueError(f"not the canonical split of a name: {components!r}")
    return value
