"""Hypothesis strategies for wire headers, and a Python model of the
canonical encoding's size (an oracle independent of src/zm_wire.c)."""

from __future__ import annotations

import string

from hypothesis import strategies as st

import zmicro
from zmicro import wire

# Any code point but lone surrogates (no UTF-8 form) and NUL (refused in texts).
_chars = st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00")


def _text(limit: int) -> st.SearchStrategy[str]:
    short = st.text(_chars, max_size=40)
    long_ascii = st.text(string.printable, min_size=limit - 20, max_size=limit)
    return st.one_of(short, short, long_ascii).filter(lambda s: len(s.encode()) <= limit)


names = _text(wire.MAX_NAME)
values = st.one_of(st.binary(max_size=64), st.binary(max_size=64),
                   st.binary(min_size=wire.MAX_VALUE - 8, max_size=wire.MAX_VALUE))
metadata = st.one_of(
    st.dictionaries(names.filter(bool), st.binary(max_size=80), max_size=6),
    st.dictionaries(st.text(string.ascii_lowercase, min_size=1, max_size=8),
                    st.binary(max_size=8), min_size=50, max_size=wire.MAX_METADATA),
)
u16 = st.integers(0, 2**16 - 1)
u32 = st.integers(0, 2**32 - 1)
u64 = st.one_of(st.just(0), st.integers(0, 2**64 - 1))


@st.composite
def headers(draw, *, kinds=u16, big_values: bool = True) -> zmicro.Header:
    text_values = values if big_values else st.binary(max_size=64)
    return zmicro.Header(
        version=draw(u16),
        kind=draw(kinds),
        flags=draw(u32),
        request_id=draw(u64),
        deadline_us=draw(u64),
        status=draw(u16),
        key_id=draw(u32),
        timestamp_us=draw(u64),
        trace_id=draw(st.one_of(st.just(0), st.integers(0, 2**128 - 1))),
        span_id=draw(u64),
        content_type=draw(names),
        service=draw(names),
        endpoint=draw(names),
        metadata=draw(metadata),
        nonce=draw(text_values),
        principal=draw(names),
        detail=draw(_text(wire.MAX_VALUE) if big_values else names),
        max_reply_size=draw(st.one_of(st.just(0), u32)),
    )


def _blob_words(n: int, text: bool) -> int:
    return (n + text + 7) // 8 if n else 0


def canonical_size(h: zmicro.Header) -> int:
    """Bytes of the canonical encoding of `h`, computed from the spec."""
    data = [
        h.version | h.kind << 16 | h.flags << 32,
        h.request_id,
        h.deadline_us,
        h.status | h.key_id << 32,
        h.timestamp_us,
        h.trace_id >> 64,
        h.trace_id & (2**64 - 1),
        h.span_id,
        h.max_reply_size,
    ]
    while data and data[-1] == 0:
        data.pop()
    blobs = [
        (h.content_type.encode(), True),
        (h.service.encode(), True),
        (h.endpoint.encode(), True),
        None,  # metadata
        (h.nonce, False),
        (h.principal.encode(), True),
        (h.detail.encode(), True),
    ]
    present = [bool(h.metadata) if b is None else bool(b[0]) for b in blobs]
    while present and not present[-1]:
        present.pop()
    words = 1 + len(data) + len(present)
    for i in range(len(present)):
        if blobs[i] is not None:
            words += _blob_words(len(blobs[i][0]), blobs[i][1])
    if h.metadata:
        epc = 2 if any(h.metadata.values()) else 1
        words += 1 + len(h.metadata) * epc
        for k, v in h.metadata.items():
            words += _blob_words(len(k.encode()), True) + _blob_words(len(v), False)
    return 8 + 8 * words
