"""zmicro's headers read by the official Cap'n Proto C++ library (libcapnp),
the way docs/protocol.md section 3.8 tells other implementations to: the
frame handed over at an address that is not 8-byte aligned (as libzmq
does), the header message copied into words, the traversal limit of 3.5
(header bytes / 8), every field equal to what zmicro wrote.

``tests/wire/cxx/read_header.c++`` is compiled once per session, with the
code ``capnp compile -oc++`` generates from wire.capnp written to a temporary
directory. It needs the ``capnp`` tool, the library's headers and a C++
compiler (Debian: ``capnproto libcapnp-dev g++``); without them these tests
fail when ``CI`` is set and skip otherwise.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
from pathlib import Path

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

import zmicro
from zmicro import wire

from .capnp_words import (
    PTR_DETAIL, PTR_NONCE, PTR_SERVICE, TEXT_ELEM, header_with_pointers, list_ptr, tail_offset,
    text_words,
)
from .strategies import canonical_size, headers
from .test_pycapnp import current, known_kinds, to_capnp

SOURCE = Path(__file__).with_name("cxx") / "read_header.c++"
CXX = os.environ.get("CXX", "c++")
TRAVERSAL_ERROR = "error Exceeded message traversal limit."


def _unavailable(reason: str):
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI needs Debian's capnproto and libcapnp-dev)")
    pytest.skip(f"{reason}: install capnproto and libcapnp-dev (Debian) and a C++ compiler")


def _run(args: list[str], what: str):
    done = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{what} failed:\n{done.stderr}"


@pytest.fixture(scope="session")
def read_header_exe(tmp_path_factory) -> Path:
    """read_header.c++ built against libcapnp, with wire.capnp's generated code."""
    for tool in ("capnp", CXX):
        if shutil.which(tool) is None:
            _unavailable(f"{tool} not found")
    tmp = tmp_path_factory.mktemp("cxx")
    probe = tmp / "probe.c++"
    probe.write_text("#include <capnp/serialize.h>\nint main() { return 0; }\n")
    if subprocess.run([CXX, "-std=c++14", str(probe), "-o", str(tmp / "probe"),
                       "-lcapnp", "-lkj"], capture_output=True).returncode != 0:
        _unavailable("libcapnp's headers or libraries not found")
    gen = tmp / "gen"
    gen.mkdir()
    _run(["capnp", "compile", f"-oc++:{gen}", f"--src-prefix={wire.SCHEMA.parent}",
          str(wire.SCHEMA)], "capnp compile")
    exe = tmp / "read_header"
    # The generated code is not ours to keep warning-free: -isystem.
    _run([CXX, "-std=c++14", "-O1", "-Wall", "-Wextra", "-Werror", "-isystem", str(gen),
          str(SOURCE), "-o", str(exe), "-lcapnp", "-lkj"], "compiling read_header.c++")
    return exe


class Reader:
    """One read_header process for the session: a frame in, a line out."""

    def __init__(self, exe: Path):
        self.process = subprocess.Popen([str(exe)], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE)

    def line(self, frame: bytes, *, limit: int | None = None) -> str:
        """read_header's answer; `limit` replaces the doc's traversal limit."""
        size = 8 + 8 * int.from_bytes(frame[4:8], "little")
        adjustment = 0 if limit is None else limit - size // 8
        self.process.stdin.write(struct.pack("<Ii", len(frame), adjustment) + frame)
        self.process.stdin.flush()
        answer = self.process.stdout.readline().decode()
        assert answer.endswith("\n"), "read_header died"
        return answer.rstrip("\n")

    def read(self, frame: bytes) -> tuple[zmicro.Header, bytes]:
        """The header and inline body read with the doc's traversal limit."""
        return parse(self.line(frame))

    def close(self):
        self.process.stdin.close()
        assert self.process.wait(timeout=30) == 0


@pytest.fixture(scope="session")
def reader(read_header_exe):
    r = Reader(read_header_exe)
    yield r
    r.close()


