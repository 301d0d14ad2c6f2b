"""Micro benchmarks of the core's pieces, called from Python.

Each benchmark carries ``extra_info``:

- ``op``: the operation key (``header.write.typical``, ``mac.compute.blake2b.64``
  ...); ``bench/c/bench_src.c`` reports the pure C cost under the same key,
  so ``run_micro.py`` can put both in one row;
- ``impl``: ``zmicro`` for the core's own path, ``baseline: ...`` for a
  comparison (pycapnp, Python's hmac/hashlib, a no-op call);
- ``label``: the row's text in the table.

Benchmarks are grouped (``benchmark.group``) by what they compute, so
pytest-benchmark's own table puts each zmicro row next to its baselines.
Every benchmark checks its result once, so ``--benchmark-disable`` runs double
as a smoke test of the inputs.
"""

from __future__ import annotations

import pytest

import data
import zmicro
from zmicro import mac
from zmicro.security import _mac_fallback

try:
    import capnp
except ImportError:  # pycapnp is optional: only the baseline rows need it
    capnp = None

KINDS = ("typical", "signed")
ALGS = {"hmac-sha256": mac.Alg.HMAC_SHA256, "blake2b": mac.Alg.BLAKE2B}
ALG_NAMES = {"hmac-sha256": "HMAC-SHA256", "blake2b": "BLAKE2b"}


def _tag(benchmark, group, op, impl, label):
    benchmark.group = group
    benchmark.extra_info.update(op=op, impl=impl, label=label)


@pytest.fixture(scope="module")
def schema():
    if capnp is None:
        pytest.skip("pycapnp not installed (baseline rows only)")
    return zmicro.wire.load_schema()


def _header_bytes(kind):
    return data.typical_header(signed=kind == "signed").encode()


# ---------------------------------------------------------------------------
# Call overhead: what any call from Python costs before the core does work.
# ---------------------------------------------------------------------------


@pytest.mark.baseline
def test_call_len(benchmark):
    payload = _header_bytes("typical")
    _tag(benchmark, "call overhead", "call", "baseline: builtin",
         "baseline: `len(header_bytes)` (builtin call, no work)")
    assert benchmark(len, payload) == len(payload)


@pytest.mark.baseline
def test_call_core_noop(benchmark):
    _tag(benchmark, "call overhead", "call", "baseline: core no-op",
         "baseline: `zmicro.mac.have_sodium()` (core call, no work)")
    assert benchmark(mac.have_sodium) in (True, False)


# ---------------------------------------------------------------------------
# Header write: Header.encode() -> bytes.
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_header_write(benchmark, kind):
    header = data.typical_header(signed=kind == "signed")
    expected = header.encode()
    _tag(benchmark, f"header write {kind}", f"header.write.{kind}", "zmicro",
         f"header write, {kind} (`Header.encode()`)")
    assert benchmark(header.encode) == expected


@pytest.mark.baseline
def test_header_write_pycapnp_build(benchmark, schema):
    fields = data.capnp_fields()

    def build_and_serialize():
        return schema.Header.new_message(**fields).to_bytes()

    _tag(benchmark, "header write typical", "header.write.typical",
         "baseline: pycapnp",
         "baseline: pycapnp `new_message(**fields).to_bytes()`")
    out = benchmark(build_and_serialize)
    with schema.Header.from_bytes(out) as msg:
        assert msg.service == data.SERVICE


@pytest.mark.baseline
def test_header_write_pycapnp_to_bytes(benchmark, schema):
    msg = schema.Header.new_message(**data.capnp_fields())
    _tag(benchmark, "header write typical", "header.write.typical",
         "baseline: pycapnp",
         "baseline: pycapnp `to_bytes()` of a built message")
    assert benchmark(msg.to_bytes)


# ---------------------------------------------------------------------------
# Header read: decode_header(bytes) -> Header (every field a Python value).
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_header_read(benchmark, kind):
    header = data.typical_header(signed=kind == "signed")
    payload = header.encode()
    _tag(benchmark, f"header read {kind}", f"header.read.{kind}", "zmicro",
         f"header read, {kind} (`decode_header()`)")
    assert benchmark(zmicro.decode_header, payload) == header


