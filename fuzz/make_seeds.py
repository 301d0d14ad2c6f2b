#!/usr/bin/env python3
"""Write the seed corpora fuzz/corpus/header/ and fuzz/corpus/frames/.

Seeds are small, committed inputs that start the fuzzers off inside the
format instead of at random bytes:

- valid headers of many shapes, from two encoders: pycapnp (the reference
  Cap'n Proto implementation, loading wire.capnp with zmicro.wire.load_schema;
  its layouts are legal but not zmicro's canonical one) and zmicro's own writer;
- headers from an older and a newer schema (a prefix of wire.capnp's fields,
  or extra fields appended), so smaller and larger sections are covered;
- hand-made invalid headers, one per reader refusal (far pointer, several
  segments, out-of-bounds pointer, bad text, duplicate key, aliasing, ...);
- multipart messages in fuzz_frames.c's input format, signed seeds carrying a
  MAC made here with hmac/hashlib under fuzz_frames.c's fixed key; events
  (kind 8: one frame, inline body, MAC trailer) among them, and kind 9, the
  first unknown kind.

Every seed is checked against zmicro.decode_header (valid ones decode to the
expected values, invalid ones fail with the expected code), so a seed that
stopped meaning what its label says fails the script instead of silently
drifting.

File names are <label>-<first 16 hex digits of the content's SHA-256>; the
script deletes seeds it no longer makes, so running it twice changes nothing.
--check only reports whether the committed corpora are up to date.

Needs pycapnp and an importable zmicro (the dev install is fine):
    python fuzz/make_seeds.py [--check]
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import struct
import sys
import tempfile
from pathlib import Path

import capnp
from zmicro import Header, WireError, decode_header, wire as zwire
from zmicro.errors import WireErrorCode as E

CORPUS = Path(__file__).resolve().parent / "corpus"

# fuzz_frames.c signs with the same key.
FRAMES_KEY = b"zmicro-fuzz-key-0123456789abcdef"
assert len(FRAMES_KEY) == 32

wire = zwire.load_schema()

# Seeds are headers of the protocol version the readers accept (the frame
# layer refuses others before it looks at a MAC); a few are of others.
V = zwire.WIRE_VERSION

# fuzz_frames.c binds the MAC of an answer to the same "request nonce";
# requests, cancels and pings have an empty binding (zm_mac.h).
FRAMES_BIND = bytes(range(16, 32))

# ---------------------------------------------------------------------------
# Schemas older and newer than wire.capnp. Cap'n Proto lays fields out by
# ordinal, so a prefix of the ordinals is exactly what an older sender
# writes, and appended ordinals what a newer one writes.
# ---------------------------------------------------------------------------
_KIND = """
enum Kind { request @0; reply @1; error @2; streamData @3; streamEnd @4;
            cancel @5; ping @6; pong @7; }
