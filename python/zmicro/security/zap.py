"""The ZAP handler: which Curve clients a server accepts (RFC 27).

libzmq asks the ZAP handler of a socket's context (the socket bound to
``inproc://zeromq.zap.01``; one per context) about every incoming
connection of a server socket; :class:`Authenticator` is that handler. It
serves several domains, one per service (``ZAP_DOMAIN``), each with its own
allowlist: a callable returning ``{z85 key: TrustedKey}`` that it calls for
every handshake, so an allowlist that changes (:func:`allowlist_from` over a
:class:`~zmicro.security.keys.KeyStore`) takes effect for the next
connection, no restart needed. Connections already established stay until
they close.

The answer to a request is ``200`` only for the CURVE mechanism, a
registered domain and a key in that domain's allowlist; the reply's
User-Id is the client's Z85 public key and its metadata carries ``X-Name``
and ``X-Roles`` (space-separated), which libzmq attaches to every message of
the connection (``zmq_msg_gets(msg, "X-Roles")``). Anything else is ``400``.
Every decision goes to the audit log (:func:`zmicro.auth.audit`).

Servers must set ``ZAP_ENFORCE_DOMAIN=1`` (``Security.configure_server``
does): without it libzmq accepts every Curve client when no handler is
bound — after :meth:`Authenticator.stop`, say — and with it, refuses every
one. ``zmq.auth.ThreadAuthenticator`` is not used: it has one allowlist per
context and no metadata, and it binds the same endpoint (only one of the
two can run in a context).
"""

from __future__ import annotations

import logging
import os
import struct
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

import zmq
import zmq.utils.z85

from ..auth.audit import audit
from ..auth.principal import Principal
from ..errors import Error
from .keys import KeyStore, TrustedKey

__all__ = ["ZAP_ENDPOINT", "Allowlist", "Authenticator", "allowlist_from", "encode_metadata",
           "decode_metadata"]

log = logging.getLogger(__name__)

ZAP_ENDPOINT = "inproc://zeromq.zap.01"  # fixed by RFC 27
_ZAP_VERSION = b"1.0"

#: What a domain's allowlist is: called for every handshake, so it must be
#: cheap (``allowlist_from`` caches); its result must not be mutated.
Allowlist = Callable[[], Mapping[str, TrustedKey]]


# -- ZMTP metadata (RFC 23 / 37: the encoding of READY properties) --------------


def encode_metadata(properties: Mapping[str, str]) -> bytes:
    """ZMTP metadata: for each property a 1-byte name length, the name, a
    4-byte big-endian value length and the value (UTF-8)."""
    out = bytearray()
    for name, value in properties.items():
        raw_name, raw_value = name.encode(), value.encode()
        if not 0 < len(raw_name) < 256:
            raise ValueError(f"metadata name {name!r} must be 1 to 255 bytes")
        out += bytes((len(raw_name),)) + raw_name
        out += struct.pack(">I", len(raw_value)) + raw_value
    return bytes(out)


def decode_metadata(data: bytes) -> dict[str, str]:
    """The inverse of :func:`encode_metadata`; ValueError if ``data`` is not
    well-formed (truncated, empty name, invalid UTF-8)."""
    properties: dict[str, str] = {}
    view, pos = memoryview(data), 0
    while pos < len(view):
        size = view[pos]
        if size == 0 or pos + 1 + size + 4 > len(view):
            raise ValueError("truncated metadata property name")
        name = bytes(view[pos + 1:pos + 1 + size]).decode()
        pos += 1 + size
        (length,) = struct.unpack_from(">I", view, pos)
        pos += 4
        if pos + length > len(view):
            raise ValueError("truncated metadata property value")
        properties[name] = bytes(view[pos:pos + length]).decode()
        pos += length
    return properties


# -- allowlists over a key store -----------------------------------------------


_UNREAD = object()  # a signature no directory has: the first call reads


