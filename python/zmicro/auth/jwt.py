"""End-user identity: JSON Web Tokens (RFC 7519), verified by a server
interceptor.

A gateway (or any client) acting for a user passes the user's token in the
call's metadata, ``authorization: Bearer <token>``. :class:`JWTVerifier`
checks it with PyJWT — signature, ``exp`` (required), ``nbf``, ``iat``,
issuer and audience — and on success sets ``ctx.principal`` to the calling
principal (or :data:`~zmicro.auth.principal.ANONYMOUS`) acting for that user;
the user's roles claim then counts for the rules.

What it refuses, all with the same ``UNAUTHENTICATED`` "invalid token" (the
caller learns neither why nor anything about the keys; the audit log gets a
short reason code): a bad signature, an expired or not yet valid token, a
wrong issuer or audience, ``alg: none``, an algorithm its key is not meant
for, an unknown ``kid``, a ``crit`` or ``b64`` header (no extension is
understood), a malformed token, an ``authorization`` value that is not
``Bearer <token>``.

Algorithm confusion is excluded by construction: each key is bound, when the
verifier is built, to the algorithms of its kind — an HMAC secret to HS*, an
RSA public key to RS*/PS*, an EC key to the ES* of its curve, an Ed25519/448
key to EdDSA — and a token is checked only with an algorithm its key is
bound to. An HS256 token made with an RSA public key as its secret never
meets an HMAC check. HMAC secrets shorter than the hash (32 bytes for HS256,
RFC 7518 section 3.2) are refused.

Time: the token's times are checked against ``clock()`` (POSIX seconds,
default :func:`time.time`) with ``leeway`` seconds of tolerance, by this
module rather than PyJWT, so that tests can move the clock.

Cost: decoding and checking a signature costs tens of microseconds even for
HS256, and a client sends the same token with every call, so the claims of
the last ``cache_size`` tokens that verified are kept (a bounded LRU, per
verifier). A cached token is checked against the clock again on every use;
everything else about it (signature, issuer, audience) cannot change, since
a verifier's keys and settings are fixed when it is built.
RSA, EC and EdDSA keys need the ``cryptography`` package.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import jwt as _pyjwt
from jwt.algorithms import HMACAlgorithm

from ..errors import Code, Error, RPCError
from .audit import audit as _audit
from .principal import ANONYMOUS, freeze_claims

if TYPE_CHECKING:
    from jwt.types import Options
    from typing_extensions import TypeIs  # typing's own from Python 3.13

    from .._core import Context
    from ..middleware import Handler

__all__ = ["JWTVerifier", "TokenError", "bearer_token"]

#: Longest token accepted, in characters: bounds the work a caller can ask for.
MAX_TOKEN = 8192

_HMAC_MIN = {"HS256": 32, "HS384": 48, "HS512": 64}  # RFC 7518 3.2: key >= hash size
_RSA_ALGS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"})
_EC_ALGS = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512",
            "secp256k1": "ES256K"}
_KNOWN = frozenset(_HMAC_MIN) | _RSA_ALGS | frozenset(_EC_ALGS.values()) | {"EdDSA"}
_RSA_MIN_BITS = 2048


class TokenError(Error, ValueError):
    """A token that is not valid. ``reason`` is a short code for the audit
    log (``"expired"``, ``"signature"``, ``"audience"``...); the message
    never contains the token."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


def bearer_token(value: bytes | str) -> str:
    """The token of an ``authorization`` value ``Bearer <token>`` (the
    scheme is case-insensitive, RFC 7235); TokenError("malformed") if the
    value is anything else."""
    try:
        text = value.decode("ascii") if isinstance(value, (bytes, bytearray)) else value
    except UnicodeDecodeError:
        raise TokenError("malformed") from None
    scheme, _, token = text.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or " " in token:
        raise TokenError("malformed")
    return token


