"""Deterministic inputs shared by the micro benchmarks.

One *typical request header* (what a client sends to call ``Greeter.Hello``
with a W3C trace context), its signed variant, the MAC key and the bodies.
``bench/c/bench_src.c`` builds the same headers in C; ``run_micro.py`` checks
that both encode to the same bytes, so the C and Python rows time the same
work.

Values are fixed (no randomness) so every run and both languages see the same
bytes.
"""

from __future__ import annotations

# W3C Trace Context example ids (https://www.w3.org/TR/trace-context/).
TRACE_ID = 0x4BF92F3577B34DA6A3CE929D0E0E4736
SPAN_ID = 0x00F067AA0BA902B7
TRACEPARENT = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
assert len(TRACEPARENT) == 55

REQUEST_ID = 1_000_003
DEADLINE_US = 250_000  # 250 ms budget
SERVICE = "greeter"
ENDPOINT = "Greeter.Hello"
CONTENT_TYPE = "application/msgpack"

# Signed-request extras.
KEY_ID = 7
TIMESTAMP_US = 1_700_000_000_000_000
NONCE = bytes(range(0xA0, 0xB0))  # 16 bytes; fixed so C and Python agree
assert len(NONCE) == 16

KIND_REQUEST = 0
FLAG_SIGNED = 0x1

MAC_KEY = bytes(range(32))  # 32-byte key (the core accepts 16..64)
BODY_SIZES = (64, 4096)


def header_fields(signed: bool = False) -> dict:
    """Keyword arguments of ``zmicro.Header`` for the typical request."""
    fields = dict(
        version=1,
        kind=KIND_REQUEST,
        request_id=REQUEST_ID,
        deadline_us=DEADLINE_US,
        trace_id=TRACE_ID,
        span_id=SPAN_ID,
        content_type=CONTENT_TYPE,
        service=SERVICE,
        endpoint=ENDPOINT,
        metadata={"traceparent": TRACEPARENT},
    )
    if signed:
        fields.update(
            flags=FLAG_SIGNED, key_id=KEY_ID, timestamp_us=TIMESTAMP_US, nonce=NONCE
        )
    return fields


def typical_header(signed: bool = False):
    """The typical request ``zmicro.Header`` (signed: with key id, timestamp
    and 16-byte nonce, flags SIGNED)."""
    import zmicro

    return zmicro.Header(**header_fields(signed))


def capnp_fields(signed: bool = False) -> dict:
    """The same header as keyword arguments of pycapnp's ``new_message``."""
    f = header_fields(signed)
    out = dict(
        version=f["version"],
        kind="request",
        requestId=f["request_id"],
        deadline=f["deadline_us"],
        traceIdHigh=f["trace_id"] >> 64,
        traceIdLow=f["trace_id"] & 0xFFFFFFFFFFFFFFFF,
        spanId=f["span_id"],
        contentType=f["content_type"],
        service=f["service"],
        endpoint=f["endpoint"],
        metadata=[{"key": k, "value": v} for k, v in f["metadata"].items()],
    )
    if signed:
        out.update(
            flags=f["flags"], keyId=f["key_id"], timestamp=f["timestamp_us"],
            nonce=f["nonce"],
        )
    return out


def body(size: int) -> bytes:
    """A body of `size` bytes (a fixed pattern; MAC cost does not depend on
    the content)."""
    return bytes((i * 31 + 7) & 0xFF for i in range(size))
