"""MACs over frames with Python's hmac/hashlib, for when pyzmq's libsodium
cannot be found. Same algorithms and framing as ``src/zm_mac.c``:

    input = b"zmicro-mac-v1" || u32le(frame count)
            || for each frame: u64le(length) || bytes

The core calls this module only when ``zmicro._core.have_sodium()`` is False.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence

from ..errors import MacError, WireErrorCode

DOMAIN = b"zmicro-mac-v1"
HMAC_SHA256 = 1
BLAKE2B = 2
KEY_MIN, KEY_MAX = 16, 64
FRAME_MAX = 16
SIZE = 32


def _hasher(alg: int, key: bytes):
    key = bytes(key)
    if not KEY_MIN <= len(key) <= KEY_MAX:
        raise MacError(WireErrorCode.MAC_KEY, "MAC key must be 16 to 64 bytes")
    if alg == HMAC_SHA256:
        return hmac.new(key, digestmod=hashlib.sha256)
    if alg == BLAKE2B:
        return hashlib.blake2b(key=key, digest_size=SIZE)
    raise MacError(WireErrorCode.MAC_ALG, "unknown MAC algorithm")


def compute(alg: int, key: bytes, frames: Sequence) -> bytes:
    if len(frames) > FRAME_MAX:
        raise ValueError(f"at most {FRAME_MAX} frames, got {len(frames)}")
    h = _hasher(alg, key)
    h.update(DOMAIN)
    h.update(len(frames).to_bytes(4, "little"))
    for frame in frames:
        view = memoryview(frame).cast("B")
        h.update(len(view).to_bytes(8, "little"))
        h.update(view)
    return h.digest()


def verify(alg: int, key: bytes, frames: Sequence, tag: bytes) -> bool:
    mac = compute(alg, key, frames)
    return len(tag) == SIZE and hmac.compare_digest(mac, bytes(tag))