class _StoreAllowlist:
    """``store.trusted()``, re-read only when the trusted directory changed
    (its mtime, or the name, mtime, size or inode of any ``*.key`` in it),
    which is checked at most every ``interval`` seconds."""

    def __init__(self, store: KeyStore, interval: float) -> None:
        self._store = store
        self._interval = interval
        self._lock = threading.Lock()
        self._next_check = 0.0
        self._signature: object = _UNREAD
        self._current: Mapping[str, TrustedKey] = MappingProxyType({})

    def __call__(self) -> Mapping[str, TrustedKey]:
        # Unlocked fast path: attribute reads are atomic, and a stale answer
        # is at most `interval` old, as promised.
        if time.monotonic() < self._next_check:
            return self._current
        with self._lock:
            if time.monotonic() >= self._next_check:
                # The signature is taken before reading: a change during the
                # read shows up as a new signature at the next check.
                signature = self._directory_signature()
                if signature != self._signature:
                    self._current = MappingProxyType(self._store.trusted())
                    self._signature = signature
                self._next_check = time.monotonic() + self._interval
            return self._current

    def _directory_signature(self) -> object:
        directory = self._store.trusted_dir
        try:
            st = os.stat(directory)
            files = []
            with os.scandir(directory) as entries:
                for entry in entries:
                    if entry.name.endswith(".key"):
                        try:
                            fst = entry.stat()
                        except OSError:
                            continue
                        files.append((entry.name, fst.st_mtime_ns, fst.st_size, fst.st_ino))
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_ino, st.st_mode, st.st_uid, tuple(sorted(files)))


# One cache per trusted directory and interval: every service of a process
# that uses the same store shares it (and so reads the directory once).
_allowlists: weakref.WeakValueDictionary[tuple[str, float], _StoreAllowlist] = \
    weakref.WeakValueDictionary()
_allowlists_lock = threading.Lock()


def allowlist_from(store: KeyStore, *, interval: float = 0.5) -> Allowlist:
    """An :data:`Allowlist` over ``store``'s trusted keys that notices added
    and removed keys within ``interval`` seconds, without restart.

    Calls for the same trusted directory return the same object while it
    is in use.
    """
    if not interval >= 0:
        raise ValueError(f"interval must be >= 0, not {interval!r}")
    key = (str(store.trusted_dir), float(interval))
    with _allowlists_lock:
        allowlist = _allowlists.get(key)
        if allowlist is None:
            allowlist = _allowlists[key] = _StoreAllowlist(store, interval)
        return allowlist


# -- the handler ---------------------------------------------------------------