def parse(line: str) -> tuple[zmicro.Header, bytes]:
    """read_header's "ok" line as a Header and the inline body."""
    assert line.startswith("ok "), line
    fields = line.split()[1:]
    (version, kind, flags, request_id, deadline, status, key_id, timestamp, trace_hi,
     trace_lo, span_id, max_reply_size) = map(int, fields[:12])
    content_type, service, endpoint, nonce, principal, detail, body = (
        bytes.fromhex(f[1:]) for f in fields[12:19])
    n = int(fields[19])
    pairs = [bytes.fromhex(f[1:]) for f in fields[20:]]
    assert len(pairs) == 2 * n
    header = zmicro.Header(
        version=version, kind=kind, flags=flags, request_id=request_id, deadline_us=deadline,
        status=status, key_id=key_id, timestamp_us=timestamp,
        trace_id=trace_hi << 64 | trace_lo, span_id=span_id, max_reply_size=max_reply_size,
        content_type=content_type.decode(), service=service.decode(),
        endpoint=endpoint.decode(), nonce=nonce, principal=principal.decode(),
        detail=detail.decode(), metadata={k.decode(): v for k, v in zip(pairs[::2], pairs[1::2])})
    return header, body


def assert_reads_exactly(reader: Reader, h: zmicro.Header, body: bytes = b""):
    """h, written by zmicro (with `body` inline when its flags say so), reads
    back equal with the doc's limit, and one word less is refused: the limit
    is the smallest that works (zmicro writes no gaps, so every word but the
    root pointer is charged, and the root pointer twice)."""
    frame = h.encode()
    inline = body if h.flags & wire.FLAG_BODY_INLINE else b""
    assert reader.read(frame + inline) == (h, inline)
    assert reader.line(frame + inline, limit=len(frame) // 8 - 1).startswith(TRAVERSAL_ERROR)


# -- the schema ---------------------------------------------------------------


def test_the_generated_flag_constants_are_zmicro_flags(read_header_exe):
    out = subprocess.run([str(read_header_exe), "--constants"], capture_output=True,
                         text=True, check=True, timeout=30).stdout
    constants = dict(line.split() for line in out.splitlines())
    assert {name: int(value) for name, value in constants.items()} == {
        name: getattr(wire, name) for name in
        ("FLAG_SIGNED", "FLAG_BODY_INLINE", "FLAG_MAC_TRAILER", "FLAG_NOT_PROCESSED")}


# -- the numbers of section 3.5 -----------------------------------------------


def test_a_pong_needs_4_words(reader):
    pong = zmicro.Header(kind=zmicro.Kind.PONG, request_id=7)
    assert len(pong.encode()) == 32
    assert reader.line(pong.encode(), limit=4).startswith("ok ")
    assert reader.line(pong.encode(), limit=3).startswith(TRAVERSAL_ERROR)


def _largest(**fields) -> zmicro.Header:
    """A header of exactly wire.MAX_HEADER bytes: `fields` plus a nonce grown
    to fill it."""
    for n in range(0, wire.MAX_VALUE + 1, 8):
        h = zmicro.Header(nonce=b"n" * n, **fields)
        if canonical_size(h) == wire.MAX_HEADER:
            return h
    raise AssertionError(f"no nonce fills {fields}")


LARGEST = [
    _largest(kind=zmicro.Kind.ERROR, request_id=2**64 - 1, status=16, service="s" * 255,
             detail="d" * wire.MAX_VALUE, flags=wire.FLAG_NOT_PROCESSED),
    _largest(kind=zmicro.Kind.REQUEST, request_id=1, deadline_us=1, trace_id=2**128 - 1,
             span_id=3, content_type="c" * 255, service="s" * 255, endpoint="e" * 255,
             principal="p" * 255,
             metadata={f"key{i:02}": bytes([i]) * 40 for i in range(wire.MAX_METADATA)}),
    _largest(kind=zmicro.Kind.REQUEST, metadata={f"k{i}": b"" for i in range(wire.MAX_METADATA)},
             detail="é" * 2000),
]


@pytest.mark.parametrize("h", LARGEST, ids=["error", "request", "empty-values"])
def test_the_largest_headers_need_1024_words(reader, h):
    assert len(h.encode()) == wire.MAX_HEADER == 1024 * 8
    assert_reads_exactly(reader, h)


# -- every kind, flag and field ------------------------------------------------

SIGNED = dict(flags=wire.FLAG_SIGNED, key_id=3, timestamp_us=1_700_000_000_000_000,
              nonce=bytes(range(16)))
EXAMPLES = {
    "request": zmicro.Header(
        kind=zmicro.Kind.REQUEST, request_id=1, deadline_us=5_000_000,
        trace_id=0x0af7651916cd43dd8448eb211c80319c, span_id=0xb7ad6b7169203331,
        max_reply_size=65536, content_type="application/json", service="greeter",
        endpoint="Greeter.Hello",
        metadata={"user": b"ada", "empty": b"", "bin": bytes(range(256))}),
    "request-signed-inline": zmicro.Header(
        kind=zmicro.Kind.REQUEST, request_id=2, service="greeter", endpoint="Greeter.Hello",
        **{**SIGNED, "flags": wire.FLAG_SIGNED | wire.FLAG_BODY_INLINE | wire.FLAG_MAC_TRAILER}),
    "reply": zmicro.Header(kind=zmicro.Kind.REPLY, request_id=3,
                           content_type="application/msgpack"),
    "reply-inline": zmicro.Header(kind=zmicro.Kind.REPLY, request_id=3,
                                  flags=wire.FLAG_BODY_INLINE, content_type="application/json"),
    "error": zmicro.Header(kind=zmicro.Kind.ERROR, request_id=4, status=14,
                           flags=wire.FLAG_NOT_PROCESSED, service="greeter",
                           detail="this node serves ünïcode ✓"),
    "stream-data": zmicro.Header(kind=zmicro.Kind.STREAM_DATA, request_id=5),
    "stream-end": zmicro.Header(kind=zmicro.Kind.STREAM_END, request_id=5),
    "cancel": zmicro.Header(kind=zmicro.Kind.CANCEL, request_id=6, **SIGNED),
    "ping": zmicro.Header(kind=zmicro.Kind.PING, request_id=2**64 - 1),
    "pong": zmicro.Header(kind=zmicro.Kind.PONG, request_id=2**64 - 1),
    "unknown-kind-all-flags": zmicro.Header(kind=0xFFFF, flags=0xFFFFFFFF, version=0xFFFF,
                                            principal="gateway"),
    "all-defaults": zmicro.Header(version=0),
}


@pytest.mark.parametrize("h", list(EXAMPLES.values()), ids=list(EXAMPLES))
def test_each_kind_reads_field_by_field(reader, h):
    assert_reads_exactly(reader, h, body=b'{"name":"Ada"}')


@given(h=headers(), body=st.binary(max_size=100))
def test_any_header_zmicro_writes(reader, h, body):
    assume(canonical_size(h) <= wire.MAX_HEADER)
    assert_reads_exactly(reader, h, body)


# -- valid layouts zmicro does not write ---------------------------------------


@given(headers(kinds=known_kinds))
def test_any_header_pycapnp_writes(reader, h):
    """pycapnp's layouts (full sections, its own object order) read within
    the same limit: the rule holds for any header that follows section 3.3."""
    msg = current.Header.new_message(**to_capnp(h))
    assume(len(msg.to_segments()) == 1)
    frame = msg.to_bytes()
    assume(len(frame) <= wire.MAX_HEADER)
    assert reader.read(frame) == (h, b"")


def test_an_older_senders_layout_with_a_gap(reader):
    """One data word, a gap word no pointer reaches, a non-null empty text."""
    words = text_words(b"svc\0")
    frame = header_with_pointers({
        PTR_SERVICE: list_ptr(tail_offset(PTR_SERVICE, 1), TEXT_ELEM, 4),
        PTR_DETAIL: list_ptr(tail_offset(PTR_DETAIL, 2), TEXT_ELEM, 1),
    }, [0xDEAD] + words + [0])
    h = zmicro.decode_header(frame)
    assert (h.service, h.detail) == ("svc", "")
    assert reader.read(frame) == (h, b"")


# -- aliasing: refused as zmicro refuses it ------------------------------------


def test_aliasing_is_refused_as_zmicro_refuses_it(reader):
    """detail and nonce point at one blob: zmicro's budget says TRAVERSAL,
    and the C++ library with the doc's limit refuses it too (it charges
    exactly 2 words more than zmicro: the root pointer, twice)."""
    blob = b"d" * 99 + b"\0"
    one = {PTR_DETAIL: list_ptr(tail_offset(PTR_DETAIL), TEXT_ELEM, len(blob))}
    both = {**one, PTR_NONCE: list_ptr(tail_offset(PTR_NONCE), TEXT_ELEM, len(blob))}
    aliased = header_with_pointers(both, text_words(blob))
    with pytest.raises(zmicro.WireError) as err:
        zmicro.decode_header(aliased)
    assert err.value.code == zmicro.WireErrorCode.TRAVERSAL
    assert reader.line(aliased).startswith(TRAVERSAL_ERROR)
    plain = header_with_pointers(one, text_words(blob))
    assert reader.read(plain) == (zmicro.decode_header(plain), b"")
