"""Security: who may talk to a service, and proof that a message is intact.

Two layers, both on by default (``docs/security.md``):

- transport: CurveZMQ encryption with an allowlist of client keys, enforced
  by a ZAP handler;
- messages: a MAC on every message under a per-service key, with key ids
  for rotation and replay protection.

One module per concern:

- :mod:`.keys`: the user's key store (``~/.config/zmicro``): the Curve
  identity, the allowlist of trusted public keys, key pairs in pyzmq's
  certificate format (:class:`KeyStore`, :func:`write_keypair`).
- :mod:`.zap`: the ZAP handler (RFC 27) that accepts a Curve client only if
  its key is in its domain's allowlist (:class:`Authenticator`).
- :mod:`.transport`: :class:`Security`, what a service or client applies to
  its sockets (Curve keys, ZAP domain, the server key to expect), and the
  switch to plaintext (:func:`resolve_insecure`).
- :mod:`.mackeys`: the MAC master secrets (``mac.keys``) and the
  per-service keys derived from them (:class:`MacSecrets`).
- :mod:`.mac`: MACs over frames, as the core computes them (public as
  ``zmicro.mac``).
- ``_mac_fallback``: the same MACs in hashlib/hmac, which the core calls
  when pyzmq's libsodium is missing.
- ``_files``: the atomic writer of the store's files.
"""

from __future__ import annotations

# keys first: zmicro.auth.principal imports it, and zap and transport import
# zmicro.auth.
from . import keys, mac, mackeys, transport, zap
from .keys import (
    KeyPair,
    KeyStore,
    KeyStoreError,
    TrustedKey,
    check_key,
    fingerprint,
    home,
    load_public_key,
    write_keypair,
)
from .mackeys import (
    ALGORITHMS,
    DERIVE_CONTEXT,
    MacSecrets,
    MacSecretsError,
    MasterSecret,
    derive_key,
    secrets_path,
)
from .transport import MIN_LIBZMQ, Security, check_libzmq, resolve_insecure
from .zap import (
    ZAP_ENDPOINT,
    Allowlist,
    Authenticator,
    allowlist_from,
    decode_metadata,
    encode_metadata,
)

__all__ = [
    "ALGORITHMS",
    "Allowlist",
    "Authenticator",
    "DERIVE_CONTEXT",
    "KeyPair",
    "KeyStore",
    "KeyStoreError",
    "MIN_LIBZMQ",
    "MacSecrets",
    "MacSecretsError",
    "MasterSecret",
    "Security",
    "TrustedKey",
    "ZAP_ENDPOINT",
    "allowlist_from",
    "check_key",
    "check_libzmq",
    "decode_metadata",
    "derive_key",
    "encode_metadata",
    "fingerprint",
    "home",
    "keys",
    "load_public_key",
    "mac",
    "mackeys",
    "resolve_insecure",
    "secrets_path",
    "transport",
    "write_keypair",
    "zap",
]
