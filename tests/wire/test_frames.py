"""The multipart layout: [routing id] header body* [mac] (src/zm_frame.c)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

import zmicro
from zmicro import WireError, WireErrorCode as E, wire
from zmicro.security.mac import Alg

HEADER = zmicro.Header(request_id=5, service="svc", endpoint="Svc.Call").encode()
SIGNED = zmicro.Header(request_id=5, flags=wire.FLAG_SIGNED).encode()
KEY = bytes(range(32))


def code_of(frames, routed=False) -> E:
    with pytest.raises(WireError) as err:
        wire.parse_frames(frames, routed=routed)
    return err.value.code


def test_request_layout():
    m = wire.parse_frames([b"peer", HEADER, b"a", b"b"], routed=True)
    assert (m.routing_id, m.bodies, m.mac) == (b"peer", [b"a", b"b"], None)
    assert m.header.request_id == 5 and m.raw_header == HEADER


def test_reply_layout_without_bodies():
    m = wire.parse_frames([HEADER])
    assert (m.routing_id, m.bodies, m.mac) == (None, [], None)


def test_signed_layout():
    # The MAC input: the binding (empty for a request), then the frames.
    tag = zmicro.mac.compute(Alg.HMAC_SHA256, KEY, [b"", SIGNED, b"body"])
    m = wire.parse_frames([SIGNED, b"body", tag])
    assert m.bodies == [b"body"] and m.mac == tag
    assert m.verify(Alg.HMAC_SHA256, KEY)
    assert not m.verify(Alg.HMAC_SHA256, bytes(32))
    assert not m.verify(Alg.BLAKE2B, KEY)


def test_signed_answer_is_bound_to_its_request_nonce():
    nonce = bytes(range(100, 116))
    tag = zmicro.mac.compute(Alg.HMAC_SHA256, KEY, [nonce, SIGNED, b"body"])
    m = wire.parse_frames([SIGNED, b"body", tag])
    assert m.verify(Alg.HMAC_SHA256, KEY, nonce)
    assert not m.verify(Alg.HMAC_SHA256, KEY)              # unbound
    assert not m.verify(Alg.HMAC_SHA256, KEY, bytes(16))   # another request's


def test_unsigned_message_does_not_verify():
    assert not wire.parse_frames([HEADER, b"x" * 32]).verify(Alg.HMAC_SHA256, KEY)


@pytest.mark.parametrize("frames, routed", [([], False), ([b"peer"], True)])
def test_no_header(frames, routed):
    assert code_of(frames, routed) == E.NO_HEADER


@pytest.mark.parametrize("routed", [False, True])
def test_frame_count(routed):
    ok = [b"peer"] * routed + [HEADER] + [b"b"] * (zmicro.mac.FRAME_MAX - 1)
    assert len(wire.parse_frames(ok, routed=routed).bodies) == zmicro.mac.FRAME_MAX - 1
    assert code_of(ok + [b"b"], routed) == E.FRAME_COUNT
    assert code_of(ok + [b"b"] * 50, routed) == E.FRAME_COUNT


@pytest.mark.parametrize("version", [0, 1, 3, 65535])
def test_version(version):
    data = zmicro.Header(version=version).encode()
    assert code_of([data]) == E.VERSION


def test_event_kind_is_known():
    # kind 8 (event) is the highest kind; an event is one frame, body inline.
    head = zmicro.Header(kind=wire.Kind.EVENT, request_id=3, service="zmicro.topic.t",
                         flags=wire.FLAG_BODY_INLINE).encode()
    m = wire.parse_frames([head + b"payload"])
    assert (m.header.kind, m.bodies, m.mac) == (wire.Kind.EVENT, [b"payload"], None)


@pytest.mark.parametrize("kind", [9, 1000])
def test_kind(kind):
    assert code_of([zmicro.Header(kind=kind).encode()]) == E.KIND


@pytest.mark.parametrize("frames", [
    [SIGNED],                      # no MAC frame at all
    [SIGNED, b"x" * 31],           # MAC frame too short
    [SIGNED, b"body", b"x" * 33],  # too long
])
def test_mac_frame(frames):
    assert code_of(frames) == E.MAC_FRAME


def test_routing_id():
    assert code_of([b"", HEADER], routed=True) == E.ROUTING_ID


def test_header_errors_pass_through():
    assert code_of([b"not a header"]) == E.SHORT
    assert code_of([b"x" * 16, b"body"]) == E.SEGMENTS


@given(st.lists(st.binary(max_size=40), max_size=20), st.booleans())
def test_arbitrary_frames_never_crash(frames, routed):
    try:
        m = wire.parse_frames(frames, routed=routed)
    except WireError as e:
        assert isinstance(e.code, E)
    else:
        assert m.header.version == wire.WIRE_VERSION


INLINE = zmicro.Header(request_id=9, flags=wire.FLAG_BODY_INLINE).encode()


@given(st.binary(max_size=3000), st.booleans())
def test_inline_body(body, routed):
    frames = [b"peer"] * routed + [INLINE + body]
    m = wire.parse_frames(frames, routed=routed)
    assert m.inline and m.bodies == [body] and m.raw_header == INLINE + body
    assert m.header.request_id == 9


def test_inline_body_and_body_frames_both():
    assert code_of([INLINE + b"x", b"more"]) == E.INLINE_BODY
    assert code_of([INLINE, b""]) == E.INLINE_BODY


def test_bytes_after_the_header_need_the_flag():
    """Without BODY_INLINE the frame is the header exactly, as before."""
    assert code_of([HEADER + b"x"]) == E.SEGMENT_SIZE
    assert code_of([HEADER + bytes(8)]) == E.SEGMENT_SIZE


def test_inline_frame_may_exceed_the_header_limit():
    """The 8 KiB cap is the header's; an inline body may make the frame longer."""
    body = b"b" * 60_000
    assert wire.parse_frames([INLINE + body]).bodies == [body]
    big = zmicro.Header(flags=wire.FLAG_BODY_INLINE, detail="d" * 4000, nonce=b"n" * 4000)
    data = big.encode()
    assert len(data) <= wire.MAX_HEADER
    assert wire.parse_frames([data + body]).bodies == [body]