"""
_OLD_TINY = """@0xd3c4f0a1b2c3d4e1;
""" + _KIND + """
struct Header {
  version @0 :UInt16;
  kind @1 :Kind;
  flags @2 :UInt32;
  requestId @3 :UInt64;
}
"""
_OLD_NAMES = """@0xd3c4f0a1b2c3d4e2;
""" + _KIND + """
struct Header {
  version @0 :UInt16;
  kind @1 :Kind;
  flags @2 :UInt32;
  requestId @3 :UInt64;
  deadline @4 :UInt64;
  status @5 :UInt16;
  keyId @6 :UInt32;
  timestamp @7 :UInt64;
  traceIdHigh @8 :UInt64;
  traceIdLow @9 :UInt64;
  spanId @10 :UInt64;
  contentType @11 :Text;
  service @12 :Text;
  endpoint @13 :Text;
}
"""
_NEWER = """@0xd3c4f0a1b2c3d4e3;
""" + _KIND + """
struct Entry { key @0 :Text; value @1 :Data; extra @2 :UInt64; }
struct Header {
  version @0 :UInt16;
  kind @1 :Kind;
  flags @2 :UInt32;
  requestId @3 :UInt64;
  deadline @4 :UInt64;
  status @5 :UInt16;
  keyId @6 :UInt32;
  timestamp @7 :UInt64;
  traceIdHigh @8 :UInt64;
  traceIdLow @9 :UInt64;
  spanId @10 :UInt64;
  contentType @11 :Text;
  service @12 :Text;
  endpoint @13 :Text;
  metadata @14 :List(Entry);
  nonce @15 :Data;
  principal @16 :Text;
  detail @17 :Text;
  maxReplySize @18 :UInt32;
  priority @19 :UInt16;       # fills the hole after status, in word 3
  budget @20 :UInt64;         # a tenth data word
  route @21 :List(Text);      # an eighth pointer
}
"""


def _load(text: str, name: str, tmp: Path):
    path = tmp / name
    path.write_text(text)
    return capnp.load(str(path))


# ---------------------------------------------------------------------------
# Word-level helpers for hand-made headers
# ---------------------------------------------------------------------------
def struct_ptr(at: int, target: int, dw: int, pc: int) -> int:
    return (((target - at - 1) & 0x3FFFFFFF) << 2) | (dw << 32) | (pc << 48)


def list_ptr(at: int, target: int, esz: int, count: int) -> int:
    return (((target - at - 1) & 0x3FFFFFFF) << 2) | 1 | (esz << 32) | (count << 35)


def message(words: list[int], blobs: dict[int, bytes] | None = None) -> bytes:
    """A one-segment message of these words, raw bytes laid over some."""
    body = bytearray(b"".join(struct.pack("<Q", w & (2**64 - 1)) for w in words))
    for at, raw in (blobs or {}).items():
        body[8 * at: 8 * at + len(raw)] = raw
    return struct.pack("<II", 0, len(words)) + bytes(body)


def words_of(frame: bytes) -> list[int]:
    return [w for (w,) in struct.iter_unpack("<Q", frame[8:])]


def patch(frame: bytes, at: int, word: int) -> bytes:
    w = words_of(frame)
    w[at] = word
    return frame[:8] + b"".join(struct.pack("<Q", x & (2**64 - 1)) for x in w)


# ---------------------------------------------------------------------------
# Header seeds
# ---------------------------------------------------------------------------
TYPICAL = dict(
    version=V, kind=0, request_id=0x0123456789ABCDEF, deadline_us=2_500_000,
    timestamp_us=1_767_225_600_000_000, trace_id=0x4BF92F3577B34DA6A3CE929D0E0E4736,
    span_id=0x00F067AA0BA902B7, content_type="application/msgpack",
    service="users", endpoint="get_user",
    metadata={"authorization": b"Bearer abc.def.ghi", "x-tenant": b"acme"},
)


def capnp_header(schema, **fields):
    """Build with pycapnp; metadata as a list of (key, value|None) pairs."""
    meta = fields.pop("metadata", None)
    msg = schema.Header.new_message(**fields)
    if meta is not None:
        entries = msg.init("metadata", len(meta))
        for e, (k, v) in zip(entries, meta):
            e.key = k
            if v is not None:
                e.value = v
    return msg.to_bytes()


def header_seeds(tmp: Path):
    """(label, bytes, expected): expected is a Header, or a WireErrorCode."""
    old_tiny = _load(_OLD_TINY, "old_tiny.capnp", tmp)
    old_names = _load(_OLD_NAMES, "old_names.capnp", tmp)
    newer = _load(_NEWER, "newer.capnp", tmp)
    out = []

    def z(label, **kw):  # zmicro's canonical writer
        h = Header(**kw)
        out.append((label, h.encode(), h))

    def c(label, expected, schema=wire, **kw):  # the reference encoder
        out.append((label, capnp_header(schema, **kw), expected))

    def bad(label, frame, code):
        out.append((label, frame, code))

    # zmicro's own writer
    z("z-empty-v0", version=0)
    z("z-default")
    z("z-request", **TYPICAL)
    z("z-request-signed", **{**TYPICAL, "flags": 1, "key_id": 7,
                             "nonce": bytes(range(24))})
    z("z-reply", kind=1, request_id=42, content_type="application/json")
    z("z-error", kind=2, request_id=42, status=5,
      detail="not found: user 42 — ünïcödé, 日本語, 🙂")
    z("z-stream", kind=3, request_id=9, content_type="application/octet-stream")
    z("z-stream-end", kind=4, request_id=9)
    z("z-cancel", kind=5, request_id=9)
    z("z-ping", kind=6)
    z("z-pong", kind=7, timestamp_us=1)
    z("z-event", kind=8, flags=7, request_id=5, key_id=1, timestamp_us=TYPICAL["timestamp_us"],
      nonce=bytes(range(16)), content_type="application/msgpack",
      service="zmicro.topic.order.created", principal="publisher-key", metadata={"k": b"v"},
      trace_id=2**100 + 7, span_id=9)
    z("z-kind-9", kind=9, request_id=5)  # the header reader carries any kind; frames refuse it
    z("z-all-ones", version=0xFFFF, kind=0xFFFF, flags=0xFFFFFFFF,
      request_id=2**64 - 1, deadline_us=2**64 - 1, status=0xFFFF,
      key_id=0xFFFFFFFF, timestamp_us=2**64 - 1, trace_id=2**128 - 1,
      span_id=2**64 - 1, max_reply_size=2**32 - 1)
    z("z-sparse-data", version=V, span_id=5)  # zeros inside, last word set
    z("z-max-reply", version=V, request_id=3, max_reply_size=65536)  # the ninth word
    z("z-principal-only", principal="spiffe://acme/ns/default/sa/web")
    bad("h-nul-in-text", capnp_header(wire, version=V, detail="a\0b\0"), E.TEXT_NUL)
    z("z-metadata-keys-only", version=V,
      metadata={f"k{i}": b"" for i in range(5)})  # one pointer per entry
    z("z-metadata-64", version=V,
      metadata={f"key-{i:02d}": bytes([i]) * (i % 9) for i in range(64)})
    z("z-max-names", version=V, kind=2, content_type="c" * 255,
      service="é" * 127 + "s", endpoint="🙂" * 63 + "eee",
      principal="p" * 255, detail="d" * 4096)
    # exactly at the 8192-byte limit: 1 + 8 + 7 + 513 + 494 = 1023 words
    z("z-limit-8192", version=V, kind=2, request_id=1, span_id=1,
      detail="x" * 4096, nonce=b"\xa5" * 3952)

    # pycapnp: legal, non-canonical layouts (full sections, set order)
    c("c-empty", Header(version=0))
    c("c-request", Header(**TYPICAL), version=V, kind="request",
      requestId=TYPICAL["request_id"], deadline=TYPICAL["deadline_us"],
      timestamp=TYPICAL["timestamp_us"], traceIdHigh=TYPICAL["trace_id"] >> 64,
      traceIdLow=TYPICAL["trace_id"] & (2**64 - 1), spanId=TYPICAL["span_id"],
      contentType=TYPICAL["content_type"], service=TYPICAL["service"],
      endpoint=TYPICAL["endpoint"],
      metadata=list(TYPICAL["metadata"].items()))
    c("c-reverse-order", Header(version=V, service="s", endpoint="e",
                                detail="d", content_type="t"),
      detail="d", endpoint="e", service="s", contentType="t", version=V)
    c("c-empty-texts", Header(version=V), version=V, contentType="",
      service="", detail="", nonce=b"")  # non-null pointers to empty blobs
    c("c-error", Header(version=V, kind=2, status=13, detail="internal"),
      version=V, kind="error", status=13, detail="internal")
    c("c-metadata", Header(version=V, metadata={"a": b"", "bb": b"2"}),
      version=V, metadata=[("a", None), ("bb", b"2")])
    c("c-old-tiny", Header(version=V, kind=1, flags=0, request_id=77),
      old_tiny, version=V, kind="reply", requestId=77)
    c("c-old-names", Header(version=V, span_id=3, content_type="a/b",
                            service="svc", endpoint="ep"),
      old_names, version=V, spanId=3, contentType="a/b", service="svc",
      endpoint="ep")
    newer_msg = newer.Header.new_message(
        version=V, kind="ping", requestId=5, priority=0xBEEF, budget=99,
        principal="svc-a", maxReplySize=65536)
    newer_msg.init("route", 2)
    newer_msg.route[0] = "hop-1"
    newer_msg.route[1] = "hop-2"
    entries = newer_msg.init("metadata", 1)
    entries[0].key, entries[0].value, entries[0].extra = "k", b"v", 12345
    out.append(("c-newer-schema", newer_msg.to_bytes(),
                Header(version=V, kind=6, request_id=5, principal="svc-a",
                       metadata={"k": b"v"}, max_reply_size=65536)))
    c("c-over-limit", E.TOO_BIG, version=V, detail="y" * 4096,
      nonce=b"\x5a" * 4096)

    # hand-made: the smallest legal headers
    bad("h-null-root", message([0]), Header(version=0))
    bad("h-zero-struct-elsewhere", message([struct_ptr(0, 2, 0, 0), 0]),
        Header(version=0))

    # hand-made refusals, mostly one patched word of a valid header
    req = Header(**TYPICAL).encode()
    dw, pc = 8, 7
    ptrs = 1 + dw  # first pointer word of a canonical header
    bad("h-short", req[:15], E.SHORT)
    bad("h-too-big", message([0] * 1024), E.TOO_BIG)
    # two segments of two words each: table u32 1, u32 2, u32 2, padding
    bad("h-two-segments", struct.pack("<IIII", 1, 2, 2, 0)
        + message([struct_ptr(0, 1, 1, 0), 1, 0, 0])[8:], E.SEGMENTS)
    bad("h-segment-size", req[:4] + struct.pack("<I", len(words_of(req)) + 1)
        + req[8:], E.SEGMENT_SIZE)
    bad("h-unaligned", req + b"\0\0\0\0", E.SEGMENT_SIZE)
    bad("h-far-root", patch(req, 0, (5 << 3) | 2), E.FAR_POINTER)
    bad("h-double-far-root", patch(req, 0, (5 << 3) | 4 | 2), E.FAR_POINTER)
    bad("h-capability-root", patch(req, 0, 3), E.POINTER_KIND)
    bad("h-list-root", patch(req, 0, list_ptr(0, 1, 2, 8)), E.POINTER_KIND)
    bad("h-root-out-of-bounds", patch(req, 0, struct_ptr(0, 1, 8, 700)),
        E.BOUNDS)
    bad("h-root-negative", patch(req, 0, struct_ptr(0, -5, 1, 0)), E.BOUNDS)
    bad("h-far-text", patch(req, ptrs + 1, (2 << 3) | 2), E.FAR_POINTER)
    bad("h-struct-as-text", patch(req, ptrs + 1, struct_ptr(0, 1, 1, 0)),
        E.POINTER_KIND)
    bad("h-text-elem-size", patch(req, ptrs + 1,
                                  words_of(req)[ptrs + 1] & ~(7 << 32) | (3 << 32)),
        E.POINTER_KIND)
    bad("h-text-out-of-bounds", patch(req, ptrs + 1,
                                      list_ptr(ptrs + 1, 60, 2, 4000)), E.BOUNDS)
    no_nul = bytearray(Header(version=V, service="abcdefg").encode())
    no_nul[-1] = ord("h")
    bad("h-text-no-nul", bytes(no_nul), E.TEXT_NUL)
    bad("h-text-empty-list", patch(Header(version=V, service="a").encode(),
                                   3, list_ptr(3, 4, 2, 0)), E.TEXT_NUL)
    for label, raw in (("overlong", b"\xc0\xaf"), ("surrogate", b"\xed\xa0\x80"),
                       ("above-max", b"\xf4\x90\x80\x80"),
                       ("truncated", b"ab\xe2\x82"), ("lone-cont", b"\x80abc")):
        frame = bytearray(Header(version=V, endpoint="_" * len(raw)).encode())
        start = len(frame) - 8 * ((len(raw) + 8) // 8)
        frame[start:start + len(raw)] = raw
        bad(f"h-utf8-{label}", bytes(frame), E.TEXT_UTF8)
    long_name = bytearray(Header(version=V, service="s" * 255).encode())
    long_name += b"\0" * 8
    long_name[4:8] = struct.pack("<I", len(long_name) // 8 - 1)
    w = words_of(bytes(long_name))
    w[3] = list_ptr(3, 4, 2, 257)
    text_256 = message(w, {4: b"s" * 256 + b"\0"})
    bad("h-name-256", text_256, E.TEXT_SIZE)
    bad("h-metadata-byte-list",
        patch(req, ptrs + 3, list_ptr(ptrs + 3, 0, 2, 8)), E.POINTER_KIND)
    meta = Header(version=V, metadata={"a": b"1", "b": b"2"}).encode()
    mw = words_of(meta)
    # a version alone: dw=1; pointers start at word 2, metadata is pointer 3
    mp = 2 + 3
    tag_at = mp + 1 + (mw[mp] >> 2 & 0x3FFFFFFF)
    bad("h-metadata-tag-list", patch(meta, tag_at, mw[tag_at] | 1),
        E.POINTER_KIND)
    bad("h-metadata-tag-count", patch(meta, tag_at, mw[tag_at] + (9 << 2)),
        E.BOUNDS)
    dup = bytearray(meta)
    dup[dup.rindex(b"b\0")] = ord("a")
    bad("h-metadata-dup-key", bytes(dup), E.METADATA_KEY)
    bad("h-metadata-empty-key",
        capnp_header(wire, version=V, metadata=[("", b"x")]), E.METADATA_KEY)
    bad("h-metadata-65",
        capnp_header(wire, version=V, metadata=[(f"{i}", None) for i in range(65)]),
        E.METADATA_COUNT)
    # aliasing: 64 entries whose values all point at one 4000-byte blob, so
    # a 5.5 KB frame would make the reader traverse 256 KB
    n = 64
    words = [struct_ptr(0, 1, 0, 4), 0, 0, 0,
             list_ptr(4, 5, 7, 2 * n), (n << 2) | (2 << 48)]
    keys_at = 6 + 2 * n
    blob_at = keys_at + n
    words += [0] * (2 * n + n + 500)
    blobs = {}
    for i in range(n):
        e = 6 + 2 * i
        blobs[keys_at + i] = bytes([0x41 + i % 26, 0x30 + i // 26, 0])
        words[e] = list_ptr(e, keys_at + i, 2, 3)
        words[e + 1] = list_ptr(e + 1, blob_at, 2, 4000)
    bad("h-aliasing-bomb", message(words, blobs), E.TRAVERSAL)
    return out


# ---------------------------------------------------------------------------
# Frame seeds, in fuzz_frames.c's format
# ---------------------------------------------------------------------------
def mac(alg: int, key: bytes, binding: bytes, frames: list[bytes]) -> bytes:
    """zm_mac.h's definition (version 2), independent of zmicro's code."""
    items = [binding, *frames]
    h = (hmac.new(key, digestmod=hashlib.sha256) if alg == 1
         else hashlib.blake2b(key=key, digest_size=32))
    h.update(b"zmicro-mac-v2" + struct.pack("<I", len(items)))
    for f in items:
        h.update(struct.pack("<Q", len(f)) + f)
    return h.digest()


def frames_input(frames: list[bytes], ctl: int = 32) -> bytes:
    out = bytearray([ctl])
    for f in frames:
        assert len(f) < 65536
        out += struct.pack("<H", len(f)) + f
    return bytes(out)


def frame_seeds():
    """(label, bytes) pairs; labels say what the unrouted parse meets
    (fuzz_frames.c parses every input routed as well)."""
    req = Header(**TYPICAL).encode()
    signed = Header(**{**TYPICAL, "flags": 1, "key_id": 1,
                       "nonce": bytes(range(16))}).encode()
    signed_reply = Header(version=V, kind=1, flags=1, request_id=7, key_id=1,
                          timestamp_us=TYPICAL["timestamp_us"], nonce=bytes(range(32, 48)),
                          content_type="application/msgpack").encode()
    body = b"\x82\xa2id\x2a\xa4name\xa5alice"  # msgpack {"id": 42, "name": "alice"}
    rid = b"\x00\x6b\x8b\x45\x67"  # libzmq's 5-byte generated identity
    out = []

    def add(label, frames, ctl=32):
        out.append((label, frames_input(frames, ctl)))

    add("request", [req, body])
    add("request-no-body", [req])
    add("request-empty-body", [req, b""])
    add("reply-3-bodies", [Header(kind=1, request_id=1).encode(), body, b"", body])
    add("routed-request", [rid, req, body])
    for alg, name in ((1, "hmac"), (2, "blake2b")):
        add(f"signed-{name}", [signed, body, mac(alg, FRAMES_KEY, b"", [signed, body])])
        add(f"signed-{name}-no-body", [signed, mac(alg, FRAMES_KEY, b"", [signed])])
        add(f"routed-signed-{name}",
            [rid, signed, body, body, mac(alg, FRAMES_KEY, b"", [signed, body, body])])
        add(f"signed-reply-{name}",
            [signed_reply, body, mac(alg, FRAMES_KEY, FRAMES_BIND, [signed_reply, body])])
    bodies = [bytes([i]) * i for i in range(14)]
    add("signed-16-frames",
        [signed, *bodies, mac(1, FRAMES_KEY, b"", [signed, *bodies])], ctl=16)
    add("signed-key-64", [signed, body, mac(2, FRAMES_KEY, b"", [signed, body])], ctl=64)
    add("signed-key-15", [signed, body, mac(1, FRAMES_KEY, b"", [signed, body])], ctl=15)
    add("signed-key-65", [signed, body, mac(1, FRAMES_KEY, b"", [signed, body])], ctl=65)
    # bound to the wrong exchange: an answer signed as if it opened one
    add("signed-reply-unbound",
        [signed_reply, body, mac(1, FRAMES_KEY, b"", [signed_reply, body])])
    add("signed-wrong-mac", [signed, body, b"\0" * 32])
    add("signed-no-mac", [signed])
    add("signed-mac-31", [signed, body, b"m" * 31])
    add("unsigned-16-frames", [req, *[b"b"] * 15])
    add("unsigned-17-frames", [req, *[b"b"] * 16])
    add("routed-18-frames", [rid, req, *[b"b"] * 16])
    add("routed-empty-id", [b"", req])
    # Inline bodies: the body after the header message, in its frame.
    inline = Header(**{**TYPICAL, "flags": 2}).encode()
    add("inline-request", [inline + body])
    add("inline-empty", [inline])
    add("routed-inline", [rid, inline + body])
    add("inline-and-body-frame", [inline + body, body])
    add("trailing-without-flag", [req + body])
    signed_inline = Header(**{**TYPICAL, "flags": 3}).encode()
    add("signed-inline", [signed_inline + body,
                          mac(1, FRAMES_KEY, b"", [signed_inline + body])])
    trailer = Header(**{**TYPICAL, "flags": 1 | 2 | 4}).encode() + body
    add("signed-trailer", [trailer + mac(2, FRAMES_KEY, b"", [trailer])])
    pong = Header(version=V, kind=7, flags=1 | 4, request_id=5).encode()
    add("signed-pong-trailer", [pong + mac(1, FRAMES_KEY, FRAMES_BIND, [pong])])
    add("version-0", [Header(version=0, request_id=3).encode()])
    add("version-1", [Header(version=1, request_id=3).encode(), body])
    add("version-3", [Header(version=3, request_id=3).encode(), body])
    add("kind-9", [Header(kind=9, request_id=3).encode()])
    # Events: one frame, the body inline, the MAC a trailer (bound to nothing).
    event = Header(version=V, kind=8, flags=1 | 2 | 4, request_id=11, key_id=1,
                   timestamp_us=TYPICAL["timestamp_us"], nonce=bytes(range(48, 64)),
                   content_type="application/msgpack",
                   service="zmicro.topic.order.created").encode() + body
    for alg, name in ((1, "hmac"), (2, "blake2b")):
        add(f"event-signed-{name}", [event + mac(alg, FRAMES_KEY, b"", [event])])
        add(f"routed-event-{name}", [rid, event + mac(alg, FRAMES_KEY, b"", [event])])
    add("event-unsigned", [Header(version=V, kind=8, flags=2, request_id=12,
                                  nonce=bytes(16)).encode() + body])
    add("event-body-frame", [Header(version=V, kind=8, request_id=13).encode(), body])
    add("empty", [])
    add("bad-header", [b"\x01\x00\x00\x00" + req[4:]])
    return out


# ---------------------------------------------------------------------------
def check_header_seed(label: str, data: bytes, expected) -> None:
    try:
        got = decode_header(data)
    except WireError as exc:
        if isinstance(expected, Header) or exc.code != expected:
            sys.exit(f"{label}: expected {expected!r}, decode failed: {exc}")
        return
    if not isinstance(expected, Header) or got != expected:
        sys.exit(f"{label}: expected {expected!r}, decoded {got!r}")
    if decode_header(got.encode()) != got:
        sys.exit(f"{label}: does not survive a round trip")


def check_mac_helper() -> None:
    """mac() must agree with zmicro's, or the signed seeds sign nothing."""
    from zmicro import mac as zmac
    frames = [b"header", b"", b"body"]
    for alg in (1, 2):
        for binding in (b"", FRAMES_BIND):
            if zmac.compute(alg, FRAMES_KEY, [binding, *frames]) != \
                    mac(alg, FRAMES_KEY, binding, frames):
                sys.exit(f"make_seeds.mac disagrees with zmicro.mac for alg {alg}")


