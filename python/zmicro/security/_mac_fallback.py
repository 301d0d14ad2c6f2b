"""The MACs Python computes: keyed BLAKE3 always (the ``blake3`` package
has no C API), HMAC-SHA256 and keyed BLAKE2b with hmac/hashlib when the
core finds neither libsodium nor OpenSSL's SHA-256 (the same results as
``src/zm_mac.c``). The same input for all (``frames`` is the binding, then
the message's frames: docs/protocol.md §7):

    input = MAC_DOMAIN || u32le(count)
            || for each: u64le(length) || bytes
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

from .._core import FRAME_MAX, MAC_BLAKE2B as BLAKE2B, MAC_DOMAIN as DOMAIN
from .._core import MAC_HMAC_SHA256 as HMAC_SHA256, MAC_KEY_MAX as KEY_MAX
from .._core import MAC_BLAKE3 as BLAKE3, MAC_KEY_MIN as KEY_MIN, MAC_SIZE as SIZE
from ..errors import MacError, WireErrorCode

if TYPE_CHECKING:
    from typing_extensions import Buffer  # collections.abc's from Python 3.12


class _Hasher(Protocol):
    """What hmac, hashlib and blake3 objects share."""

    def update(self, data: Buffer, /) -> object: ...
    def digest(self) -> bytes: ...


def _hasher(alg: int, key: bytes) -> _Hasher:
    key = bytes(key)
    if alg == BLAKE3:
        if len(key) != 32:
            raise MacError(WireErrorCode.MAC_KEY, "BLAKE3 MAC keys are 32 bytes")
        import blake3
        return blake3.blake3(key=key)
    if not KEY_MIN <= len(key) <= KEY_MAX:
        raise MacError(WireErrorCode.MAC_KEY, "MAC key must be 16 to 64 bytes")
    if alg == HMAC_SHA256:
        return hmac.new(key, digestmod=hashlib.sha256)
    if alg == BLAKE2B:
        return hashlib.blake2b(key=key, digest_size=SIZE)
    raise MacError(WireErrorCode.MAC_ALG, "unknown MAC algorithm")


def compute(alg: int, key: bytes, frames: Sequence[Buffer]) -> bytes:
    if len(frames) > FRAME_MAX:
        raise ValueError(f"at most {FRAME_MAX} frames, got {len(frames)}")
    h = _hasher(alg, key)
    h.update(DOMAIN)
    h.update(len(frames).to_bytes(4, "little"))
    for frame in frames:
        view = memoryview(frame).cast("B")
        h.update(len(view).to_bytes(8, "little"))
        h.update(view)
    return h.digest()[:SIZE]


def verify(alg: int, key: bytes, frames: Sequence[Buffer], tag: bytes) -> bool:
    mac = compute(alg, key, frames)
    return len(tag) == SIZE and hmac.compare_digest(mac, bytes(tag))