class JWTVerifier:
    """Verifies end users' JWTs; :meth:`interceptor` is the server
    interceptor (see the module docstring for what is refused).

    ``key``: the key for tokens without a ``kid`` (or for every token when
    ``keys`` is not given) — an HMAC secret (bytes or str), a PEM or SSH
    public key or certificate, or a ``cryptography`` public key object.
    ``keys``: keys by ``kid``; a token naming a ``kid`` not in it is
    refused. ``algorithms``: the ones accepted at all ("none" never is).
    ``issuer`` / ``audience``: required values of ``iss`` / ``aud`` (one or
    several); without ``audience``, a token that names one is refused.
    ``required``: refuse calls that carry no token (otherwise they pass on
    unchanged). ``roles_claim``: the claim listing the user's roles.
    ``clock``: POSIX seconds, for ``exp``/``nbf``/``iat``. ``cache_size``:
    verified tokens remembered (0: none). Thread-safe.
    """

    def __init__(self, *, key: Any = None, keys: Mapping[str, Any] | None = None,
                 algorithms: Iterable[str] = ("HS256", "RS256", "ES256"),
                 issuer: str | Iterable[str] | None = None,
                 audience: str | Iterable[str] | None = None,
                 leeway: float = 0, required: bool = False, roles_claim: str = "roles",
                 clock: Callable[[], float] | None = None, cache_size: int = 1024,
                 audit: Callable[..., None] = _audit) -> None:
        algorithms = tuple(algorithms)
        if any(a.lower() == "none" for a in algorithms):
            raise ValueError('algorithm "none" is never accepted')
        unknown = set(algorithms) - _KNOWN
        if unknown or not algorithms:
            raise ValueError(f"unsupported algorithms {sorted(unknown)}; "
                             f"choose among {sorted(_KNOWN)}")
        if key is None and not keys:
            raise ValueError("give key= or keys=")
        if not leeway >= 0:
            raise ValueError("leeway must be >= 0")
        if not isinstance(roles_claim, str) or not roles_claim:
            raise ValueError("roles_claim must be a claim name")
        if cache_size < 0:
            raise ValueError("cache_size must be >= 0")
        self._default = _bind(key, algorithms) if key is not None else None
        self._by_kid = {kid: _bind(k, algorithms) for kid, k in (keys or {}).items()}
        self.issuer = _one_or_tuple(issuer)
        self.audience = _one_or_tuple(audience)
        self.leeway = float(leeway)
        self.required = required
        self.roles_claim = roles_claim
        self._clock = clock or time.time
        self._audit = audit
        self._cache: OrderedDict[str, Mapping[str, Any]] = OrderedDict()
        self._cache_size = cache_size
        self._cache_lock = threading.Lock()
        require = ["exp"] + ["iss"] * (issuer is not None) + ["aud"] * (audience is not None)
        # PyJWT checks signature, iss, aud (and sub, jti types); times are ours.
        self._options: Options = {"verify_exp": False, "verify_nbf": False, "verify_iat": False,
                                   "require": require}

    def verify(self, token: str) -> Mapping[str, Any]:
        """The claims of ``token`` if it is valid now, read-only all the way
        down (:func:`~zmicro.auth.principal.freeze_claims`: they may be
        shared with later calls); TokenError if it is not."""
        if not isinstance(token, str) or len(token) > MAX_TOKEN or token.count(".") != 2:
            raise TokenError("malformed")
        with self._cache_lock:
            claims = self._cache.get(token)
            if claims is not None:
                self._cache.move_to_end(token)
        if claims is not None:
            try:
                self._check_times(claims)
            except TokenError:
                with self._cache_lock:
                    self._cache.pop(token, None)
                raise
            return claims
        claims = self._decode(token)
        self._check_times(claims)
        if self._cache_size > 0:
            with self._cache_lock:
                self._cache[token] = claims
                if len(self._cache) > self._cache_size:
                    self._cache.popitem(last=False)
        return claims

    def _decode(self, token: str) -> Mapping[str, Any]:
        """The claims of ``token``, frozen, once its signature, issuer and
        audience are verified (times aside)."""
        try:
            header = _pyjwt.get_unverified_header(token)
        except (_pyjwt.PyJWTError, ValueError, TypeError, RecursionError):
            raise TokenError("malformed") from None
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in _KNOWN:
            raise TokenError("algorithm")  # "none", unknown or absent
        if "crit" in header or "b64" in header:
            # RFC 7515 4.1.11: extensions we do not understand make it invalid;
            # RFC 7797's unencoded payloads are one, whether announced or not.
            raise TokenError("malformed")
        key, algs = self._key_for(header.get("kid"))
        if alg not in algs:
            raise TokenError("algorithm")
        try:
            claims = _pyjwt.decode(token, key, algorithms=[alg], audience=self.audience,
                                   issuer=self.issuer, options=self._options)
        except _pyjwt.InvalidSignatureError:
            raise TokenError("signature") from None
        except _pyjwt.InvalidAudienceError:
            raise TokenError("audience") from None
        except _pyjwt.InvalidIssuerError:
            raise TokenError("issuer") from None
        except _pyjwt.MissingRequiredClaimError:
            raise TokenError("missing-claim") from None
        except _pyjwt.InvalidAlgorithmError:
            raise TokenError("algorithm") from None
        except (_pyjwt.PyJWTError, ValueError, TypeError, RecursionError):
            raise TokenError("malformed") from None
        try:
            return freeze_claims(claims)
        except RecursionError:  # nested about as deep as json.loads allows
            raise TokenError("malformed") from None

    def _key_for(self, kid: Any) -> tuple[Any, frozenset[str]]:
        if kid is not None and self._by_kid:
            bound = self._by_kid.get(kid) if isinstance(kid, str) else None
        else:
            bound = self._default
        if bound is None:
            raise TokenError("key")  # unknown kid, or no key for tokens without one
        return bound

    def _check_times(self, claims: Mapping[str, Any]) -> None:
        now = self._clock()
        exp, nbf, iat = claims.get("exp"), claims.get("nbf"), claims.get("iat")
        if not _is_time(exp) or (nbf is not None and not _is_time(nbf)) \
                or (iat is not None and not _is_time(iat)):
            raise TokenError("malformed")
        if now >= exp + self.leeway:  # RFC 7519 4.1.4: valid only before exp
            raise TokenError("expired")
        if nbf is not None and nbf > now + self.leeway:
            raise TokenError("not-yet-valid")
        if iat is not None and iat > now + self.leeway:  # issued in the future
            raise TokenError("not-yet-valid")

    def interceptor(self, request: Any, ctx: Context, next: Handler) -> Any:
        """Server interceptor: verify the call's bearer token, if any, and
        make ``ctx.principal`` act for its user."""
        raw = ctx.metadata.get("authorization")
        if raw is None:
            if self.required:
                self._audit("deny", "missing-token", principal=ctx.principal,
                            service=ctx.service, endpoint=ctx.endpoint)
                raise RPCError(Code.UNAUTHENTICATED, "token required")
            return next(request, ctx)
        try:
            claims = self.verify(bearer_token(raw))
        except TokenError as exc:
            self._audit("deny", "invalid-token", principal=ctx.principal, service=ctx.service,
                        endpoint=ctx.endpoint, error=exc.reason)
            raise RPCError(Code.UNAUTHENTICATED, "invalid token") from None
        ctx.principal = (ctx.principal or ANONYMOUS).with_user(claims, roles_claim=self.roles_claim)
        return next(request, ctx)


