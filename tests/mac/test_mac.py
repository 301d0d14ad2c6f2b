"""MAC primitives against Python's hmac/hashlib, and the fallback path."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

import zmicro
from zmicro import MacError, WireErrorCode, mac, wire
from zmicro.security.mac import Alg

keys = st.binary(min_size=mac.KEY_MIN, max_size=mac.KEY_MAX)
frame_lists = st.lists(st.binary(max_size=300), max_size=mac.FRAME_MAX)
algs = st.sampled_from(list(Alg))


def reference(alg: Alg, key: bytes, frames: list[bytes]) -> bytes:
    """docs/protocol.md's definition, written out independently (`frames`
    are the MAC input's items: the binding, then the message's frames)."""
    data = b"zmicro-mac-v2" + len(frames).to_bytes(4, "little")
    for f in frames:
        data += len(f).to_bytes(8, "little") + f
    if alg == Alg.HMAC_SHA256:
        return hmac.new(key, data, hashlib.sha256).digest()
    return hashlib.blake2b(data, key=key, digest_size=32).digest()


def test_core_computes_macs_in_c_here():
    # pyzmq's wheels bundle libsodium and CPython links OpenSSL: CI must
    # exercise the C paths.
    assert mac.have_sodium()
    assert zmicro._core.mac_backends() == {"hmac-sha256": "openssl", "blake2b": "libsodium"}


@given(algs, keys, frame_lists)
def test_compute_matches_reference(alg, key, frames):
    assert mac.compute(alg, key, frames) == reference(alg, key, frames)


@given(algs, keys, frame_lists)
def test_verify_accepts_own_and_refuses_flipped(alg, key, frames):
    tag = mac.compute(alg, key, frames)
    assert mac.verify(alg, key, frames, tag)
    for i in (0, 17, 31):
        bad = bytearray(tag)
        bad[i] ^= 0x01
        assert not mac.verify(alg, key, frames, bytes(bad))
    assert not mac.verify(alg, key, frames, tag[:31])
    assert not mac.verify(alg, key, frames, tag + b"\0")


@given(algs, keys, st.binary(min_size=2, max_size=200), st.data())
def test_moving_bytes_between_frames_changes_the_mac(alg, key, blob, data):
    """Same bytes, another split: the length prefixes make the MACs differ."""
    a, b = sorted(data.draw(st.lists(st.integers(0, len(blob)), min_size=2,
                                     max_size=2, unique=True)))
    one = [blob[:a], blob[a:]]
    other = [blob[:b], blob[b:]]
    assert mac.compute(alg, key, one) != mac.compute(alg, key, other)
    assert mac.compute(alg, key, [blob]) != mac.compute(alg, key, [blob, b""])


@given(algs, keys, frame_lists)
def test_buffers_of_any_kind(alg, key, frames):
    views = [memoryview(f) for f in frames]
    arrays = [bytearray(f) for f in frames]
    tag = mac.compute(alg, key, frames)
    assert mac.compute(alg, bytearray(key), views) == tag == mac.compute(alg, key, arrays)


def test_algorithms_differ():
    key, frames = b"k" * 32, [b"header", b"body"]
    assert mac.compute(Alg.HMAC_SHA256, key, frames) != mac.compute(Alg.BLAKE2B, key, frames)


@pytest.mark.parametrize("key", [b"", b"k" * 15, b"k" * 65])
def test_key_length(key):
    with pytest.raises(MacError) as err:
        mac.compute(Alg.HMAC_SHA256, key, [b"x"])
    assert err.value.code == WireErrorCode.MAC_KEY
    with pytest.raises(MacError):
        mac.verify(Alg.HMAC_SHA256, key, [b"x"], b"t" * 32)


@pytest.mark.parametrize("alg", [0, 4, -1])
def test_unknown_algorithm(alg):
    with pytest.raises(MacError) as err:
        mac.compute(alg, b"k" * 32, [b"x"])
    assert err.value.code == WireErrorCode.MAC_ALG


def test_too_many_frames():
    with pytest.raises(ValueError):
        mac.compute(Alg.HMAC_SHA256, b"k" * 32, [b""] * (mac.FRAME_MAX + 1))


def test_random_bytes():
    a, b = mac.random_bytes(16), mac.random_bytes(16)
    assert len(a) == 16 and a != b
    assert mac.random_bytes(0) == b""
    with pytest.raises(ValueError):
        mac.random_bytes(-1)


def test_signed_message_mac_covers_header_and_bodies():
    h = zmicro.Header(request_id=1, flags=wire.FLAG_SIGNED)
    data = h.encode()
    tag = mac.compute(Alg.BLAKE2B, b"k" * 16, [b"", data, b"body"])
    m = wire.parse_frames([data, b"body", tag])
    assert m.verify(Alg.BLAKE2B, b"k" * 16)
    assert not wire.parse_frames([data, b"bodY", tag]).verify(Alg.BLAKE2B, b"k" * 16)


FALLBACK_SCRIPT = r"""
import json, logging, sys
import zmicro
from zmicro import mac
cases = json.loads(sys.stdin.read())
out = {"backends": zmicro._core.mac_backends(), "macs": [], "verify": []}
for alg, key, frames in cases:
    key = bytes.fromhex(key); frames = [bytes.fromhex(f) for f in frames]
    tag = mac.compute(alg, key, frames)
    out["macs"].append(tag.hex())
    out["verify"].append(mac.verify(alg, key, frames, tag))
try:
    mac.compute(1, b"short", [b"x"])
except zmicro.MacError as e:
    out["key_error"] = int(e.code)
out["random"] = len(mac.random_bytes(24))
print(json.dumps(out))
"""


@pytest.mark.parametrize("env, backends", [
    ({"ZMICRO_NO_SODIUM": "1", "ZMICRO_NO_OPENSSL": "1"},
     {"hmac-sha256": "python", "blake2b": "python"}),
    ({"ZMICRO_NO_OPENSSL": "1"}, {"hmac-sha256": "libsodium", "blake2b": "libsodium"}),
    ({"ZMICRO_NO_SODIUM": "1"}, {"hmac-sha256": "openssl", "blake2b": "python"}),
])
def test_every_backend_gives_the_same_macs(env, backends):
    """OpenSSL's SHA-256, libsodium's, and Python's hmac/hashlib: the same
    MACs; an algorithm left to Python is said once per process."""
    cases = [(int(alg), (bytes([i]) * (16 + i)).hex(), [os.urandom(i * 7).hex(), "00" * i])
             for i, alg in enumerate([Alg.HMAC_SHA256, Alg.BLAKE2B] * 3)]
    proc = subprocess.run([sys.executable, "-c", FALLBACK_SCRIPT], input=json.dumps(cases),
                          env={**os.environ, **env}, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["backends"] == backends
    expected = [mac.compute(alg, bytes.fromhex(k), [bytes.fromhex(f) for f in fs]).hex()
                for alg, k, fs in cases]
    assert out["macs"] == expected
    assert all(out["verify"])
    assert out["key_error"] == WireErrorCode.MAC_KEY
    assert out["random"] == 24
    assert proc.stderr.count("MACs are computed by Python") == ("python" in backends.values())