@pytest.mark.baseline
def test_header_read_pycapnp_fields(benchmark, schema):
    payload = _header_bytes("typical")

    def read_all():
        # decode_header makes every field a Python value; do the same.
        with schema.Header.from_bytes(payload) as m:
            return (
                m.version, m.kind, m.flags, m.requestId, m.deadline, m.status,
                m.keyId, m.timestamp, m.traceIdHigh, m.traceIdLow, m.spanId,
                m.contentType, m.service, m.endpoint,
                {e.key: e.value for e in m.metadata},
                m.nonce, m.principal, m.detail,
            )

    _tag(benchmark, "header read typical", "header.read.typical",
         "baseline: pycapnp",
         "baseline: pycapnp `from_bytes()` + read every field")
    fields = benchmark(read_all)
    assert fields[12] == data.SERVICE
    assert fields[14] == {"traceparent": data.TRACEPARENT}


@pytest.mark.baseline
def test_header_read_pycapnp_lazy(benchmark, schema):
    payload = _header_bytes("typical")

    def open_only():
        with schema.Header.from_bytes(payload) as m:
            return m.requestId

    _tag(benchmark, "header read typical", "header.read.typical",
         "baseline: pycapnp",
         "baseline: pycapnp `from_bytes()` + one field (lazy)")
    assert benchmark(open_only) == data.REQUEST_ID


# ---------------------------------------------------------------------------
# MAC over [typical header bytes, body].
# ---------------------------------------------------------------------------

MAC_CASES = [(alg, size) for alg in ALGS for size in data.BODY_SIZES]
MAC_IDS = [f"{alg}-{size}" for alg, size in MAC_CASES]


def _frames(size):
    return [_header_bytes("typical"), data.body(size)]


def _size_text(size):
    return f"{size} B" if size < 1024 else f"{size // 1024} KiB"


@pytest.mark.parametrize(("alg", "size"), MAC_CASES, ids=MAC_IDS)
def test_mac_compute(benchmark, alg, size):
    frames = _frames(size)
    expected = _mac_fallback.compute(ALGS[alg], data.MAC_KEY, frames)
    _tag(benchmark, f"mac compute {alg} {size}", f"mac.compute.{alg}.{size}",
         "zmicro",
         f"MAC sign, {ALG_NAMES[alg]}, {_size_text(size)} body (`mac.compute`)")
    assert benchmark(mac.compute, ALGS[alg], data.MAC_KEY, frames) == expected


@pytest.mark.baseline
@pytest.mark.parametrize(("alg", "size"), MAC_CASES, ids=MAC_IDS)
def test_mac_compute_hashlib(benchmark, alg, size):
    frames = _frames(size)
    expected = mac.compute(ALGS[alg], data.MAC_KEY, frames)
    _tag(benchmark, f"mac compute {alg} {size}", f"mac.compute.{alg}.{size}",
         "baseline: hmac/hashlib",
         "baseline: Python hmac/hashlib, same framing (`zmicro.security._mac_fallback`)")
    out = benchmark(_mac_fallback.compute, ALGS[alg], data.MAC_KEY, frames)
    assert out == expected


@pytest.mark.parametrize(("alg", "size"), MAC_CASES, ids=MAC_IDS)
def test_mac_verify(benchmark, alg, size):
    frames = _frames(size)
    tag = mac.compute(ALGS[alg], data.MAC_KEY, frames)
    _tag(benchmark, f"mac verify {alg} {size}", f"mac.verify.{alg}.{size}",
         "zmicro",
         f"MAC verify, {ALG_NAMES[alg]}, {_size_text(size)} body (`mac.verify`)")
    assert benchmark(mac.verify, ALGS[alg], data.MAC_KEY, frames, tag) is True


@pytest.mark.baseline
@pytest.mark.parametrize(("alg", "size"), MAC_CASES, ids=MAC_IDS)
def test_mac_verify_hashlib(benchmark, alg, size):
    frames = _frames(size)
    tag = mac.compute(ALGS[alg], data.MAC_KEY, frames)
    _tag(benchmark, f"mac verify {alg} {size}", f"mac.verify.{alg}.{size}",
         "baseline: hmac/hashlib",
         "baseline: Python hmac/hashlib + `hmac.compare_digest` (`_mac_fallback`)")
    out = benchmark(_mac_fallback.verify, ALGS[alg], data.MAC_KEY, frames, tag)
    assert out is True
