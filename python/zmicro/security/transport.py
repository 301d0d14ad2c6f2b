"""Transport security: CurveZMQ with an enforced client allowlist, on by default.

A :class:`Security` is what a service or client needs to secure its
sockets: the user's key store and identity (:mod:`zmicro.security.keys`),
and the process's ZAP handler (:mod:`zmicro.security.zap`). Build it with
:meth:`Security.resolve`; then

- a server socket: :meth:`~Security.configure_server` before ``bind``
  (Curve server, ZAP domain with ``ZAP_ENFORCE_DOMAIN=1``, the allowlist
  registered with the context's authenticator), :meth:`~Security.release_server`
  after ``close``;
- a client socket: :meth:`~Security.server_key_for` decides which server key
  to trust, :meth:`~Security.configure_client` before ``connect``;
- both: a ``MAXMSGSIZE`` set before ``configure_*`` bounds the frames as
  sent (libzmq applies it to the encrypted frame: it is raised by
  :data:`CURVE_FRAME_OVERHEAD`);
- a received message: :meth:`~Security.principal_for` its ``User-Id``.

Plaintext only on request: ``insecure=True`` or ``ZMICRO_INSECURE=1``
(:func:`resolve_insecure`), and then every method above does nothing.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping
from typing import Any

import zmq

from ..auth.principal import ANONYMOUS, Principal
from ..errors import Code, Error, RPCError
from .keys import KeyPair, KeyStore, TrustedKey, check_key, fingerprint, load_public_key
from .mackeys import MacSecrets, secrets_path
from .zap import Allowlist, Authenticator, allowlist_from

__all__ = ["CURVE_FRAME_OVERHEAD", "MIN_LIBZMQ", "Security", "check_libzmq",
           "resolve_insecure"]

log = logging.getLogger(__name__)

#: Oldest libzmq accepted in secure mode: 4.3.3 fixes CVE-2019-13132 (a
#: stack overflow before authentication, with CURVE) and CVE-2020-15166
#: (memory exhaustion by unauthenticated peers).
MIN_LIBZMQ = (4, 3, 3)

#: Bytes CurveZMQ adds to each frame (RFC 26, the MESSAGE command: its name
#: 8, the short nonce 8, the Poly1305 tag 16, the flags byte 1). libzmq
#: checks MAXMSGSIZE against the frame as it arrives, encrypted.
CURVE_FRAME_OVERHEAD = 33

_TRUE = ("1", "true", "yes")
_FALSE = ("", "0", "false", "no")
_said: set[str] = set()
_said_lock = threading.Lock()


def _once(message: str, *args: object) -> None:
    with _said_lock:
        if message in _said:
            return
        _said.add(message)
    log.warning(message, *args)


def resolve_insecure(insecure: bool | None = None) -> bool:
    """Whether to run plaintext: ``insecure`` if given, else whether
    ``ZMICRO_INSECURE`` is ``1``, ``true`` or ``yes`` (any case).

    Any other value of ``ZMICRO_INSECURE`` keeps security on (and says so
    once). Plaintext is logged once per process as a warning.
    """
    if insecure is None:
        value = os.environ.get("ZMICRO_INSECURE", "").strip().lower()
        insecure = value in _TRUE
        if value not in _TRUE and value not in _FALSE:
            _once("zmicro: ZMICRO_INSECURE=%r is not 1/true/yes: security stays on", value)
    if insecure:
        _once("zmicro: INSECURE mode on request: traffic is plaintext, peers are not "
              "authenticated and messages carry no MAC")
    return bool(insecure)


class Security:
    """The security settings of one service or client.

    Attributes: ``insecure``; ``store`` (the
    :class:`~zmicro.security.keys.KeyStore`, None when insecure); ``identity``
    (its :class:`~zmicro.security.keys.KeyPair`, None when insecure);
    ``public_key`` (``""`` when insecure), the key to publish in a registry
    :class:`~zmicro.registry.Node`; ``allowlist`` (the trusted keys, as the
    ZAP handler sees them; None when insecure); ``secrets`` (the
    :class:`~zmicro.security.mackeys.MacSecrets` every message is signed
    with, None when insecure).
    """

    def __init__(self, *, insecure: bool, store: KeyStore | None,
                 identity: KeyPair | None, secrets: MacSecrets | None = None) -> None:
        """Internal: use :meth:`resolve`."""
        self.insecure = insecure
        self.store = store
        self.identity = identity
        self.secrets = secrets
        self.public_key = identity.public if identity is not None else ""
        self.allowlist: Allowlist | None = allowlist_from(store) if store is not None else None
        self._principals_source: Mapping[str, TrustedKey] | None = None
        self._principals: dict[str, Principal] = {}

    def __repr__(self) -> str:
        if self.insecure or self.store is None:
            return "<Security insecure>"
        return f"<Security key={fingerprint(self.public_key)[:8]} store={str(self.store.path)!r}>"

    @classmethod
    def resolve(cls, *, insecure: bool | None = None,
                keys: str | os.PathLike[str] | KeyStore | None = None,
                mac_window: float = 30.0) -> Security:
        """Security as asked: plaintext when :func:`resolve_insecure` says so,
        else Curve with the key store ``keys`` (a :class:`KeyStore` or its
        directory; default: :func:`zmicro.security.keys.home`), whose
        identity is created on first use, and the MAC secrets of that store
        (:func:`~zmicro.security.mackeys.secrets_path`) with a timestamp
        window of ``mac_window`` seconds. The one setup of services and
        clients alike.

        Raises :class:`~zmicro.errors.Error` when libzmq is older than
        :data:`MIN_LIBZMQ` or built without CURVE, and
        :class:`~zmicro.security.keys.KeyStoreError` when the key store is
        unusable.
        """
        if resolve_insecure(insecure):
            return cls(insecure=True, store=None, identity=None)
        check_libzmq()
        store = keys if isinstance(keys, KeyStore) else KeyStore(keys)
        identity = store.identity()
        return cls(insecure=False, store=store, identity=identity,
                   secrets=MacSecrets(secrets_path(store.path), window=mac_window))

    # -- servers

    def configure_server(self, sock: zmq.Socket[Any], domain: str) -> None:
        """Make ``sock`` a Curve server answering only clients in the
        allowlist, under ZAP ``domain`` (one per service). Call before bind.

        Sets ``CURVE_SERVER``, ``CURVE_SECRETKEY``, ``ZAP_DOMAIN`` and
        ``ZAP_ENFORCE_DOMAIN=1`` (checked by reading it back: without it,
        libzmq accepts everyone when no ZAP handler answers), and registers
        ``domain`` with the context's :class:`~zmicro.security.zap.Authenticator`.
        A ``MAXMSGSIZE`` already set is raised by :data:`CURVE_FRAME_OVERHEAD`.
        """
        if self.insecure:
            return
        identity = self._identity()
        auth = Authenticator.for_context(sock.context)
        auth.add_domain(domain, self._allowlist())
        try:
            sock.setsockopt(zmq.ZAP_ENFORCE_DOMAIN, 1)
            if sock.getsockopt(zmq.ZAP_ENFORCE_DOMAIN) != 1:
                raise Error("this libzmq ignores ZAP_ENFORCE_DOMAIN: refusing to serve "
                            "without an enforced allowlist")
            sock.setsockopt(zmq.ZAP_DOMAIN, domain.encode())
            sock.setsockopt(zmq.CURVE_SECRETKEY, identity.secret.encode("ascii"))
            sock.setsockopt(zmq.CURVE_SERVER, 1)
            _frame_limit_as_sent(sock)
        except BaseException:
            auth.remove_domain(domain)
            raise

    def release_server(self, sock: zmq.Socket[Any], domain: str) -> None:
        """Undo the registration of :meth:`configure_server` (after closing
        ``sock``): its domain is no longer answered once its last socket
        is released."""
        if self.insecure:
            return
        auth = Authenticator.existing(sock.context)
        if auth is not None:
            auth.remove_domain(domain)

    # -- clients

    def configure_client(self, sock: zmq.Socket[Any], server_key: str) -> None:
        """Make ``sock`` a Curve client of the server whose public key is
        ``server_key`` (Z85), with this identity. Call before connect. A
        ``MAXMSGSIZE`` already set is raised by :data:`CURVE_FRAME_OVERHEAD`.

        Raises ValueError for a malformed ``server_key``.
        """
        if self.insecure:
            return
        identity = self._identity()
        check_key(server_key)
        sock.setsockopt(zmq.CURVE_SERVERKEY, server_key.encode("ascii"))
        sock.setsockopt(zmq.CURVE_PUBLICKEY, identity.public.encode("ascii"))
        sock.setsockopt(zmq.CURVE_SECRETKEY, identity.secret.encode("ascii"))
        _frame_limit_as_sent(sock)

    def server_key_for(self, address: str, *, server_key: str | None = None,
                       registry_key: str = "", registry_trusted: bool = False) -> str:
        """The public key to expect from the server at ``address``, from a
        trusted source only (``""`` when insecure). In order:

        1. ``server_key``, given explicitly (Z85 or a certificate file);
        2. ``registry_key`` (the node's key in its registry record) when the
           registry is trusted (``registry_trusted``: the registry class's
           ``trusted``), or when the key is this user's own or is in the
           trust store;
        3. with no ``registry_key``: this user's own public key — on one
           machine every service of the user has it, and no one else can
           answer to it without the secret key.

        Raises :class:`~zmicro.errors.RPCError` ``UNAUTHENTICATED`` when no
        source vouches for a key (a registry key from an untrusted registry
        that the trust store does not hold), ValueError for a malformed
        explicit ``server_key``.
        """
        if self.insecure:
            return ""
        if server_key is not None:
            return load_public_key(server_key)
        if registry_key:
            try:
                check_key(registry_key)
            except ValueError:
                raise RPCError(Code.UNAUTHENTICATED,
                               f"malformed server key in the registry for {address}") from None
            if (registry_trusted or registry_key == self.public_key
                    or registry_key in self._allowlist()()):
                return registry_key
            raise RPCError(Code.UNAUTHENTICATED,
                           f"no trusted server key for {address}: its registry key "
                           f"({fingerprint(registry_key)[:16]}) comes from an untrusted "
                           "registry and is not in the trust store; pass server_key= or "
                           "trust the key (zmicro trust) or the registry")
        if self.identity is not None:
            return self.identity.public
        raise RPCError(Code.UNAUTHENTICATED, f"no trusted server key for {address}: pass "
                       "server_key= or trust the registry")

    # A secure Security always has an identity and an allowlist; failing
    # closed if one is missing beats serving or calling without it.
    def _identity(self) -> KeyPair:
        if self.identity is None:
            raise Error("an insecure Security has no identity")
        return self.identity

    def _allowlist(self) -> Allowlist:
        if self.allowlist is None:
            raise Error("an insecure Security has no allowlist")
        return self.allowlist

    # -- principals

    def principal_for(self, user_id: str | None) -> Principal:
        """The :class:`~zmicro.auth.Principal` of a message whose ZAP
        ``User-Id`` is ``user_id`` (a Z85 public key): its allowlist name and
        roles. ``None``, insecure mode, and a key that is no longer in the
        allowlist (removed after its connection was accepted) give
        :data:`~zmicro.auth.ANONYMOUS`: revoking a key revokes its rights on
        open connections too.
        """
        if not user_id or self.insecure:
            return ANONYMOUS
        source = self._allowlist()()
        if source is not self._principals_source:
            # Built aside and swapped in whole: readers on other threads see
            # the old table or the new one.
            self._principals = {k: Principal(k, t.name, t.roles) for k, t in source.items()}
            self._principals_source = source
        return self._principals.get(user_id, ANONYMOUS)


def _frame_limit_as_sent(sock: zmq.Socket[Any]) -> None:
    """Raise `sock`'s MAXMSGSIZE, if set, by the Curve overhead: zmicro's
    max_message_size counts a frame's bytes as the sender hands them over
    (a peer's client checks its requests against it before sending)."""
    limit = sock.getsockopt(zmq.MAXMSGSIZE)
    if isinstance(limit, int) and limit >= 0:  # (an int option: never bytes)
        sock.setsockopt(zmq.MAXMSGSIZE, limit + CURVE_FRAME_OVERHEAD)


def check_libzmq() -> None:
    """Raise :class:`~zmicro.errors.Error` unless libzmq can run secure:
    CURVE built in and version :data:`MIN_LIBZMQ` or later."""
    version = zmq.zmq_version_info()
    if version < MIN_LIBZMQ:
        raise Error(f"libzmq {zmq.zmq_version()} is too old for secure mode: "
                    f"{'.'.join(map(str, MIN_LIBZMQ))} or later fixes CVE-2019-13132 and "
                    "CVE-2020-15166; upgrade pyzmq")
    if not zmq.has("curve"):
        raise Error("this libzmq has no CURVE support; install a pyzmq wheel (it bundles "
                    "libsodium) or run insecure on purpose (ZMICRO_INSECURE=1)")
