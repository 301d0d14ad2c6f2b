"""An in-process registry for tests and single-process programs."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import msgspec

from ._shared import QueueWatcher, copy_record, merge
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

__all__ = ["MemoryRegistry"]


@dataclass
class _Entry:
    view: ServiceRecord  # the registration of one node: record with nodes == (node,)
    expires: float | None  # in the registry's clock; None: never
    changed: int  # sequence number of the last content change (see merge())


class MemoryRegistry(Registry):
    """A :class:`Registry` held in a dict, shared by the threads of one process.

    Expiry follows the injected ``clock`` (seconds, any epoch): expired nodes
    are removed, and reported as DELETE, whenever they are noticed — on any
    call, when a watcher polls (its ``next`` re-checks at least every 0.25 s
    while a node has a TTL), or on :meth:`expire`. With a fake clock, advance
    it and call ``expire()`` (or ``next``) for a deterministic sweep.
    """

    #: In-process: only this program registers, so its keys are trusted.
    trusted = True

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        # name -> version -> node id -> entry
        self._services: dict[str, dict[str, dict[str, _Entry]]] = {}
        self._watchers: list[tuple[str | None, QueueWatcher]] = []
        self._seq = 0
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    def register(self, record: ServiceRecord, *, ttl: float | None = None) -> None:
        record = check_record(record, for_register=True)
        ttl = check_ttl(ttl)
        with self._lock:
            now = self._sweep_locked()
            expires = None if ttl is None else now + ttl
            entries = self._services.setdefault(record.name, {}).setdefault(record.version, {})
            for node in record.nodes:
                view = msgspec.structs.replace(record, nodes=(node,))
                old = entries.get(node.id)
                if old is not None and old.view == view:
                    old.expires = expires  # a heartbeat: refresh only
                    continue
                self._seq += 1
                entries[node.id] = _Entry(view, expires, self._seq)
                self._emit(EventType.CREATE if old is None else EventType.UPDATE, view)

    def deregister(self, record: ServiceRecord) -> None:
        record = check_record(record, for_register=False)
        with self._lock:
            self._sweep_locked()
            versions = self._services.get(record.name, {})
            entries = versions.get(record.version, {})
            for node in record.nodes:
                old = entries.pop(node.id, None)
                if old is not None:
                    self._emit(EventType.DELETE, old.view)
            self._prune(record.name, record.version)

    def get(self, name: str) -> list[ServiceRecord]:
        check_name(name, "name")
        with self._lock:
            self._sweep_locked()
            versions = self._services.get(name, {})
            return [self._record(versions[v]) for v in sorted(versions)]

    def list(self) -> list[ServiceRecord]:
        with self._lock:
            self._sweep_locked()
            return [
                self._record(versions[v])
                for name, versions in sorted(self._services.items())
                for v in sorted(versions)
            ]

    def watch(self, name: str | None = None) -> Watcher:
        if name is not None:
            check_name(name, "name")
        with self._lock:
            self._sweep_locked()
            watcher = QueueWatcher(poll=self._poll, on_stop=self._forget)
            self._watchers.append((name, watcher))
            return watcher

    def expire(self) -> int:
        """Sweep expired nodes now (DELETE events included); return how many."""
        with self._lock:
            before = self._count()
            self._sweep_locked()
            return before - self._count()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            watchers = [w for _, w in self._watchers]
            self._watchers.clear()
        for watcher in watchers:
            watcher.stop()

    # -- internals; *_locked and the helpers they call run under self._lock --

    def _sweep_locked(self) -> float:
        """Refuse a closed registry, drop expired nodes, and return the clock's time."""
        if self._closed:
            raise RegistryError("the registry is closed")
        now = self._clock()
        for name, versions in list(self._services.items()):
            for version, entries in list(versions.items()):
                for node_id, entry in list(entries.items()):
                    if entry.expires is not None and entry.expires <= now:
                        del entries[node_id]
                        self._emit(EventType.DELETE, entry.view)
                self._prune(name, version)
        return now

    def _poll(self) -> float | None:
        """A watcher's poll: sweep, then say when the next expiry is due."""
        with self._lock:
            if self._closed:
                return None
            now = self._sweep_locked()
            due = [
                e.expires
                for versions in self._services.values()
                for entries in versions.values()
                for e in entries.values()
                if e.expires is not None
            ]
            return min(due) - now if due else None

    def _forget(self, watcher: QueueWatcher) -> None:
        with self._lock:
            self._watchers = [(n, w) for n, w in self._watchers if w is not watcher]

    def _emit(self, kind: EventType, view: ServiceRecord) -> None:
        for name, watcher in self._watchers:
            if name is None or name == view.name:
                watcher.push(Event(kind, copy_record(view)))

    def _prune(self, name: str, version: str) -> None:
        versions = self._services.get(name)
        if versions is not None and not versions.get(version, True):
            del versions[version]
        if versions is not None and not versions:
            del self._services[name]

    def _count(self) -> int:
        return sum(len(e) for versions in self._services.values() for e in versions.values())

    @staticmethod
    def _record(entries: dict[str, _Entry]) -> ServiceRecord:
        return copy_record(merge((e.changed, e.view) for e in entries.values()))
