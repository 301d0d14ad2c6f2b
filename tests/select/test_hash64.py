"""The key hash (src/zm_hash.c) against an independent Python rendering of
its definition: FNV-1a 64 (checked on published vectors), the length
folded in, the 64-bit finalizer. Every client must hash a key the same way,
so the function is pinned by its definition, not by its own output."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from zmicro import _core

M64 = (1 << 64) - 1


def fnv1a64(data: bytes) -> int:
    h = 0xCBF29CE484222325
    for b in data:
        h = ((h ^ b) * 0x100000001B3) & M64
    return h


def mix64(x: int) -> int:
    x ^= x >> 33
    x = (x * 0xFF51AFD7ED558CCD) & M64
    x ^= x >> 33
    x = (x * 0xC4CEB9FE1A85EC53) & M64
    x ^= x >> 33
    return x


def reference(data: bytes) -> int:
    return mix64(fnv1a64(data) ^ ((len(data) * 0x9E3779B97F4A7C15) & M64))


def test_fnv1a_reference_matches_published_vectors():
    # FNV-1a 64-bit test vectors (Fowler, Noll, Vo: isthe.com/chongo/tech/comp/fnv)
    assert fnv1a64(b"") == 0xCBF29CE484222325
    assert fnv1a64(b"a") == 0xAF63DC4C8601EC8C
    assert fnv1a64(b"foobar") == 0x85944171F73967E8


@given(st.binary(max_size=200))
def test_hash64_is_the_definition(data):
    assert _core._hash64(data) == reference(data)


@given(st.text(max_size=50))
def test_str_hashes_as_utf8(text):
    assert _core._hash64(text) == _core._hash64(text.encode())


def test_hash64_type():
    import pytest

    with pytest.raises(TypeError, match="data"):
        _core._hash64(3)