def test_inline_header_claiming_more_than_the_frame():
    assert code_of([INLINE[:-8]]) == E.SEGMENT_SIZE


def test_signed_inline_mac_covers_the_whole_frame():
    h = zmicro.Header(request_id=3, flags=wire.FLAG_BODY_INLINE | wire.FLAG_SIGNED).encode()
    frame = h + b"body"
    tag = zmicro.mac.compute(Alg.HMAC_SHA256, KEY, [b"", frame])
    m = wire.parse_frames([frame, tag])
    assert m.bodies == [b"body"] and m.verify(Alg.HMAC_SHA256, KEY)
    tampered = wire.parse_frames([h + b"bodY", tag])
    assert not tampered.verify(Alg.HMAC_SHA256, KEY)


# -- MAC_TRAILER: the MAC at the end of the one frame (bit 2 of flags) ----------

F_SIGNED, F_INLINE, F_TRAILER = 1, 2, 4


@pytest.mark.parametrize("body", [None, b"", b"payload"])
def test_mac_trailer_layout(body):
    inline = body is not None
    head = zmicro.Header(request_id=3, flags=F_SIGNED | F_TRAILER | (F_INLINE if inline else 0)).encode()
    tag = bytes(range(32))
    m = zmicro._core.parse_frames([head + (body or b"") + tag])
    assert m.mac == tag
    assert m.raw_header == head + (body or b"")  # what the MAC covers
    assert m.bodies == ([body] if inline else [])


def test_mac_trailer_refusals():
    head = zmicro.Header(flags=F_SIGNED | F_TRAILER).encode()
    with pytest.raises(WireError) as err:  # a body frame after a trailer-signed header
        zmicro._core.parse_frames([head + b"t" * 32, b"body"])
    assert err.value.code == E.MAC_FRAME
    with pytest.raises(WireError) as err:  # too short to hold the MAC
        zmicro._core.parse_frames([head + b"t" * 31])
    assert err.value.code == E.MAC_FRAME
    # Without SIGNED the bit means nothing: the frame must be the header.
    plain = zmicro.Header(flags=F_TRAILER).encode()
    assert zmicro._core.parse_frames([plain]).mac is None
    with pytest.raises(WireError) as err:
        zmicro._core.parse_frames([plain + b"t" * 32])
    assert err.value.code == E.SEGMENT_SIZE


@given(flags=st.sampled_from([0, F_SIGNED, F_SIGNED | F_TRAILER]),
       body=st.binary(max_size=64), status=st.integers(0, 16))
def test_not_processed_is_read_in_any_layout(flags, body, status):
    """NOT_PROCESSED (bit 3, on errors) changes no layout rule: the frames
    parse as without it and the flag reads back."""
    np = wire.FLAG_NOT_PROCESSED
    head = zmicro.Header(kind=wire.Kind.ERROR, request_id=9, status=status,
                         flags=flags | np).encode()
    if flags & F_TRAILER:
        frames = [head + b"t" * 32]
    elif flags & F_SIGNED:
        frames = [head, body, b"t" * 32]
    else:
        frames = [head, body]
    m = wire.parse_frames(frames)
    assert m.header.flags & np and m.header.status == status
    assert wire.Flags(m.header.flags) & wire.Flags.NOT_PROCESSED
    assert m.bodies == ([] if flags & F_TRAILER else [body])
