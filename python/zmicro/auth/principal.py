"""Who is calling: the :class:`Principal` a server's security interceptors
build and its authorization rules, rate limits and audit log key on.

A principal has up to two identities: the caller's Curve public key (the
hop that reached us, from the ZAP ``User-Id``) and, when an end user's JWT
was presented and verified, that user's claims. ``subject`` names whichever
is the more specific: the user when there is one, else the key's name.

``ctx.principal`` is ``None`` in insecure mode (no key is known); the
interceptors treat ``None`` as :data:`ANONYMOUS`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import zmq.utils.z85

# One fingerprint for the whole package (BLAKE3 of the key's 32 raw bytes):
# the CLI, the key store's file names, the audit log and Principal agree.
from ..security.keys import fingerprint

__all__ = ["ANONYMOUS", "AUTHENTICATED", "Principal", "fingerprint", "freeze_claims",
           "roles_from_claim"]

#: The pseudo-role every authenticated principal holds (see
#: :attr:`Principal.authenticated`); rules may name it like any other role.
AUTHENTICATED = "authenticated"

_Z85_ALPHABET = frozenset(zmq.utils.z85.Z85CHARS.decode())


def freeze_claims(claims: Mapping[str, Any]) -> Mapping[str, Any]:
    """``claims`` made read-only all the way down: objects become read-only
    mappings, arrays tuples. A mapping that already is read-only
    (``MappingProxyType``, as :meth:`JWTVerifier.verify
    <zmicro.auth.jwt.JWTVerifier.verify>` returns) is taken as it is."""
    return claims if isinstance(claims, MappingProxyType) else _freeze(claims)


def _freeze(value: Any) -> Any:
    if isinstance(value, Mapping):
        return MappingProxyType({k: _freeze(v) for k, v in value.items()})
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    return value


def roles_from_claim(value: Any) -> frozenset[str]:
    """The roles a JWT claim grants: a list of strings, or one string of
    space-separated roles (the shape of OAuth's ``scope`` claim).

    Anything else, and any non-string item, grants nothing: a malformed
    claim can only lower a caller's rights, never raise them.
    """
    if isinstance(value, str):
        return frozenset(value.split())
    if isinstance(value, (list, tuple)):
        return frozenset(v for v in value if isinstance(v, str) and v)
    return frozenset()


@dataclass(frozen=True, slots=True, repr=False)
class Principal:
    """An authenticated (or anonymous) caller.

    ``key``: the caller's Curve public key, Z85 (40 characters), ``""``
    when unknown. ``name``: a label from the allowlist entry; by default a
    short fingerprint of the key (``"key:<16 hex>"``), or ``"anonymous"``
    without a key. ``roles``: the key's roles. ``user``: the verified claims
    of an end user's JWT (read-only, see :func:`freeze_claims`), or None;
    ``user_roles`` the roles its roles claim grants (set by :meth:`with_user`).

    Principals are immutable and hashable (``user`` takes no part in the
    hash); interceptors refine ``ctx.principal`` by replacing it.
    """

    key: str = ""
    name: str = ""
    roles: frozenset[str] = frozenset()
    user: Mapping[str, Any] | None = field(default=None, hash=False)
    user_roles: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        if self.key and (len(self.key) != 40 or not _Z85_ALPHABET.issuperset(self.key)):
            raise ValueError("key must be a Z85 Curve public key (40 characters) or ''")
        # A bare string is one role, not a set of characters.
        roles = frozenset((self.roles,) if isinstance(self.roles, str) else self.roles)
        object.__setattr__(self, "roles", roles)
        object.__setattr__(self, "user_roles", frozenset(self.user_roles))
        if not self.name:
            name = f"key:{fingerprint(self.key)[:16]}" if self.key else "anonymous"
            object.__setattr__(self, "name", name)

    def __repr__(self) -> str:
        # Principals end up in logs and tracebacks: show the key only by
        # fingerprint and the user only by subject (claims may hold PII).
        user = f" user={self.subject!r}" if self.user is not None else ""
        key = f" key={self.short_fingerprint}" if self.key else ""
        roles = ",".join(sorted(self.roles | self.user_roles))
        return f"<Principal {self.name!r}{key}{user} roles={{{roles}}}>"

    def with_user(self, claims: Mapping[str, Any], *, roles_claim: str = "roles") -> Principal:
        """This principal, acting for the end user whose verified JWT
        ``claims`` were presented; ``roles_claim`` names the claim that
        lists the user's roles (see :func:`roles_from_claim`)."""
        claims = freeze_claims(claims)
        # Built directly: dataclasses.replace() costs more than the rest of
        # a cached token check.
        return Principal(self.key, self.name, self.roles, claims,
                         roles_from_claim(claims.get(roles_claim)))

    @property
    def subject(self) -> str:
        """What rules, rate limits and the audit log key on: the user's
        ``sub`` claim when a user is present and has one, else ``name``."""
        if self.user is not None:
            sub = self.user.get("sub")
            if isinstance(sub, str) and sub:
                return sub
        return self.name

    @property
    def authenticated(self) -> bool:
        """True when the caller proved an identity: a Curve key or a
        verified user token. Roles alone (with neither) do not count."""
        return bool(self.key) or self.user is not None

    @property
    def all_roles(self) -> frozenset[str]:
        """The roles rules check: the key's roles, the user's roles, and
        :data:`AUTHENTICATED` when :attr:`authenticated`."""
        # The pseudo-role is computed, never granted: a keyless principal
        # listing it among its roles does not become authenticated.
        roles = (self.roles | self.user_roles) - {AUTHENTICATED}
        return roles | {AUTHENTICATED} if self.authenticated else roles

    @property
    def short_fingerprint(self) -> str:
        """The first 8 hex digits of the key's fingerprint, ``""`` without a
        key: all of a key the audit log ever shows."""
        return fingerprint(self.key)[:8] if self.key else ""


#: The caller with no identity: insecure mode, or no key and no token.
ANONYMOUS = Principal(name="anonymous")
