"""The acked set's fingerprint is keyed (src/zm_replay.c): a nonce crafted
to share another's fingerprint under the old public mix is a new event,
not a duplicate of the acked one, seen through zmicro._core.EventInbox."""

from __future__ import annotations

import struct

from zmicro._core import EventInbox, encode_event

_MUL = 0xD6E8FEB86659FD93
_M64 = (1 << 64) - 1


def _rot32(x: int) -> int:
    return ((x << 32) | (x >> 32)) & _M64


def _unkeyed_print(nonce: bytes) -> int:
    """The fingerprint the set used before it was keyed."""
    lo, hi = struct.unpack("<QQ", nonce)
    return lo ^ _rot32((hi * _MUL) & _M64)


def _twin(nonce: bytes) -> bytes:
    """Another nonce with `nonce`'s unkeyed fingerprint: the attack."""
    lo, hi = struct.unpack("<QQ", nonce)
    hi2 = (hi + 1) & _M64
    lo2 = _unkeyed_print(nonce) ^ _rot32((hi2 * _MUL) & _M64)
    return struct.pack("<QQ", lo2, hi2)


def test_a_crafted_colliding_nonce_is_not_a_duplicate():
    inbox = EventInbox("order.created", secrets=None)
    frame, event_id = encode_event("order.created", b"\x01", secrets=None, request_id=1)
    twin_id = _twin(event_id)
    assert twin_id != event_id and _unkeyed_print(twin_id) == _unkeyed_print(event_id)
    # Unsigned (insecure): the nonce is carried as is, so another event can
    # be made by swapping it in the frame.
    assert frame.count(event_id) == 1
    twin_frame = frame.replace(event_id, twin_id)

    first = inbox.check(frame)
    assert not first.duplicate
    inbox.acked(first)

    second = inbox.check(twin_frame)
    assert second.event_id == twin_id
    assert not second.duplicate  # before the fix: True, acked without running
    again = inbox.check(frame)
    assert again.duplicate  # the acked one is still remembered
