"""Pieces every registry implementation uses: a queue-fed watcher, the rules
that turn per-node registrations into records and into events."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping

import msgspec

from .base import Event, EventType, ServiceRecord, Watcher

#: Longest a watcher with a poll hook waits between polls, in real seconds: it
#: bounds how late a DELETE for an expiry is when nothing else happens.
POLL_SLICE_MAX = 0.25


class QueueWatcher(Watcher):
    """A watcher fed by :meth:`push` from any thread.

    ``poll``, when given, runs before every wait in :meth:`next` (outside the
    watcher's lock, so it may push); it returns how long (seconds) until it
    wants to run again, or ``None`` for not until something is pushed.
    ``on_stop`` runs once, from the thread that stops the watcher.
    The queue is unbounded: a watcher nobody reads grows until stopped.
    """

    def __init__(
        self,
        *,
        poll: Callable[[], float | None] | None = None,
        on_stop: Callable[[QueueWatcher], None] | None = None,
    ) -> None:
        self._poll = poll
        self._on_stop = on_stop
        self._cond = threading.Condition()
        self._events: deque[Event] = deque()
        self._stopped = False

    @property
    def stopped(self) -> bool:
        return self._stopped

    def push(self, event: Event) -> None:
        with self._cond:
            if not self._stopped:
                self._events.append(event)
                self._cond.notify()

    def next(self, timeout: float | None = None) -> Event | None:
        deadline = None if timeout is None else time.monotonic() + max(timeout, 0.0)
        while True:
            again = self._poll() if self._poll is not None and not self._stopped else None
            with self._cond:
                if self._stopped:
                    return None
                if self._events:
                    return self._events.popleft()
                wait = None if deadline is None else deadline - time.monotonic()
                if wait is not None and wait <= 0:
                    return None
                if again is not None:
                    slice_ = min(max(again, 0.001), POLL_SLICE_MAX)
                    wait = slice_ if wait is None else min(wait, slice_)
                self._cond.wait(wait)

    def stop(self) -> None:
        with self._cond:
            if self._stopped:
                return
            self._stopped = True
            self._events.clear()
            self._cond.notify_all()
        if self._on_stop is not None:
            self._on_stop(self)


def merge(views: Iterable[tuple[int, ServiceRecord]]) -> ServiceRecord:
    """One record from the one-node registrations of a version.

    ``views`` pairs each registration with the moment its content last
    changed; the latest change supplies metadata and endpoints (node id
    breaks ties so the answer does not depend on directory order).
    """
    views = list(views)
    _, latest = max(views, key=lambda v: (v[0], v[1].nodes[0].id))
    nodes = sorted((v.nodes[0] for _, v in views), key=lambda n: n.id)
    return ServiceRecord(
        name=latest.name,
        version=latest.version,
        metadata=latest.metadata,
        endpoints=latest.endpoints,
        nodes=tuple(nodes),
    )


def diff(old: Mapping[tuple[str, str, str], ServiceRecord],
         new: Mapping[tuple[str, str, str], ServiceRecord]) -> list[Event]:
    """Events that turn the live one-node views ``old`` into ``new`` (sorted by key)."""
    events = []
    for key in sorted(old.keys() | new.keys()):
        before, after = old.get(key), new.get(key)
        if after is None:
            events.append(Event(EventType.DELETE, old[key]))
        elif before is None:
            events.append(Event(EventType.CREATE, after))
        elif before != after:
            events.append(Event(EventType.UPDATE, after))
    return events


_copy_codec = (msgspec.json.Encoder(), msgspec.json.Decoder(ServiceRecord))


def copy_record(record: ServiceRecord) -> ServiceRecord:
    """A deep copy: frozen Structs still hold mutable dicts."""
    encoder, decoder = _copy_codec
    return decoder.decode(encoder.encode(record))
