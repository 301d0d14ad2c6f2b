"""MAC master secrets, and the per-service keys derived from them.

Every zmicro message carries a MAC (docs/protocol.md, section 7) under a key
that belongs to one service and one key id. Those keys are not stored: they
are derived, with BLAKE3's key-derivation mode, from a *master secret* that
every process of a deployment shares::

    key = BLAKE3-derive-key(context = DERIVE_CONTEXT,
                            material = u32le(len(service)) || service
                                       || u32le(key id) || master secret)

The master secrets live in the key store's ``mac.keys`` (JSON, mode 0600;
``ZMICRO_MAC_KEYS`` names another file), created with one random secret on
first use, so one machine needs no setup. Across machines the same file
must reach every node (like a cluster token). Each secret has an id (the
header's ``keyId``) and an algorithm; one is *current* (it signs), all are
accepted, which is what rotates keys without downtime:

1. ``zmicro mac add`` on one machine, copy the file everywhere: every
   process accepts the new id (files are re-read within a second or so);
2. ``zmicro mac current ID``, copy again: every process signs with it;
3. after a window, ``zmicro mac remove OLD``, copy again.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import blake3

from .. import _core
from ..errors import Error
from ._files import foreign_owner, write_atomic

__all__ = ["ALGORITHMS", "DERIVE_CONTEXT", "MacSecrets", "MacSecretsError", "MasterSecret",
           "derive_key", "secrets_path"]

log = logging.getLogger(__name__)

#: BLAKE3 derive-key context: fixed, globally unique, never reused elsewhere.
DERIVE_CONTEXT = "zmicro 2026-11-23 per-service message MAC key v1"

#: MAC algorithms by name, as ``mac.keys`` and the options spell them.
ALGORITHMS = {"hmac-sha256": _core.MAC_HMAC_SHA256, "blake2b": _core.MAC_BLAKE2B,
              "blake3": _core.MAC_BLAKE3}

SECRET_SIZE = 32
_FORMAT = 1


class MacSecretsError(Error):
    """``mac.keys`` is unreadable, malformed or inconsistent."""


class MasterSecret(NamedTuple):
    id: int
    alg: str
    secret: bytes

    def __repr__(self) -> str:  # never show the secret
        return f"MasterSecret(id={self.id}, alg={self.alg!r})"


def derive_key(master: bytes, service: str, key_id: int) -> bytes:
    """The 32-byte MAC key of `service` under master secret `key_id`."""
    name = service.encode()
    material = (len(name).to_bytes(4, "little") + name
                + key_id.to_bytes(4, "little") + bytes(master))
    return blake3.blake3(material, derive_key_context=DERIVE_CONTEXT).digest(SECRET_SIZE)


def secrets_path(home: str | os.PathLike[str]) -> Path:
    """Where the master secrets are: ``$ZMICRO_MAC_KEYS``, else home/mac.keys."""
    env = os.environ.get("ZMICRO_MAC_KEYS")
    return Path(env) if env else Path(home) / "mac.keys"


def _encode(current: int, secrets: list[MasterSecret]) -> bytes:
    return json.dumps({
        "format": _FORMAT,
        "current": current,
        "keys": [{"id": s.id, "alg": s.alg,
                  "secret": base64.b64encode(s.secret).decode()} for s in secrets],
    }, indent=2).encode() + b"\n"


def _decode(data: bytes, where: Path) -> tuple[int, list[MasterSecret]]:
    try:
        doc = json.loads(data)
        if doc["format"] != _FORMAT:  # a later format may mean other things by the same fields
            raise MacSecretsError(f"{where} has format {doc['format']!r}; this zmicro reads "
                                  f"format {_FORMAT}")
        current = doc["current"]
        secrets = [MasterSecret(int(k["id"]), str(k["alg"]), base64.b64decode(k["secret"],
                                                                              validate=True))
                   for k in doc["keys"]]
    except (ValueError, KeyError, TypeError) as exc:
        raise MacSecretsError(f"{where} is not a zmicro MAC secrets file ({type(exc).__name__})") \
            from None
    ids = [s.id for s in secrets]
    if len(set(ids)) != len(ids) or current not in ids:
        raise MacSecretsError(f"{where}: key ids must be unique and include the current one")
    for s in secrets:
        if s.alg not in ALGORITHMS:
            raise MacSecretsError(f"{where}: key {s.id} has unknown algorithm {s.alg!r}")
        if not 0 <= s.id < 2**32 or len(s.secret) < 16:
            raise MacSecretsError(f"{where}: key {s.id} is malformed (id or secret length)")
    return current, secrets


def _stamp(st: os.stat_result) -> tuple[int, int, int]:
    """What tells one version of the file from the next."""
    return (st.st_mtime_ns, st.st_size, st.st_ino)


def _write(path: Path, data: bytes, *, replace: bool) -> bool:
    """Write `data` to `path` (0600) atomically, making its directory if
    needed. Without `replace`, only if `path` does not exist yet: False when
    another process made it first."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    return write_atomic(path, data, replace=replace)


