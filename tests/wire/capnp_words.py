"""Hand-assembled Cap'n Proto messages, for inputs no honest writer makes.

Words are little-endian 64-bit ints; pointers follow the encoding spec
(capnproto.org/encoding.html). `message(words)` adds a one-segment table.
"""

from __future__ import annotations

import struct


def _off(offset: int) -> int:
    return (offset << 2) & 0xFFFFFFFF


def struct_ptr(offset: int, data_words: int, ptr_count: int) -> int:
    return _off(offset) | (data_words << 32) | (ptr_count << 48)


def list_ptr(offset: int, elem_size: int, count: int) -> int:
    return _off(offset) | 1 | (elem_size << 32) | (count << 35)


def far_ptr(landing: int, segment: int = 0) -> int:
    return 2 | (landing << 3) | (segment << 32)


def cap_ptr(index: int = 0) -> int:
    return 3 | (index << 32)


def text_words(data: bytes) -> list[int]:
    """Words holding `data` (caller adds the NUL for a Text), zero padded."""
    padded = data + b"\0" * (-len(data) % 8)
    return [int.from_bytes(padded[i:i + 8], "little") for i in range(0, len(padded), 8)]


def message(words: list[int], *, segments: int = 1, size: int | None = None) -> bytes:
    """A message with a segment table claiming `segments` and `size` words."""
    table = struct.pack("<II", segments - 1, len(words) if size is None else size)
    return table + b"".join(w.to_bytes(8, "little") for w in words)


# Header v1 layout (src/zm_wire.c): 8 data words, 7 pointers.
DATA_WORDS = 8
PTR_CONTENT_TYPE, PTR_SERVICE, PTR_ENDPOINT, PTR_METADATA = 0, 1, 2, 3
PTR_NONCE, PTR_PRINCIPAL, PTR_DETAIL = 4, 5, 6
TEXT_ELEM, COMPOSITE_ELEM = 2, 7


def header_with_pointers(pointers: dict[int, int], tail: list[int], version: int = 2) -> bytes:
    """A root Header with one data word (version) and 7 pointer slots.

    `pointers` maps slot -> pointer word whose offset is counted from the
    word after the slot; `tail` words follow the struct. Slot i lives at
    word 2 + i (root pointer at 0, data word at 1), so the first tail word
    is at index 9: from slot i its offset is 9 - (2 + i) - 1 = 6 - i.
    """
    words = [struct_ptr(0, 1, 7), version]
    words += [pointers.get(i, 0) for i in range(7)]
    return message(words + tail)


def tail_offset(slot: int, tail_index: int = 0) -> int:
    """Offset from pointer `slot` of header_with_pointers to tail word n."""
    return 6 - slot + tail_index
