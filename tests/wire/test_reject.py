"""Every way the header reader refuses bytes, each with its own code."""

from __future__ import annotations

import capnp
import pytest
from hypothesis import given
from hypothesis import strategies as st

import zmicro
from zmicro import WireError, WireErrorCode as E, wire

from .capnp_words import (
    COMPOSITE_ELEM, PTR_DETAIL, PTR_METADATA, PTR_NONCE, PTR_SERVICE, TEXT_ELEM,
    cap_ptr, far_ptr, header_with_pointers, list_ptr, message, struct_ptr,
    tail_offset, text_words,
)
from .strategies import headers

current = wire.load_schema()


def code_of(data: bytes) -> E:
    with pytest.raises(WireError) as err:
        zmicro.decode_header(data)
    return err.value.code


def text_at(slot: int, body: bytes, *, tail_index: int = 0, nul: bool = True) -> int:
    payload = body + (b"\0" if nul else b"")
    return list_ptr(tail_offset(slot, tail_index), TEXT_ELEM, len(payload))


def test_sanity_of_the_builder():
    data = header_with_pointers({PTR_SERVICE: text_at(PTR_SERVICE, b"svc")},
                                text_words(b"svc\0"))
    assert zmicro.decode_header(data) == zmicro.Header(service="svc")


@pytest.mark.parametrize("data", [b"", bytes(8), bytes(15)])
def test_short(data):
    assert code_of(data) == E.SHORT