class MacSecrets:
    """The master secrets of ``path`` and the keyrings derived from them.

    ``keyring(service)`` gives the core's :class:`zmicro._core.Keyring` for
    one service (made once, then updated in place); ``reload_if_changed()``
    (one ``stat``; the core calls it at most once a second, on both sides,
    before it signs or checks a message: KeySource.tick) re-reads the file
    when it changed and updates every keyring made so far: new ids are
    accepted, the new current one signs. The file's format:
    docs/protocol.md §7.6.
    """

    def __init__(self, path: str | os.PathLike[str], *, create: bool = True,
                 window: float = 30.0, replay_quota: int = 1_500_000,
                 clock: Callable[[], float] | None = None) -> None:
        self.path = Path(path)
        self.window = window
        self.replay_quota = replay_quota
        self._clock = clock
        self._lock = threading.Lock()
        self._rings: dict[str, _core.Keyring] = {}
        self._stamp: tuple[int, int, int] | None = None
        if create and not self.path.exists():
            secret = MasterSecret(1, "hmac-sha256", os.urandom(SECRET_SIZE))
            _write(self.path, _encode(1, [secret]), replace=False)
        self.current, self.secrets = self._read()

    # -- reading -----------------------------------------------------------

    def _stat(self) -> tuple[int, int, int]:
        return _stamp(self.path.stat())

    def _read(self) -> tuple[int, list[MasterSecret]]:
        try:
            # Checked and read through one descriptor: the file judged is
            # the file read.
            with open(self.path, "rb") as f:
                st = os.fstat(f.fileno())
                # Another user's secrets are not ours, even for root: they
                # could forge every message we would accept.
                problem = foreign_owner(st, self.path, "MAC secrets file")
                if problem is not None:
                    raise MacSecretsError(f"{problem}; use a file of your own "
                                          "(ZMICRO_MAC_KEYS, ZMICRO_HOME)")
                if st.st_mode & 0o077:
                    raise MacSecretsError(f"{self.path} is readable by others: chmod 600 it")
                data = f.read()
            stamp = _stamp(st)
        except OSError as exc:
            raise MacSecretsError(f"cannot read MAC secrets {self.path}: {exc.strerror}") from None
        self._stamp = stamp
        return _decode(data, self.path)

    def reload_if_changed(self) -> bool:
        """Re-read the file if it changed; True if it did. A file that
        became unreadable or malformed keeps the keys in use (logged)."""
        try:
            if self._stat() == self._stamp:
                return False
            current, secrets = self._read()
        except (OSError, MacSecretsError) as exc:
            log.warning("zmicro: keeping the MAC keys in use: %s", exc)
            return False
        with self._lock:
            self.current, self.secrets = current, secrets
            for service, ring in self._rings.items():
                ring.update(self._keys(service), current)
        return True

    # -- keyrings ----------------------------------------------------------

    def _keys(self, service: str) -> list[_core.MacKey]:
        return [_core.MacKey(s.id, ALGORITHMS[s.alg], derive_key(s.secret, service, s.id))
                for s in self.secrets]

    def keyring(self, service: str, *, cache: bool = True) -> _core.Keyring:
        """The keyring of `service`. Cached ones are made once and updated
        in place when the secrets rotate; ``cache=False`` makes a new one
        the caller keeps (a server answering a request that named another
        service: names that come from the network must not fill a cache)."""
        with self._lock:
            ring = self._rings.get(service) if cache else None
            if ring is None:
                ring = _core.Keyring(self._keys(service), self.current, window=self.window,
                                     replay_quota=self.replay_quota, clock=self._clock)
                if cache:
                    self._rings[service] = ring
            return ring

    # -- editing (zmicro mac ...) ------------------------------------------

    def _save(self, current: int, secrets: list[MasterSecret]) -> None:
        _write(self.path, _encode(current, secrets), replace=True)
        self.reload_if_changed()

    def add(self, alg: str = "hmac-sha256") -> int:
        """A new random secret, accepted but not current; returns its id."""
        if alg not in ALGORITHMS:
            raise ValueError(f"alg is one of {sorted(ALGORITHMS)}, not {alg!r}")
        new_id = max(s.id for s in self.secrets) + 1
        self._save(self.current, [*self.secrets, MasterSecret(new_id, alg, os.urandom(SECRET_SIZE))])
        return new_id

    def set_current(self, key_id: int) -> None:
        if key_id not in {s.id for s in self.secrets}:
            raise ValueError(f"no MAC key {key_id}")
        self._save(key_id, self.secrets)

    def remove(self, key_id: int) -> None:
        if key_id == self.current:
            raise ValueError(f"key {key_id} is the current one: make another current first")
        if key_id not in {s.id for s in self.secrets}:
            raise ValueError(f"no MAC key {key_id}")
        self._save(self.current, [s for s in self.secrets if s.id != key_id])
