"""Message authentication codes over zmicro frames.

``compute(alg, key, items)`` is the MAC of length-prefixed items that a
signed message carries (docs/protocol.md §7.1): first the binding (b"" for a
request, a cancel or a ping; for an answer, its request's nonce), then the
header frame and the body frames; ``verify`` checks one in constant time. Both run in C with the GIL
released, using the libsodium that pyzmq loaded, or Python's hmac/hashlib
(same results) when that is missing. Using MACs end to end (key ids,
timestamps, nonces, replay protection) belongs to ``zmicro.auth``.
"""

from __future__ import annotations

import enum

from .._core import (
    FRAME_MAX,
    MAC_KEY_MAX,
    MAC_KEY_MIN,
    MAC_SIZE,
    have_sodium,
    mac_compute as compute,
    mac_verify as verify,
    random_bytes,
)

__all__ = [
    "FRAME_MAX",
    "KEY_MAX",
    "KEY_MIN",
    "SIZE",
    "Alg",
    "compute",
    "have_sodium",
    "random_bytes",
    "verify",
]

KEY_MIN = MAC_KEY_MIN
KEY_MAX = MAC_KEY_MAX
SIZE = MAC_SIZE


class Alg(enum.IntEnum):
    """MAC algorithms computed by the core."""

    HMAC_SHA256 = 1
    BLAKE2B = 2