def test_too_big():
    h = zmicro.Header(detail="x" * 4000, nonce=b"y" * 4000)
    ok = h.encode()
    big = message([struct_ptr(0, 0, 0)] + [0] * ((wire.MAX_HEADER - 8) // 8 + 1))
    assert len(ok) <= wire.MAX_HEADER < len(big)
    assert code_of(big) == E.TOO_BIG


def test_multi_segment():
    assert code_of(message([struct_ptr(0, 0, 0), 0], segments=2)) == E.SEGMENTS


def test_multi_segment_from_pycapnp():
    """A writer whose message outgrew its first segment (16 words here)."""
    builder = capnp._MallocMessageBuilder(16)
    root = builder.init_root(current.Header)
    root.service = "s"
    root.detail = "x" * 3000
    data = root.to_bytes()
    assert len(builder.get_segments_for_output()) > 1
    assert int.from_bytes(data[:4], "little") > 0  # segment count - 1
    assert code_of(data) == E.SEGMENTS


@pytest.mark.parametrize("data", [
    message([struct_ptr(0, 0, 0), 0], size=1),     # table claims fewer words
    message([struct_ptr(0, 0, 0)], size=2),        # table claims more words
    message([struct_ptr(0, 0, 0)]) + b"\0\0\0",    # not whole words
])
def test_segment_size(data):
    assert code_of(data) == E.SEGMENT_SIZE


def test_far_root():
    assert code_of(message([far_ptr(1), 0])) == E.FAR_POINTER


def test_far_text():
    data = header_with_pointers({PTR_SERVICE: far_ptr(9)}, [0])
    assert code_of(data) == E.FAR_POINTER


def test_far_metadata():
    data = header_with_pointers({PTR_METADATA: far_ptr(9)}, [0])
    assert code_of(data) == E.FAR_POINTER


@pytest.mark.parametrize("data", [
    message([list_ptr(0, TEXT_ELEM, 8), 0]),                          # root is a list
    message([cap_ptr(), 0]),                                           # root is a capability
    header_with_pointers({PTR_SERVICE: struct_ptr(tail_offset(PTR_SERVICE), 1, 0)}, [0]),
    header_with_pointers({PTR_SERVICE: list_ptr(tail_offset(PTR_SERVICE), 3, 1)}, [0]),
    header_with_pointers({PTR_NONCE: list_ptr(tail_offset(PTR_NONCE), 4, 1)}, [0]),
    header_with_pointers({PTR_METADATA: list_ptr(tail_offset(PTR_METADATA), 6, 1)}, [0]),
    header_with_pointers({PTR_METADATA: cap_ptr()}, []),
    # inline-composite list whose tag is not a struct
    header_with_pointers({PTR_METADATA: list_ptr(tail_offset(PTR_METADATA), COMPOSITE_ELEM, 0)},
                         [list_ptr(0, TEXT_ELEM, 0)]),
])
def test_pointer_kind(data):
    assert code_of(data) == E.POINTER_KIND


@pytest.mark.parametrize("data", [
    message([struct_ptr(0, 4, 0), 0]),                      # root struct past the end
    message([struct_ptr(-3, 1, 0), 0]),                     # before the segment
    header_with_pointers({PTR_SERVICE: text_at(PTR_SERVICE, b"x" * 20)}, [0]),
    header_with_pointers({PTR_SERVICE: list_ptr(-100, TEXT_ELEM, 1)}, []),
    # metadata: list words past the end
    header_with_pointers({PTR_METADATA: list_ptr(tail_offset(PTR_METADATA), COMPOSITE_ELEM, 9)},
                         [struct_ptr(1, 0, 2), 0, 0]),
    # metadata: tag claims more elements than the list's words hold
    header_with_pointers({PTR_METADATA: list_ptr(tail_offset(PTR_METADATA), COMPOSITE_ELEM, 2)},
                         [struct_ptr(3, 0, 2), 0, 0]),
    # metadata: negative element count
    header_with_pointers({PTR_METADATA: list_ptr(tail_offset(PTR_METADATA), COMPOSITE_ELEM, 0)},
                         [struct_ptr(-1, 0, 0)]),
])
def test_bounds(data):
    assert code_of(data) == E.BOUNDS


def test_traversal_budget_refuses_aliasing():
    """detail and nonce both point at one 100-byte blob: legal Cap'n Proto,
    but reading it twice exceeds the words the message holds."""
    blob = b"d" * 99 + b"\0"
    data = header_with_pointers({
        PTR_DETAIL: list_ptr(tail_offset(PTR_DETAIL), TEXT_ELEM, len(blob)),
        PTR_NONCE: list_ptr(tail_offset(PTR_NONCE), TEXT_ELEM, len(blob)),
    }, text_words(blob))
    assert code_of(data) == E.TRAVERSAL
    # Each alone is fine.
    alone = header_with_pointers({
        PTR_DETAIL: list_ptr(tail_offset(PTR_DETAIL), TEXT_ELEM, len(blob))},
        text_words(blob))
    assert zmicro.decode_header(alone).detail == "d" * 99


def test_traversal_budget_metadata_amplification():
    """Eight metadata values aliasing one 200-byte blob would read it eight
    times; the message holds far fewer words than that."""
    n, blob = 8, b"v" * 200
    tail = [struct_ptr(n, 0, 2)]                      # tag: n entries, 2 pointers
    for i in range(n):                                # entry i: key, value
        tail += [list_ptr(2 * n - i - 1, TEXT_ELEM, 3),
                 list_ptr(3 * n - 2 * i - 2, TEXT_ELEM, len(blob))]
    tail += [int.from_bytes(f"k{i}\0".encode().ljust(8, b"\0"), "little") for i in range(n)]
    tail += text_words(blob)
    meta = list_ptr(tail_offset(PTR_METADATA), COMPOSITE_ELEM, 2 * n)
    assert code_of(header_with_pointers({PTR_METADATA: meta}, tail)) == E.TRAVERSAL
    # The same layout with one entry is a valid header.
    one = [struct_ptr(1, 0, 2), list_ptr(1, TEXT_ELEM, 3), list_ptr(1, TEXT_ELEM, len(blob)),
           int.from_bytes(b"k0\0".ljust(8, b"\0"), "little")] + text_words(blob)
    meta = list_ptr(tail_offset(PTR_METADATA), COMPOSITE_ELEM, 2)
    assert zmicro.decode_header(header_with_pointers({PTR_METADATA: meta}, one)).metadata == {
        "k0": blob}


def test_text_aliasing_the_root_pointer():
    """A text that points back at the root pointer word: reading it costs
    the budget's last word (found by reading the reader for the fuzz
    harness). (That word always holds zero bytes, so it could not be a valid
    text either.)"""
    data = bytes.fromhex("00000000020000000000000000000100f9ffffff42000000")
    assert code_of(data) == E.TRAVERSAL


def _alias_header(nonce_aliases_root: bool) -> bytes:
    """1023 words (8192 bytes): detail of 4096 bytes, one metadata entry
    with a 3984-byte value, and a nonce that (optionally) is the root
    pointer word itself."""
    detail = b"a" * 4096 + b"\0"                          # words 8..520
    value = b"v" * 3984                                    # words 525..1022
    words = [struct_ptr(0, 0, 7),                          # 0: root
             0, 0, 0,                                      # 1-3: contentType, service, endpoint
             list_ptr(521 - 4 - 1, COMPOSITE_ELEM, 2),     # 4: metadata -> tag at 521
             list_ptr(0 - 5 - 1, TEXT_ELEM, 8) if nonce_aliases_root else 0,  # 5: nonce -> word 0
             0,                                            # 6: principal
             list_ptr(0, TEXT_ELEM, len(detail))]          # 7: detail -> word 8
    words += text_words(detail)
    words += [struct_ptr(1, 0, 2),                         # 521: tag, one entry
              list_ptr(1, TEXT_ELEM, 2),                   # 522: key -> 524
              list_ptr(1, TEXT_ELEM, len(value)),          # 523: value -> 525
              int.from_bytes(b"k\0".ljust(8, b"\0"), "little")]  # 524
    words += text_words(value)
    return message(words)


def test_aliasing_cannot_make_a_header_unencodable():
    """Regression: an 8192-byte header whose nonce aliased the root pointer
    word was accepted (the root pointer was not charged to the traversal
    budget), and its canonical form, 8200 bytes, could not be written back.
    The budget now excludes the root pointer word."""
    data = _alias_header(nonce_aliases_root=True)
    assert len(data) == wire.MAX_HEADER
    assert code_of(data) == E.TRAVERSAL
    # Without the alias the same header is valid, and re-encodes no larger.
    plain = _alias_header(nonce_aliases_root=False)
    h = zmicro.decode_header(plain)
    assert len(h.encode()) <= len(plain)


@pytest.mark.parametrize("body", [b"abc", b""])
def test_text_not_nul_terminated(body):
    ptr = text_at(PTR_SERVICE, body, nul=False)
    data = header_with_pointers({PTR_SERVICE: ptr}, text_words(body) or [0])
    assert code_of(data) == E.TEXT_NUL


@pytest.mark.parametrize("body", [b"a\0b", b"\0", b"greeter\0evil"])
def test_text_with_nul_inside(body):
    data = header_with_pointers({PTR_SERVICE: text_at(PTR_SERVICE, body)},
                                text_words(body + b"\0"))
    assert code_of(data) == E.TEXT_NUL


def test_metadata_key_with_nul_inside():
    assert code_of(_pycapnp_metadata([("a\0b", b"v")])) == E.TEXT_NUL


@pytest.mark.parametrize("body", [b"\xff", b"ok\xc0\x80", b"\xed\xa0\x80"])
def test_text_utf8(body):
    data = header_with_pointers({PTR_SERVICE: text_at(PTR_SERVICE, body)},
                                text_words(body + b"\0"))
    assert code_of(data) == E.TEXT_UTF8


@pytest.mark.parametrize("slot, size", [(PTR_SERVICE, 256), (PTR_DETAIL, 4097)])
def test_text_size(slot, size):
    body = b"x" * size
    data = header_with_pointers({slot: text_at(slot, body)}, text_words(body + b"\0"))
    assert code_of(data) == E.TEXT_SIZE


def test_data_size():
    body = b"n" * 4097
    ptr = list_ptr(tail_offset(PTR_NONCE), TEXT_ELEM, len(body))
    assert code_of(header_with_pointers({PTR_NONCE: ptr}, text_words(body))) == E.TEXT_SIZE


def _pycapnp_metadata(entries):
    return current.Header.new_message(
        version=1, metadata=[{"key": k, "value": v} for k, v in entries]).to_bytes()


def test_metadata_count():
    assert code_of(_pycapnp_metadata([(f"k{i}", b"") for i in range(65)])) == E.METADATA_COUNT
    assert len(zmicro.decode_header(
        _pycapnp_metadata([(f"k{i}", b"") for i in range(64)])).metadata) == 64


def test_metadata_count_of_zero_sized_entries():
    """2**20 zero-sized entries fit in one word: refused by count, unread."""
    tail = [struct_ptr(2**20, 0, 0)]
    data = header_with_pointers(
        {PTR_METADATA: list_ptr(tail_offset(PTR_METADATA), COMPOSITE_ELEM, 0)}, tail)
    assert code_of(data) == E.METADATA_COUNT


@pytest.mark.parametrize("entries", [
    [("", b"v")],
    [("a", b"1"), ("b", b"2"), ("a", b"3")],
])
def test_metadata_key(entries):
    assert code_of(_pycapnp_metadata(entries)) == E.METADATA_KEY


def test_entry_without_pointers_has_empty_key():
    tail = [struct_ptr(1, 1, 0), 42]  # one entry, one data word, no pointers
    data = header_with_pointers(
        {PTR_METADATA: list_ptr(tail_offset(PTR_METADATA), COMPOSITE_ELEM, 1)}, tail)
    assert code_of(data) == E.METADATA_KEY


@given(st.binary(max_size=600))
def test_random_bytes_never_crash(data):
    try:
        h = zmicro.decode_header(data)
    except WireError as e:
        assert isinstance(e.code, E)
    else:
        again = h.encode()
        assert len(again) <= len(data)  # what decodes can be re-encoded
        assert zmicro.decode_header(again) == h


@given(headers(big_values=False), st.data())
def test_mutations_decode_or_refuse(h, data):
    raw = bytearray(h.encode())
    for _ in range(data.draw(st.integers(1, 8))):
        i = data.draw(st.integers(0, len(raw) - 1))
        raw[i] = data.draw(st.integers(0, 255))
    try:
        got = zmicro.decode_header(bytes(raw))
    except WireError as e:
        assert isinstance(e.code, E)
    else:
        again = got.encode()
        assert len(again) <= len(raw)
        assert zmicro.decode_header(again) == got


def test_error_message_names_the_cause():
    with pytest.raises(WireError, match="far pointer") as err:
        zmicro.decode_header(message([far_ptr(1), 0]))
    assert "FAR_POINTER" in str(err.value)
    assert isinstance(err.value, ValueError)
