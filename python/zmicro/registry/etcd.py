"""The cluster registry: the :class:`Registry` contract on etcd v3.

The requests, the lease's keep-alive thread and the watch stream are
:mod:`._etcd_client`'s; this module decides what is stored and when.

Layout: each registered node is one key ::

    <prefix><service>/<version>/<node id>

(UTF-8; names hold no "/", so the three parts split back unambiguously; an
empty version gives ``Greeter//node``) whose value is JSON
``{"record": <the record with only that node>, "changed": <ns>}`` —
``changed`` is the wall-clock time of the registration's last content
change, which picks a version's metadata and endpoints (see
:func:`._shared.merge`).

Leases: a registration with a ``ttl`` is put under the registry object's one
lease (granted on first use with the registry's ``ttl``), which one
keep-alive thread refreshes every ttl/3; so a node lives while its process
does, and disappears ``ttl`` seconds after the process died. The per-call
``ttl`` only says "expire with the process"; its value does not matter (one
lease serves every registration). A heartbeat (``register`` of what this
object already registered, unchanged) writes nothing: the keep-alive is
what keeps it alive (so a node another client deleted stays deleted until
its content changes or the lease is renewed). When a refresh finds the
lease gone (it expired while etcd was unreachable, or was revoked), the
thread grants a new lease and puts every live leased registration again:
the registry heals by itself after an etcd restart or outage. A registration without ``ttl`` has
no lease and stays until deregistered. :meth:`EtcdRegistry.close` deregisters
everything the object registered (revokes its lease, deletes its other keys).

Watchers read the gateway's watch stream from one thread each; when it
breaks (etcd restarted or unreachable) they re-read the range, report the
difference as events and watch again from there, with a backoff.

Trust (:attr:`EtcdRegistry.trusted`): true only when etcd has
authentication on and accepted ``username``/``password``; an open etcd lets
anyone who reaches it write records, so their node keys are not believed.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from collections.abc import Sequence

import msgspec

from ._etcd_client import GatewayClient, KeyEvent, Lease, WatchStream, parse_endpoints
from ._shared import QueueWatcher, copy_record, diff, merge
from .base import (
    Event,
    EventType,
    Registry,
    RegistryError,
    ServiceRecord,
    Watcher,
    check_name,
    check_record,
    check_ttl,
)

__all__ = ["DEFAULT_PREFIX", "DEFAULT_TTL", "EtcdRegistry", "parse_endpoints"]

log = logging.getLogger(__name__)

DEFAULT_PREFIX = "/zmicro/registry/"
#: Seconds a node outlives its process (the lease's TTL); etcd's minimum is 2.
DEFAULT_TTL = 10.0
#: Longest wait between two reconnection attempts of a watcher, in seconds.
BACKOFF_MAX = 2.0


class _Value(msgspec.Struct, frozen=True):
    record: ServiceRecord
    changed: int


_encode_value = msgspec.json.Encoder().encode
_decode_value = msgspec.json.Decoder(_Value).decode


class EtcdRegistry(Registry):
    """A :class:`Registry` on an etcd v3 cluster (3.4 or later).

    ``endpoints``: one URL, a comma-separated string or a list; a failing
    endpoint makes the next one current. ``prefix``: where the keys live
    (different prefixes are different registries). ``ttl``: the lease's
    TTL in seconds (at least 2). ``username``/``password``: etcd
    authentication (then :attr:`trusted` is true). ``timeout``: seconds per
    request. Construction contacts etcd (and authenticates): an unreachable
    server or refused credentials raise :class:`RegistryError` at once.
    """

    def __init__(
        self,
        endpoints: str | Sequence[str] = "http://127.0.0.1:2379",
        *,
        prefix: str = DEFAULT_PREFIX,
        ttl: float = DEFAULT_TTL,
        username: str | None = None,
        password: str | None = None,
        timeout: float = 5.0,
    ) -> None:
        if not isinstance(prefix, str) or not prefix or "\0" in prefix:
            raise ValueError(f"prefix must be a non-empty str without NUL, not {prefix!r}")
        if not prefix.endswith("/"):
            prefix += "/"
        try:
            self._prefix = prefix.encode()
        except UnicodeEncodeError:
            raise ValueError(f"prefix is not valid UTF-8 (lone surrogate): {prefix!r}") from None
        lease_ttl = check_ttl(ttl)
        if lease_ttl is None or lease_ttl < 2:
            raise ValueError(f"ttl must be at least 2 seconds (etcd's minimum lease), not {ttl!r}")
        # Checks the other arguments, then contacts etcd.
        self._client = GatewayClient(endpoints, timeout=timeout, username=username, password=password)
        self._lock = threading.RLock()  # registrations and lease
        # key -> (encoded value, under the lease?)
        self._regs: dict[bytes, tuple[bytes, bool]] = {}
        self._lease = Lease(self._client, lease_ttl)
        self._watchers: list[_EtcdWatcher] = []
        self._closed = False
        self.trusted = self._client.authenticated

    # -- public API --

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def endpoint(self) -> str:
        return self._client.endpoint

    @property
    def lease_id(self) -> int | None:
        """The id of the registry's lease (None before the first leased registration)."""
        return self._lease.id

    def register(self, record: ServiceRecord, *, ttl: float | None = None) -> None:
        record = check_record(record, for_register=True)
        ttl = check_ttl(ttl)
        with self._lock:
            self._check_open()
            for node in record.nodes:
                view = msgspec.structs.replace(record, nodes=(node,))
                key = self._key(record.name, record.version, node.id)
                old = self._regs.get(key)
                changed = time.time_ns()
                if old is not None:
                    previous = _decode_value(old[0])
                    if previous.record == view:
                        changed = previous.changed  # a heartbeat: content unchanged
                value = _encode_value(_Value(view, changed))
                leased = ttl is not None
                if old == (value, leased) and (not leased or self._lease.id is not None):
                    continue  # a heartbeat: the lease's keep-alive does the work, no write
                lease_id = self._lease.ensure() if leased else 0
                self._client.put("register", key, value, lease=lease_id)
                self._regs[key] = (value, leased)
            if ttl is not None:
                self._lease.start(self.refresh)

    def deregister(self, record: ServiceRecord) -> None:
        record = check_record(record, for_register=False)
        with self._lock:
            self._check_open()
            for node in record.nodes:
                key = self._key(record.name, record.version, node.id)
                self._client.delete("deregister", key)
                self._regs.pop(key, None)

    def get(self, name: str) -> list[ServiceRecord]:
        check_name(name, "name")
        self._check_open()
        _, views = self._range(self._prefix + name.encode() + b"/")
        return _records(views)

    def list(self) -> list[ServiceRecord]:
        self._check_open()
        _, views = self._range(self._prefix)
        return _records(views)

    def watch(self, name: str | None = None) -> Watcher:
        if name is not None:
            check_name(name, "name")
        self._check_open()
        prefix = self._prefix if name is None else self._prefix + name.encode() + b"/"
        watcher = _EtcdWatcher(self, prefix, name)  # raises RegistryError if etcd is out of reach
        with self._lock:
            if not self._closed:
                self._watchers.append(watcher)
                return watcher
        watcher.stop()
        raise RegistryError("the registry is closed")

    def refresh(self) -> bool:
        """One keep-alive round (the thread's work, callable by tests).

        Returns False when the lease was gone and everything was put again
        under a new one.
        """
        with self._lock:
            lease = self._lease.id
            if lease is None or self._closed:
                return True
            if self._lease.renew():
                return True
            log.warning("etcd registry: lease %x is gone; registering %d nodes again",
                        lease, sum(leased for _, leased in self._regs.values()))
            lease_id = self._lease.ensure()
            for key, (value, leased) in list(self._regs.items()):
                self._client.put("register", key, value, lease=lease_id if leased else 0)
            return False

    def close(self) -> None:
        """Stop watchers and the keep-alive; deregister this object's nodes (best effort)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            watchers, self._watchers = self._watchers, []
            regs, self._regs = self._regs, {}
            lease = self._lease.forget()
        self._lease.stop()
        for watcher in watchers:
            watcher.stop()
        try:
            if lease is not None:
                self._lease.revoke("close", lease)
            for key, (_, leased) in regs.items():
                if not leased:
                    self._client.delete("close", key)
        except RegistryError as e:
            log.warning("etcd registry: could not deregister on close: %s", e)
        self._client.close()

    # -- keys and values --

    def _check_open(self) -> None:
        if self._closed:
            raise RegistryError("the registry is closed")

    def _key(self, name: str, version: str, node_id: str) -> bytes:
        return self._prefix + f"{name}/{version}/{node_id}".encode()

    def _split(self, key: bytes) -> tuple[str, str, str] | None:
        if not key.startswith(self._prefix):
            return None
        try:
            parts = key[len(self._prefix):].decode().split("/")
        except UnicodeDecodeError:
            return None
        if len(parts) != 3:
            return None
        name, version, node_id = parts
        return name, version, node_id

    def _view(self, key: bytes, value: bytes) -> tuple[tuple[str, str, str], _Value] | None:
        """The registration stored at ``key``; None (and a log line) for a foreign one."""
        split = self._split(key)
        try:
            decoded = _decode_value(value)
        except (msgspec.DecodeError, msgspec.ValidationError) as e:
            log.warning("etcd registry: ignoring the unreadable key %r: %s", key, e)
            return None
        record = decoded.record
        if split is None or len(record.nodes) != 1 or split != (record.name, record.version, record.nodes[0].id):
            log.warning("etcd registry: ignoring the key %r: it does not match its record", key)
            return None
        return split, decoded

    def _range(self, prefix: bytes) -> tuple[int, dict[tuple[str, str, str], _Value]]:
        """(revision, registrations) of every key under ``prefix``."""
        revision, kvs = self._client.range("read", prefix)
        views = {}
        for key, value in kvs:
            got = self._view(key, value)
            if got is not None:
                views[got[0]] = got[1]
        return revision, views

    def _forget(self, watcher: QueueWatcher) -> None:
        with self._lock:
            self._watchers = [w for w in self._watchers if w is not watcher]


def _records(views: dict[tuple[str, str, str], _Value]) -> list[ServiceRecord]:
    groups: dict[tuple[str, str], list[tuple[int, ServiceRecord]]] = defaultdict(list)
    for key, value in views.items():
        groups[key[:2]].append((value.changed, value.record))
    return [merge(groups[k]) for k in sorted(groups)]


class _EtcdWatcher(QueueWatcher):
    """Events of one prefix, from the gateway's watch stream, read by one thread.

    The baseline (a range read) and the stream are set up before the
    constructor returns. When the stream breaks, the thread re-reads the
    range, pushes the difference and watches again (backoff up to
    BACKOFF_MAX); so events may merge across an outage, never get lost.
    """

    def __init__(self, registry: EtcdRegistry, prefix: bytes, name: str | None) -> None:
        super().__init__(on_stop=registry._forget)
        self._registry = registry
        self._prefix = prefix
        self._live: dict[tuple[str, str, str], ServiceRecord] = {}
        self._wake = threading.Event()
        self._stream: WatchStream | None = None
        self._stream_lock = threading.Lock()
        self._connected = False
        revision = self._sync(push=False)
        first = self._open(revision)  # raises RegistryError: watch() fails
        self._thread = threading.Thread(
            target=self._run, args=(first,), name=f"zmicro-etcd-watch({name or '*'})", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._wake.set()
        super().stop()
        self._interrupt()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout=30)

    @property
    def connected(self) -> bool:
        """Whether the stream is up (False while re-connecting after a break, and once stopped)."""
        return self._connected and not self.stopped

    # -- internals --

    def _sync(self, *, push: bool = True) -> int:
        """Read the range, push the difference from what we knew; return its revision."""
        revision, views = self._registry._range(self._prefix)
        live = {key: value.record for key, value in views.items()}
        events = diff(self._live, live) if push else []
        self._live = live
        for event in events:
            self.push(event)
        return revision

    def _open(self, revision: int) -> WatchStream | None:
        """Open the stream from ``revision + 1`` and wait for etcd to confirm it
        (None when stopped meanwhile)."""
        stream = self._registry._client.watch(self._prefix, revision + 1)
        with self._stream_lock:
            self._stream = stream  # from now on stop() can interrupt the wait
        if self._wake.is_set():
            self._close()
            return None
        try:
            stream.wait_created()
        except BaseException:
            self._close()
            raise
        self._connected = True
        return stream

    def _close(self) -> None:
        with self._stream_lock:
            self._connected = False
            stream, self._stream = self._stream, None
        if stream is not None:
            stream.close()

    def _interrupt(self) -> None:
        """Wake a thread blocked reading the stream."""
        with self._stream_lock:
            stream = self._stream
        if stream is not None:
            stream.interrupt()  # a no-op if the reader closed it meanwhile

    def _run(self, first: WatchStream | None) -> None:
        stream = first
        failures = 0
        while not self._wake.is_set():
            if stream is not None:
                try:
                    self._consume(stream)
                except Exception as e:  # noqa: BLE001 - a broken stream, whatever broke it
                    if not self._wake.is_set():
                        log.debug("etcd watch stream broke: %s", e)
                finally:
                    self._close()
                stream = None
            if self._wake.is_set():
                return
            backoff = min(BACKOFF_MAX, 0.05 * 2**failures)
            if self._wake.wait(backoff):
                return
            try:
                revision = self._sync()
                stream = self._open(revision)
                if failures:
                    log.info("etcd registry: watch of %r is back", self._prefix)
                failures = 0
            except RegistryError as e:
                if failures == 0:
                    log.warning("etcd registry: watch of %r broke (will retry): %s", self._prefix, e)
                failures = min(failures + 1, 10)

    def _consume(self, stream: WatchStream) -> None:
        for events in stream.batches():
            if self._wake.is_set():
                return
            for event in events:
                self._apply(event)

    def _apply(self, event: KeyEvent) -> None:
        split = self._registry._split(event.key)
        if split is None:
            return
        old = self._live.get(split)
        if event.deleted:
            if old is not None:
                del self._live[split]
                self.push(_event(EventType.DELETE, old))
            return
        got = self._registry._view(event.key, event.value)
        if got is None:
            return
        record = got[1].record
        if old == record:
            return  # a heartbeat or a re-put after a lease change
        self._live[split] = record
        self.push(_event(EventType.CREATE if old is None else EventType.UPDATE, record))


def _event(kind: EventType, record: ServiceRecord) -> Event:
    return Event(kind, copy_record(record))