def build() -> dict[str, dict[str, bytes]]:
    check_mac_helper()
    with tempfile.TemporaryDirectory() as tmp:
        headers = header_seeds(Path(tmp))
    corpora: dict[str, dict[str, bytes]] = {"header": {}, "frames": {}}
    seen: set[bytes] = set()
    for label, data, expected in headers:
        check_header_seed(label, data, expected)
        if data not in seen:
            seen.add(data)
            name = f"{label}-{hashlib.sha256(data).hexdigest()[:16]}"
            corpora["header"][name] = data
    for label, data in frame_seeds():
        name = f"{label}-{hashlib.sha256(data).hexdigest()[:16]}"
        corpora["frames"][name] = data
    return corpora


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true",
                    help="exit 1 if the committed corpora are not what this "
                         "script makes; write nothing")
    args = ap.parse_args()
    stale = False
    for corpus, files in build().items():
        d = CORPUS / corpus
        present = {p.name for p in d.iterdir()} if d.is_dir() else set()
        for name in sorted(present - files.keys()):
            stale = True
            print(f"{'stale' if args.check else 'removed'}: {d / name}")
            if not args.check:
                (d / name).unlink()
        for name, data in sorted(files.items()):
            path = d / name
            if name in present and path.read_bytes() == data:
                continue
            stale = True
            print(f"{'missing' if args.check else 'wrote'}: {path}")
            if not args.check:
                d.mkdir(parents=True, exist_ok=True)
                path.write_bytes(data)
        print(f"{corpus}: {len(files)} seeds, "
              f"{sum(map(len, files.values()))} bytes")
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