def _one_or_tuple(value: str | Iterable[str] | None) -> str | tuple[str, ...] | None:
    return value if value is None or isinstance(value, str) else tuple(value)


def _is_time(value: Any) -> TypeIs[int | float]:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value))


def _bind(key: Any, algorithms: tuple[str, ...]) -> tuple[Any, frozenset[str]]:
    """``key`` ready for PyJWT, with the configured algorithms of its kind."""
    if isinstance(key, (str, bytes, bytearray)):
        data = key.encode() if isinstance(key, str) else bytes(key)
        if not _looks_asymmetric(data):
            try:
                # PyJWT's own guard: refuses PEM, SSH, DER and JWK text as secrets.
                HMACAlgorithm(HMACAlgorithm.SHA256).prepare_key(data)
            except _pyjwt.InvalidKeyError:
                raise ValueError("this key looks like an asymmetric key or a JWK, "
                                 "not an HMAC secret; pass a key object") from None
            algs = frozenset(a for a in algorithms if len(data) >= _HMAC_MIN.get(a, math.inf))
            if not algs:
                raise ValueError("an HMAC secret must be at least as long as its hash "
                                 "(32 bytes for HS256, RFC 7518 3.2), and an HS* algorithm "
                                 "must be among the algorithms")
            return data, algs
        key = _load_public(data)
    try:
        from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
    except ImportError:
        raise TypeError("keys other than HMAC secrets need the cryptography package") from None
    if isinstance(key, (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey,
                        ed25519.Ed25519PrivateKey, ed448.Ed448PrivateKey)):
        key = key.public_key()  # verification never needs the private half
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < _RSA_MIN_BITS:
            raise ValueError(f"RSA keys need at least {_RSA_MIN_BITS} bits")
        kind, family = "RSA", _RSA_ALGS
    elif isinstance(key, ec.EllipticCurvePublicKey):
        alg = _EC_ALGS.get(key.curve.name)
        kind, family = f"EC {key.curve.name}", frozenset({alg} if alg else ())
    elif isinstance(key, (ed25519.Ed25519PublicKey, ed448.Ed448PublicKey)):
        kind, family = "EdDSA", frozenset({"EdDSA"})
    else:
        raise TypeError(f"unsupported key type {type(key).__name__}")
    algs = family.intersection(algorithms)
    if not algs:
        raise ValueError(f"an {kind} key serves none of the algorithms {list(algorithms)}")
    return key, algs


def _looks_asymmetric(data: bytes) -> bool:
    head = data.lstrip()[:16]
    return head.startswith((b"-----BEGIN", b"ssh-", b"ecdsa-sha2-"))


def _load_public(data: bytes) -> Any:
    try:
        from cryptography import x509
        from cryptography.hazmat.primitives import serialization
    except ImportError:
        raise TypeError("PEM and SSH keys need the cryptography package") from None
    if b"PRIVATE KEY-----" in data:
        raise ValueError("give the verifier the public key, not the private one")
    if b"-----BEGIN CERTIFICATE-----" in data:
        return x509.load_pem_x509_certificate(data).public_key()
    if data.lstrip().startswith(b"-----BEGIN"):
        return serialization.load_pem_public_key(data)
    return serialization.load_ssh_public_key(data)