class Authenticator:
    """The ZAP handler of one :class:`zmq.Context`: a thread answering on
    ``inproc://zeromq.zap.01`` for the domains registered with
    :meth:`add_domain`.

    Get it with :meth:`for_context` (it is created and started on first
    use); :meth:`stop` ends it, after which every server socket of the
    context with ``ZAP_ENFORCE_DOMAIN`` refuses new connections, and
    :meth:`for_context` starts a new one (with no domains). Terminating the
    context stops it too. All methods are thread-safe.
    """

    _registry_lock = threading.Lock()
    _running: dict[int, Authenticator] = {}  # by the libzmq context's address

    def __init__(self, zctx: zmq.Context[Any]) -> None:
        """Internal: use :meth:`for_context`."""
        self._ctx = zctx
        self._key = zctx.underlying
        self._lock = threading.Lock()
        self._domains: dict[str, tuple[Allowlist, int]] = {}
        self._allowed = 0
        self._denied = 0
        self._stopping = False
        self._running_flag = False
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)
        self._thread = threading.Thread(target=self._run, name="zmicro-zap", daemon=True)

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<Authenticator {state} domains={sorted(self._domains)}>"

    @classmethod
    def for_context(cls, zctx: zmq.Context[Any]) -> Authenticator:
        """The running authenticator of ``zctx``, started if there is none.

        Raises :class:`zmicro.errors.Error` when it cannot start, e.g.
        another ZAP handler (``zmq.auth``) is bound in this context.
        """
        while True:
            if zctx.closed:
                raise Error("the zmq context is terminated")
            with cls._registry_lock:
                auth = cls._running.get(zctx.underlying)
                if auth is None or auth._ctx.closed:
                    auth = cls(zctx)
                    auth._start()
                    cls._running[auth._key] = auth
                    return auth
                if auth.running:
                    return auth
            # Being stopped by another thread: wait until it lets go of the
            # endpoint (and unregisters), then start a new one.
            auth._thread.join()

    @classmethod
    def existing(cls, zctx: zmq.Context[Any]) -> Authenticator | None:
        """The running authenticator of ``zctx``, or None (never starts one)."""
        if zctx.closed:
            return None
        with cls._registry_lock:
            auth = cls._running.get(zctx.underlying)
        return auth if auth is not None and auth.running and not auth._ctx.closed else None

    @property
    def running(self) -> bool:
        return self._running_flag and not self._stopping

    def _start(self) -> None:
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            self._thread.join()
            raise Error(f"cannot start the ZAP handler on {ZAP_ENDPOINT}: {self._error} "
                        "(is another handler, e.g. zmq.auth, running in this context?)"
                        ) from self._error

    # -- domains

    def add_domain(self, domain: str, allowlist: Allowlist) -> None:
        """Answer for ``domain`` with ``allowlist``.

        Adding a domain again with the same allowlist counts a reference
        (several sockets of one service); each :meth:`remove_domain` drops
        one. Raises ValueError when ``domain`` is registered with another
        allowlist, :class:`~zmicro.errors.Error` when stopped.
        """
        if not isinstance(domain, str) or not 0 < len(domain.encode()) <= 255:
            raise ValueError("a ZAP domain is a str of 1 to 255 bytes")
        if not callable(allowlist):
            raise TypeError("allowlist must be a callable returning a mapping")
        with self._lock:
            if not self.running:
                raise Error("the ZAP handler is stopped")
            current = self._domains.get(domain)
            if current is None:
                self._domains[domain] = (allowlist, 1)
            elif current[0] is allowlist:
                self._domains[domain] = (allowlist, current[1] + 1)
            else:
                raise ValueError(f"ZAP domain {domain!r} is already served with another "
                                 "allowlist")

    def remove_domain(self, domain: str) -> None:
        """Drop one reference to ``domain``; the last one makes its
        connections refused (``unknown domain``). Unknown domains are ignored."""
        with self._lock:
            current = self._domains.get(domain)
            if current is None:
                return
            if current[1] > 1:
                self._domains[domain] = (current[0], current[1] - 1)
            else:
                del self._domains[domain]

    def domains(self) -> list[str]:
        with self._lock:
            return sorted(self._domains)

    def stats(self) -> dict[str, int]:
        """Decisions so far: ``{"allowed": n, "denied": n}``."""
        with self._lock:
            return {"allowed": self._allowed, "denied": self._denied}

    counters = property(stats)

    # -- lifecycle

    def stop(self) -> None:
        """Stop answering; returns once the handler socket is closed.

        From then on, servers with ``ZAP_ENFORCE_DOMAIN`` refuse every new
        connection (libzmq finds no handler). Stopping twice is harmless.
        """
        with self._lock:
            self._stopping = True
            if self._wake_w >= 0:
                try:
                    os.write(self._wake_w, b"x")
                except BlockingIOError:  # already woken
                    pass
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join()

    def _run(self) -> None:
        # Not ctx.socket(): the context must not track this socket, or
        # ctx.destroy() would close it from another thread while we poll it.
        # It is closed here, when stopped or when the context terminates.
        sock = zmq.Socket(self._ctx, zmq.REP)
        try:
            sock.linger = 0
            sock.bind(ZAP_ENDPOINT)
        except zmq.ZMQError as exc:
            self._error = exc
            sock.close(linger=0)
            self._exited(registered=False)  # for_context holds the registry lock
            self._ready.set()
            return
        self._running_flag = True
        self._ready.set()
        poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN)
        poller.register(self._wake_r, zmq.POLLIN)
        try:
            while not self._stopping:
                try:
                    events = dict(poller.poll())
                    if self._wake_r in events:
                        break
                    if sock not in events:
                        continue
                    request = sock.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    continue
                except zmq.ContextTerminated:
                    break
                reply = self._answer(request)
                try:
                    sock.send_multipart(reply)
                except zmq.ContextTerminated:
                    break
        finally:
            # Unbind first: it releases the endpoint at once, whereas close()
            # leaves that to libzmq's reaper thread, and a new handler's bind
            # (for_context right after stop) would race it (EADDRINUSE).
            try:
                sock.unbind(ZAP_ENDPOINT)
            except zmq.ZMQError:  # ETERM: the context is going away anyway
                pass
            sock.close(linger=0)
            self._exited()

    def _exited(self, *, registered: bool = True) -> None:
        with self._lock:
            self._running_flag = False
            self._stopping = True
            self._domains.clear()
            os.close(self._wake_r)
            os.close(self._wake_w)
            self._wake_r = self._wake_w = -1
        if not registered:
            return
        with self._registry_lock:
            if self._running.get(self._key) is self:
                del self._running[self._key]

    # -- answers

    def _answer(self, request: list[bytes]) -> list[bytes]:
        """The reply frames to one ZAP request; never raises (a REP socket
        must answer, and an error must refuse, not accept)."""
        request_id = request[1] if len(request) > 1 else b""
        try:
            return self._decide(request)
        except Exception:
            log.exception("zmicro: ZAP request failed; refusing the connection")
            self._count(False)
            return [_ZAP_VERSION, request_id, b"500", b"internal error", b"", b""]

    def _decide(self, request: list[bytes]) -> list[bytes]:
        if len(request) < 6 or request[0] != _ZAP_VERSION:
            self._count(False)
            request_id = request[1] if len(request) > 1 else b""
            return [_ZAP_VERSION, request_id, b"500", b"malformed ZAP request", b"", b""]
        _version, request_id, raw_domain, raw_address, _identity, mechanism = request[:6]
        credentials = request[6:]
        domain = raw_domain.decode("utf-8", "replace")
        peer = raw_address.decode("utf-8", "replace")

        def deny(reason: str, text: bytes, principal: Principal | None) -> list[bytes]:
            self._count(False)
            audit("deny", reason, principal=principal, service=domain, endpoint="", peer=peer)
            return [_ZAP_VERSION, request_id, b"400", text, b"", b""]

        if mechanism != b"CURVE":
            return deny("handshake:mechanism", b"mechanism not allowed", None)
        if len(credentials) != 1 or len(credentials[0]) != 32:
            return deny("handshake:malformed", b"malformed credentials", None)
        key = zmq.utils.z85.encode(credentials[0]).decode("ascii")
        entry = self._domains.get(domain)
        if entry is None:
            return deny("handshake:unknown-domain", b"unknown domain", Principal(key=key))
        trusted = entry[0]().get(key)
        if trusted is None:
            return deny("handshake:key-not-allowed", b"key not allowed", Principal(key=key))
        roles = " ".join(sorted(trusted.roles))
        self._count(True)
        audit("allow", "handshake", principal=Principal(key, trusted.name, trusted.roles),
              service=domain, endpoint="", peer=peer)
        metadata = encode_metadata({"X-Name": trusted.name, "X-Roles": roles})
        return [_ZAP_VERSION, request_id, b"200", b"OK", key.encode("ascii"), metadata]

    def _count(self, allowed: bool) -> None:
        with self._lock:
            if allowed:
                self._allowed += 1
            else:
                self._denied += 1
