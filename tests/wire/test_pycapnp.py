"""Differential tests against pycapnp, the reference Cap'n Proto
implementation: our bytes read by pycapnp, pycapnp's bytes read by us, and
the same with an older and a newer sender's schema."""

from __future__ import annotations

from pathlib import Path

import capnp
import pytest
from hypothesis import given
from hypothesis import strategies as st

import zmicro
from zmicro import WireError, WireErrorCode, wire

from .strategies import canonical_size, headers

SCHEMAS = Path(__file__).with_name("schemas")
current = wire.load_schema()
old = capnp.load(str(SCHEMAS / "wire_old.capnp"))
new = capnp.load(str(SCHEMAS / "wire_new.capnp"))

# Cap'n Proto enum values are 0..8 (event); the codec itself carries any UInt16.
known_kinds = st.integers(0, 8)

SCALARS = {  # Header attribute -> capnp field
    "version": "version", "kind": "kind", "flags": "flags",
    "request_id": "requestId", "deadline_us": "deadline", "status": "status",
    "key_id": "keyId", "timestamp_us": "timestamp", "span_id": "spanId",
    "max_reply_size": "maxReplySize",
}
TEXTS = {
    "content_type": "contentType", "service": "service", "endpoint": "endpoint",
    "nonce": "nonce", "principal": "principal", "detail": "detail",
}


def to_capnp(h: zmicro.Header) -> dict:
    fields = {c: getattr(h, a) for a, c in {**SCALARS, **TEXTS}.items()}
    fields["traceIdHigh"] = h.trace_id >> 64
    fields["traceIdLow"] = h.trace_id & (2**64 - 1)
    fields["metadata"] = [{"key": k, "value": v} for k, v in h.metadata.items()]
    return fields


def from_capnp(r) -> zmicro.Header:
    fields = {a: getattr(r, c) for a, c in {**SCALARS, **TEXTS}.items()}
    fields["kind"] = r.kind.raw
    fields["trace_id"] = (r.traceIdHigh << 64) | r.traceIdLow
    fields["metadata"] = {e.key: e.value for e in r.metadata}
    return zmicro.Header(**fields)


def read_with(schema, data: bytes, *, limit: int | None = None):
    """Every field of `data` read once, with the traversal limit of
    docs/protocol.md 3.5 (header bytes / 8 words) unless `limit` is given."""
    words = len(data) // 8 if limit is None else limit
    with schema.Header.from_bytes(data, traversal_limit_in_words=words) as r:
        return r.to_dict() if schema is not current else from_capnp(r)


