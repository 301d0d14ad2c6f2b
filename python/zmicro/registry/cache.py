"""A client's view of the registry, kept in memory and fed by watches.

:class:`RegistryCache` answers ``get(name)`` from memory. The first lookup of
a name asks the registry once (concurrent first lookups of one name from
many threads share that one call: singleflight), then a watch keeps the
entry up to date: later lookups never touch the registry. Listeners
(:meth:`RegistryCache.subscribe`) hear ``(name, records)`` whenever a name's
records change, so a client can rebuild its node selection in place.

When the registry fails (a watch ends, ``get`` raises
:class:`RegistryError`), the last known records keep being served
(stale-on-error, :meth:`RegistryCache.is_stale` tells) while a thread
re-syncs the name (a new watch, then a new ``get``) with exponential backoff
and jitter. A backend whose watcher heals itself (etcd's re-reads and
re-watches after an outage) needs no re-sync: its events just resume (and
``is_stale`` follows its ``connected`` flag meanwhile).
Only a name never loaded raises (there is nothing to serve yet).

Each watched name has one thread and one registry watcher (for etcd, one
HTTP stream), kept until ``close()``, which stops them all: a client that
looks up many short-lived names pays for each.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable

import msgspec

from ._shared import merge
from .base import Event, EventType, Registry, RegistryError, ServiceRecord, Watcher, check_name

__all__ = ["Backoff", "RegistryCache"]

log = logging.getLogger(__name__)

Listener = Callable[[str, "list[ServiceRecord]"], None]


class Backoff:
    """Exponential backoff with jitter: ``next()`` gives the next wait in seconds.

    The n-th wait (from 0) is ``min(maximum, initial * 2**n)`` scaled by a
    factor in [0.5, 1) from ``rng`` (so many clients do not retry in step);
    ``reset()`` starts over.
    """

    def __init__(self, initial: float = 0.1, maximum: float = 5.0, *,
                 rng: Callable[[], float] = random.random) -> None:
        if not (initial > 0 and maximum >= initial):
            raise ValueError(f"backoff needs 0 < initial <= maximum, not {initial!r}, {maximum!r}")
        self._initial, self._maximum, self._rng = initial, maximum, rng
        self._attempt = 0

    def next(self) -> float:
        base = min(self._maximum, self._initial * 2.0 ** min(self._attempt, 60))
        self._attempt += 1
        return base * (0.5 + self._rng() / 2)

    def reset(self) -> None:
        self._attempt = 0


class _Entry:
    """One name: its published records and the node views they are made of."""

    __slots__ = ("name", "records", "views", "seq", "ready", "error", "stale",
                 "synced_at", "watcher", "thread")

    def __init__(self, name: str) -> None:
        self.name = name
        self.records: list[ServiceRecord] | None = None  # None until first loaded
        # (version, node id) -> (sequence of the change, one-node record)
        self.views: dict[tuple[str, str], tuple[int, ServiceRecord]] = {}
        self.seq = 0
        self.ready = threading.Event()
        self.error: RegistryError | None = None
        self.stale = False
        self.synced_at: float | None = None
        self.watcher: Watcher | None = None
        self.thread: threading.Thread | None = None


class RegistryCache:
    """Records of services by name, from memory; see the module docstring.

    ``clock`` (seconds) dates the syncs (:meth:`synced_at`); ``backoff_initial``
    and ``backoff_max`` bound the waits between re-sync attempts (seconds,
    jittered); ``rng`` feeds the jitter. Thread-safe.
    """

    def __init__(
        self,
        registry: Registry,
        *,
        clock: Callable[[], float] = time.monotonic,
        backoff_initial: float = 0.1,
        backoff_max: float = 5.0,
        rng: Callable[[], float] = random.random,
    ) -> None:
        if not isinstance(registry, Registry):
            raise TypeError(f"registry must be a Registry, not {type(registry).__name__}")
        Backoff(backoff_initial, backoff_max)  # validates the pair
        self._registry = registry
        self._clock = clock
        self._backoff = (backoff_initial, backoff_max, rng)
        self._lock = threading.Lock()
        self._entries: dict[str, _Entry] = {}
        self._listeners: list[Listener] = []
        self._closed = threading.Event()

    @property
    def registry(self) -> Registry:
        return self._registry

    @property
    def trusted(self) -> bool:
        """The registry's ``trusted``: whether its records' node keys may be believed."""
        return self._registry.trusted

    # -- lookups --

    def get(self, name: str) -> list[ServiceRecord]:
        """The records of ``name`` (one per live version, sorted; ``[]`` if none).

        From memory once the name is loaded; the first call per name asks the
        registry (once, however many threads ask) and raises its
        :class:`RegistryError` if it fails. The records are shared with other
        callers: read them, do not mutate their dicts.
        """
        entry = self._entries.get(name)
        if entry is not None:
            records = entry.records
            if records is not None:
                return list(records)
        return self._load(name)

    def is_stale(self, name: str) -> bool:
        """Whether ``name`` is served from its last known records because its watch broke.

        A watcher with a ``connected`` attribute (etcd's, which reconnects by
        itself) counts as broken while that is false.
        """
        entry = self._entries.get(name)
        if entry is None or entry.records is None:
            return False
        return entry.stale or not getattr(entry.watcher, "connected", True)

    def synced_at(self, name: str) -> float | None:
        """The clock's time of the last full read of ``name`` (None if never)."""
        entry = self._entries.get(name)
        return None if entry is None else entry.synced_at

    def names(self) -> list[str]:
        """The names loaded (and watched), sorted."""
        with self._lock:
            return sorted(n for n, e in self._entries.items() if e.records is not None)

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener(name, records)`` after each change of a loaded name.

        It runs on the name's watch thread (keep it short; an exception is
        logged and ignored), not for the first load. Returns a function that
        unsubscribes.
        """
        if not callable(listener):
            raise TypeError("listener must be callable")
        with self._lock:
            self._listeners.append(listener)

        def unsubscribe() -> None:
            with self._lock:
                if listener in self._listeners:
                    self._listeners.remove(listener)

        return unsubscribe

    def close(self) -> None:
        """Stop every watch and its thread; later lookups raise RegistryError. Idempotent."""
        with self._lock:
            self._closed.set()
            entries = list(self._entries.values())
        for entry in entries:
            if entry.watcher is not None:
                entry.watcher.stop()
        for entry in entries:
            thread = entry.thread
            if thread is not None and thread is not threading.current_thread():
                thread.join(timeout=30)

    def __enter__(self) -> RegistryCache:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- loading (singleflight) --

    def _load(self, name: str) -> list[ServiceRecord]:
        check_name(name, "name")
        with self._lock:
            if self._closed.is_set():
                raise RegistryError("the registry cache is closed")
            entry = self._entries.get(name)
            leader = entry is None
            if entry is None:
                entry = self._entries[name] = _Entry(name)
        if not leader:
            entry.ready.wait()
            if entry.records is None:
                raise entry.error or RegistryError(f"cannot look {name!r} up")
            return list(entry.records)
        try:
            watcher, records = self._read(name)
        except BaseException as e:
            with self._lock:
                if self._entries.get(name) is entry:
                    del self._entries[name]  # the next lookup tries again
            entry.error = e if isinstance(e, RegistryError) else RegistryError(f"cannot look {name!r} up: {e}")
            entry.ready.set()
            raise
        self._reset(entry, records)
        loaded = entry.records or []  # (a list once reset)
        entry.ready.set()
        with self._lock:
            if self._closed.is_set():
                watcher.stop()
                return list(loaded)
            entry.watcher = watcher
            entry.thread = threading.Thread(
                target=self._follow, args=(entry,), name=f"zmicro-cache({name})", daemon=True
            )
            entry.thread.start()
        return list(loaded)

    def _read(self, name: str) -> tuple[Watcher, list[ServiceRecord]]:
        """A watch, then a full read: no change falls between the two."""
        watcher = self._registry.watch(name)
        try:
            return watcher, self._registry.get(name)
        except BaseException:
            watcher.stop()
            raise

    # -- following --

    def _follow(self, entry: _Entry) -> None:
        watcher = entry.watcher
        while watcher is not None:
            event = watcher.next()
            if event is None:  # the watch ended: closed, or the registry broke
                if self._closed.is_set():
                    return
                entry.stale = True
                log.warning("registry cache: the watch of %r ended; serving the last known records",
                            entry.name)
                watcher = self._resync(entry)
                continue
            batch = [event]
            while (more := watcher.next(timeout=0)) is not None:
                batch.append(more)
            if self._apply(entry, batch):
                self._notify(entry)

    def _resync(self, entry: _Entry) -> Watcher | None:
        """Watch and read ``entry`` again until it works (backoff) or the cache closes."""
        initial, maximum, rng = self._backoff
        backoff = Backoff(initial, maximum, rng=rng)
        failures = 0
        while not self._closed.wait(backoff.next()):
            try:
                watcher, records = self._read(entry.name)
            except RegistryError as e:
                failures += 1
                if failures == 1:
                    log.warning("registry cache: cannot re-sync %r (will retry): %s", entry.name, e)
                continue
            with self._lock:
                if self._closed.is_set():
                    watcher.stop()
                    return None
                entry.watcher = watcher
            entry.stale = False
            log.info("registry cache: %r re-synced", entry.name)
            if self._reset(entry, records):
                self._notify(entry)
            return watcher
        return None

    def _reset(self, entry: _Entry, records: list[ServiceRecord]) -> bool:
        """Replace the entry's views by a full read; True if its records changed."""
        entry.views = {
            (r.version, n.id): (0, msgspec.structs.replace(r, nodes=(n,)))
            for r in records for n in r.nodes
        }
        entry.seq = 0
        entry.synced_at = self._clock()
        return self._publish(entry)

    def _apply(self, entry: _Entry, events: list[Event]) -> bool:
        """Fold watch events into the views; True if the records changed."""
        for event in events:
            record = event.record
            for node in record.nodes:
                key = (record.version, node.id)
                if event.type is EventType.DELETE:
                    entry.views.pop(key, None)
                else:
                    entry.seq += 1
                    entry.views[key] = (entry.seq, msgspec.structs.replace(record, nodes=(node,)))
        return self._publish(entry)

    def _publish(self, entry: _Entry) -> bool:
        by_version: dict[str, list[tuple[int, ServiceRecord]]] = {}
        for (version, _), pair in entry.views.items():
            by_version.setdefault(version, []).append(pair)
        records = [merge(by_version[v]) for v in sorted(by_version)]
        if records == entry.records:
            return False
        entry.records = records  # one assignment: readers see the old or the new list
        return True

    def _notify(self, entry: _Entry) -> None:
        with self._lock:
            listeners = list(self._listeners)
        records = entry.records or []
        for listener in listeners:
            try:
                listener(entry.name, list(records))
            except Exception:  # noqa: BLE001 - a listener's bug must not stop the watch
                log.exception("registry cache: a listener failed for %r", entry.name)
