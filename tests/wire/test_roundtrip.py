"""Header encode/decode round trips and the canonical form of the writer."""

from __future__ import annotations

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

import zmicro
from zmicro import WireError, WireErrorCode, wire
from zmicro._core import utf8_valid

from .strategies import canonical_size, headers


@given(headers())
def test_roundtrip_or_too_big(h):
    size = canonical_size(h)
    if size > wire.MAX_HEADER:
        with pytest.raises(WireError) as err:
            h.encode()
        assert err.value.code == WireErrorCode.TOO_BIG
        return
    data = h.encode()
    assert len(data) == size
    assert zmicro.decode_header(data) == h


@given(headers(big_values=False))
def test_encoding_is_a_fixed_point(h):
    data = h.encode()
    assert zmicro.decode_header(data).encode() == data


@given(headers(big_values=False))
def test_canonical_truncation(h):
    """No trailing zero data word and no trailing null pointer."""
    data = h.encode()
    root = int.from_bytes(data[8:16], "little")
    if root == 0xFFFFFFFC:  # zero-sized struct
        return
    offset, dw, pc = (root & 0xFFFFFFFF) >> 2, (root >> 32) & 0xFFFF, root >> 48
    assert offset == 0
    start = 16
    if dw:
        assert data[start + 8 * (dw - 1):start + 8 * dw] != bytes(8)
    if pc:
        last = start + 8 * dw + 8 * (pc - 1)
        assert data[last:last + 8] != bytes(8)


def test_empty_header_is_a_zero_sized_struct():
    h = zmicro.Header(version=0)
    data = h.encode()
    assert data == bytes([0, 0, 0, 0, 1, 0, 0, 0]) + (0xFFFFFFFC).to_bytes(8, "little")
    assert zmicro.decode_header(data) == h


def test_null_root_reads_as_defaults():
    data = bytes([0, 0, 0, 0, 1, 0, 0, 0]) + bytes(8)
    assert zmicro.decode_header(data) == zmicro.Header(version=0)


def test_typical_request_size():
    h = zmicro.Header(kind=zmicro.Kind.REQUEST, request_id=1, deadline_us=1_000_000,
                      service="greeter", endpoint="Greeter.Hello",
                      content_type="application/msgpack")
    # table 8 + root pointer 8 + 3 data words + 3 pointers
    # + "application/msgpack\0" 24 + "greeter\0" 8 + "Greeter.Hello\0" 16
    assert len(h.encode()) == canonical_size(h) == 112


@pytest.mark.parametrize("cls", [bytes, bytearray, memoryview])
def test_decode_accepts_buffers(cls):
    h = zmicro.Header(service="s", metadata={"k": b"v"})
    assert zmicro.decode_header(cls(h.encode())) == h


def test_field_types_are_checked():
    with pytest.raises(TypeError):
        zmicro.Header(service=b"bytes")
    with pytest.raises(TypeError):
        zmicro.Header(nonce="str")
    with pytest.raises(OverflowError):
        zmicro.Header(kind=2**16)
    with pytest.raises(OverflowError):
        zmicro.Header(request_id=-1)
    with pytest.raises(OverflowError):
        zmicro.Header(trace_id=2**128)
    h = zmicro.Header()
    with pytest.raises(OverflowError):
        h.status = 70000
    with pytest.raises(TypeError):
        h.service = 5


def test_trace_id_halves():
    h = zmicro.Header(trace_id=(7 << 64) | 9)
    assert zmicro.decode_header(h.encode()).trace_id == (7 << 64) | 9


def test_metadata_str_values_go_as_utf8():
    h = zmicro.Header(metadata={"k": "välue"})
    assert zmicro.decode_header(h.encode()).metadata == {"k": "välue".encode()}


@pytest.mark.parametrize("metadata, exc", [
    ({"k": 5}, TypeError),
    ({1: b"v"}, TypeError),
])
def test_metadata_types(metadata, exc):
    with pytest.raises(exc):
        zmicro.Header(metadata=metadata).encode()


@pytest.mark.parametrize("kwargs, code", [
    ({"service": "x" * 256}, WireErrorCode.TEXT_SIZE),
    ({"content_type": "é" * 128}, WireErrorCode.TEXT_SIZE),
    ({"detail": "x" * 4097}, WireErrorCode.TEXT_SIZE),
    ({"nonce": b"x" * 4097}, WireErrorCode.TEXT_SIZE),
    ({"metadata": {"k": b"x" * 4097}}, WireErrorCode.TEXT_SIZE),
    ({"metadata": {"k" * 256: b""}}, WireErrorCode.TEXT_SIZE),
    ({"metadata": {"": b"v"}}, WireErrorCode.METADATA_KEY),
    ({"metadata": {f"k{i}": b"" for i in range(65)}}, WireErrorCode.METADATA_COUNT),
    ({"endpoint": "\ud800"}, WireErrorCode.TEXT_UTF8),
    ({"service": "a\x00b"}, WireErrorCode.TEXT_NUL),
    ({"detail": "\x00"}, WireErrorCode.TEXT_NUL),
    ({"metadata": {"k\x00": b""}}, WireErrorCode.TEXT_NUL),
    ({"detail": "x" * 4000, "nonce": b"y" * 4000, "service": "z" * 200},
     WireErrorCode.TOO_BIG),
])
def test_writer_refuses(kwargs, code):
    with pytest.raises(WireError) as err:
        zmicro.Header(**kwargs).encode()
    assert err.value.code == code


def test_limits_are_inclusive():
    h = zmicro.Header(service="x" * 255, metadata={f"k{i}": b"" for i in range(64)},
                      nonce=b"n" * 4096)
    assert zmicro.decode_header(h.encode()) == h


@given(st.binary(max_size=64))
@example(b"\xc0\x80")            # overlong NUL
@example(b"\xe0\x80\x80")        # overlong
@example(b"\xed\xa0\x80")        # surrogate
@example(b"\xf4\x90\x80\x80")    # above U+10FFFF
@example(b"\xf0\x9f\x98")        # truncated
@example(b"abcdefgh\xff")        # bad byte after an ASCII run
@example("é€😀".encode())
def test_utf8_validator_matches_python(data):
    try:
        data.decode("utf-8")
        expected = True
    except UnicodeDecodeError:
        expected = False
    assert utf8_valid(data) is expected