@given(headers(kinds=known_kinds))
def test_pycapnp_reads_our_bytes(h):
    if canonical_size(h) > wire.MAX_HEADER:
        return
    data = h.encode()
    assert read_with(current, data) == h
    # The doc's limit is the smallest: zmicro's encoding has no gaps.
    with pytest.raises(capnp.KjException, match="traversal limit"):
        read_with(current, data, limit=len(data) // 8 - 1)


@given(headers(kinds=known_kinds))
def test_we_read_pycapnp_bytes(h):
    msg = current.Header.new_message(**to_capnp(h))
    segments = msg.to_segments()
    data = msg.to_bytes()
    if len(segments) > 1:
        with pytest.raises(WireError) as err:
            zmicro.decode_header(data)
        assert err.value.code in (WireErrorCode.SEGMENTS, WireErrorCode.TOO_BIG)
    elif len(data) > wire.MAX_HEADER:
        with pytest.raises(WireError) as err:
            zmicro.decode_header(data)
        assert err.value.code == WireErrorCode.TOO_BIG
    else:
        assert zmicro.decode_header(data) == h


@given(headers(kinds=known_kinds, big_values=False))
def test_older_sender(h):
    """An older sender's message: the fields it knows, defaults for the rest."""
    fields = {"version": h.version, "kind": h.kind, "flags": h.flags,
              "requestId": h.request_id, "deadline": h.deadline_us,
              "status": h.status, "contentType": h.content_type,
              "service": h.service, "endpoint": h.endpoint}
    data = old.Header.new_message(**fields).to_bytes()
    expected = zmicro.Header(version=h.version, kind=h.kind, flags=h.flags,
                             request_id=h.request_id, deadline_us=h.deadline_us,
                             status=h.status, content_type=h.content_type,
                             service=h.service, endpoint=h.endpoint)
    assert zmicro.decode_header(data) == expected


@given(headers(kinds=known_kinds, big_values=False))
def test_older_reader(h):
    """An older reader sees its own fields in our message."""
    with old.Header.from_bytes(h.encode()) as r:
        got = (r.version, r.kind.raw, r.flags, r.requestId, r.deadline, r.status,
               r.contentType, r.service, r.endpoint)
    assert got == (h.version, h.kind, h.flags, h.request_id, h.deadline_us,
                   h.status, h.content_type, h.service, h.endpoint)


@given(headers(kinds=known_kinds, big_values=False),
       st.integers(0, 255), st.text(max_size=30), st.floats(allow_nan=False),
       st.lists(st.text(max_size=10), max_size=4), st.booleans())
def test_newer_sender(h, priority, tenant, budget, tags, sensitive):
    """A newer sender's extra fields (and bigger entries) are ignored."""
    fields = to_capnp(h)
    fields["metadata"] = [{**e, "sensitive": sensitive, "note": tenant}
                          for e in fields["metadata"]]
    fields.update(priority=priority, tenant=tenant, budget=budget, tags=tags)
    data = new.Header.new_message(**fields).to_bytes()
    if len(data) > wire.MAX_HEADER:
        # The 8 KiB cap binds newer senders too (64 entries with a 30-character
        # note each can pass it): refused as a whole, never read in part.
        with pytest.raises(WireError) as err:
            zmicro.decode_header(data)
        assert err.value.code == WireErrorCode.TOO_BIG
        return
    assert zmicro.decode_header(data) == h


@given(headers(kinds=known_kinds, big_values=False))
def test_newer_reader(h):
    """A newer reader sees our fields and its defaults for the rest."""
    with new.Header.from_bytes(h.encode()) as r:
        assert (r.priority, r.tenant, r.budget, len(r.tags)) == (0, "", 0.0, 0)
        assert r.service == h.service and r.requestId == h.request_id
        assert {e.key: e.value for e in r.metadata} == h.metadata


def test_schema_shipped_in_package():
    assert wire.SCHEMA.is_file()
    fields = [f.name for f in current.Header.schema.node.struct.fields]
    assert fields[:3] == ["version", "kind", "flags"]


def test_the_schema_constants_are_zmicro_flags():
    """wire.capnp has every Header.flags bit as a constant (flagSigned for
    SIGNED...), so other languages need not copy them from the doc."""
    constants = {node.name: getattr(current, node.name)
                 for node in current.schema.get_proto().nestedNodes
                 if node.name.startswith("flag")}
    camel = {"flag" + "".join(w.capitalize() for w in f.name.split("_")): f.value
             for f in wire.Flags}
    assert constants == camel
    assert constants["flagSigned"] == wire.FLAG_SIGNED == 1


def test_layout_matches_compiled_schema():
    """src/zm_wire.c's offsets are the ones the Cap'n Proto compiler chose:
    each field written alone by us lands where pycapnp reads it."""
    struct = current.Header.schema.node.struct
    assert (struct.dataWordCount, struct.pointerCount) == (9, 7)
    probe = {"version": 3, "kind": 5, "flags": 0xA1B2C3D4, "request_id": 2**63 + 1,
             "deadline_us": 77, "status": 16, "key_id": 0xDEADBEEF,
             "timestamp_us": 1234567, "span_id": 99, "max_reply_size": 0xFEDCBA98}
    for attr, value in probe.items():
        h = zmicro.Header(**{"version": 0, attr: value})
        with current.Header.from_bytes(h.encode()) as r:
            d = {a: (getattr(r, c).raw if c == "kind" else getattr(r, c))
                 for a, c in SCALARS.items()}
        expected = dict.fromkeys(SCALARS, 0)
        expected[attr] = value
        assert d == expected, attr
