"""MemoryBroker: the broker contract (:mod:`zmicro.broker.base`) in one process.

For tests, and the reference semantics the other backends are held to:

- Each subscription belongs to a *group*: the queue group it names
  (shared by every subscription naming it), or a group of its own
  (``queue=None``, broadcast). A published event is queued once per group
  that has a member right now (not durable: a group with no member gets
  nothing, :attr:`Capabilities.durable` is False); within a group, members
  with a free in-flight slot take turns.
- **Bounded.** A subscription has at most ``max_in_flight`` deliveries
  handed out and not ended, expired ones included: a handler stuck past
  ``ack_wait`` keeps its slot until it ends the delivery, so stuck handlers
  cannot pile up more than ``max_in_flight`` runs (nor work queued for
  them). A group holds at most ``max_pending`` events
  not yet acked or dead-lettered (queued, waiting for a redelivery, or in
  flight): ``publish`` waits, up to its ``timeout``, until every group it
  goes to has room, then raises ``RPCError(RESOURCE_EXHAUSTED,
  processed=False)`` with nothing accepted. Memory is thus bounded by
  ``max_pending`` frames per group.
- **At-least-once.** ``nack`` redelivers after the delay it names or the
  subscription's backoff; a delivery not ended within ``ack_wait`` is
  redelivered at once, to a member with a free slot (its late end then only
  frees its own slot: the redelivery decides the event's fate); closing a
  subscription puts its unended deliveries back at the front of its group.
  After ``max_deliveries`` deliveries that did not end in an ack, or on
  ``term(reason)``, the event goes to :meth:`dead_letters` (the last
  1,000) and never comes back to that group.
- **Time.** Backoffs and ``ack_wait`` follow ``clock`` (default
  ``time.monotonic``). A test with a fake clock moves it, then calls
  :meth:`MemoryBroker.tick`, which returns once everything due was handed
  out. ``publish``'s ``timeout`` is real time (the calling thread waits).
- **Threads.** Deliveries are handed to ``on_delivery`` from one thread of
  the broker's own, in order; never while a lock is held, so
  ``on_delivery`` may end the delivery at once. Everything else is
  thread-safe. ``close()`` is idempotent and wakes waiting publishers
  (:class:`~zmicro.broker.base.BrokerError`).

Deliveries carry ``deliveries`` (1 for the first) and ``user_id=None``: an
in-process hop proves nothing about the publisher.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from ..errors import Code, RPCError
from .base import (
    Broker,
    BrokerError,
    Capabilities,
    DeadLetter,
    Delivery,
    SubscribeOptions,
    Subscription,
    check_topic,
)

__all__ = ["DEAD_LETTERS_KEPT", "DEFAULT_MAX_PENDING", "MemoryBroker"]

log = logging.getLogger("zmicro.broker.memory")

#: Events a group holds (not yet acked or dead-lettered) before publishers wait.
DEFAULT_MAX_PENDING = 10_000
#: Dead letters kept, the newest.
DEAD_LETTERS_KEPT = 1_000

# Delivery states.
_OPEN, _ENDED, _EXPIRED = "open", "ended", "expired"


class _Event:
    """One event as one group holds it."""

    __slots__ = ("data", "deliveries", "seq")

    def __init__(self, data: bytes, seq: int) -> None:
        self.data = data
        self.deliveries = 0   # to this group, so far
        self.seq = seq        # publish order, for ties in the schedule


class _Group:
    """A queue group (or the one-member group of a broadcast subscription)."""

    def __init__(self, topic: str, queue: str | None) -> None:
        self.topic = topic
        self.queue = queue
        self.members: list[_MemorySubscription] = []
        self.ready: collections.deque[_Event] = collections.deque()
        self.pending = 0      # events held: ready + waiting + in flight
        self.turn = 0         # round robin among members


class _MemoryDelivery(Delivery):
    __slots__ = ("_broker", "_sub", "_event", "_due", "state")

    def __init__(self, broker: MemoryBroker, sub: _MemorySubscription, event: _Event,
                 due: float) -> None:
        self.data = event.data
        self.deliveries = event.deliveries
        self.user_id = None
        self._broker = broker
        self._sub = sub
        self._event = event
        self._due = due          # clock reading at which ack_wait runs out
        self.state = _OPEN

    def ack(self) -> None:
        self._broker._end(self, "ack", None)

    def nack(self, *, delay: float | None = None) -> None:
        if delay is not None and not (delay >= 0):  # (NaN too)
            raise ValueError(f"delay must be seconds >= 0, not {delay!r}")
        self._broker._end(self, "nack", delay)

    def term(self, reason: str) -> None:
        self._broker._end(self, "term", str(reason))

    def __repr__(self) -> str:
        return (f"<MemoryDelivery {self._sub.topic!r} delivery {self.deliveries} "
                f"{self.state}>")


class _MemorySubscription(Subscription):
    def __init__(self, broker: MemoryBroker, topic: str, group: _Group,
                 on_delivery: Callable[[Delivery], Any], options: SubscribeOptions) -> None:
        self.topic = topic
        self.options = options
        self._broker = broker
        self._group = group
        self._on_delivery = on_delivery
        # Handed out, not ended, in the order handed out, which is the order
        # their ack_wait runs out (one ack_wait per subscription).
        self.open: dict[_MemoryDelivery, None] = {}  # in order of ack_wait deadline
        # Expired, redelivered, but not ended yet: each still holds a slot.
        self.late: dict[_MemoryDelivery, None] = {}
        self.closed = False
        self.counters = dict.fromkeys(
            ("delivered", "acked", "nacked", "terminated", "expired", "late"), 0)

    def close(self) -> None:
        self._broker._close_subscription(self)

    def stats(self) -> dict[str, int]:
        with self._broker._lock:
            return self.counters | {"in_flight": len(self.open) + len(self.late)}

    def __repr__(self) -> str:
        return f"<MemorySubscription {self.topic!r} queue={self.options.queue!r}>"


class MemoryBroker(Broker):
    """In-process broker (see the module docstring). ``clock``: seconds,
    for backoffs and ``ack_wait``; ``max_pending``: events a group holds
    before publishers wait."""

    capabilities = Capabilities(durable=False, survives_publisher=False)

    def __init__(self, *, clock: Callable[[], float] | None = None,
                 max_pending: int = DEFAULT_MAX_PENDING) -> None:
        if type(max_pending) is not int or max_pending < 1:
            raise ValueError(f"max_pending must be an int >= 1, not {max_pending!r}")
        self._clock = clock or time.monotonic
        self._max_pending = max_pending
        self._lock = threading.Lock()
        self._work = threading.Condition(self._lock)   # the dispatcher: something changed
        self._room = threading.Condition(self._lock)   # publishers: a group has room
        self._idle = threading.Condition(self._lock)   # tick(): the dispatcher caught up
        self._idle_rounds = 0   # times the dispatcher found nothing to hand out
        self._groups: dict[str, dict[str | int, _Group]] = {}   # topic -> key -> group
        # Redeliveries: (due, seq, tiebreak, group, event).
        self._later: list[tuple[float, int, int, _Group, _Event]] = []
        self._tiebreak = itertools.count()
        self._seq = itertools.count()
        self._dead: collections.deque[DeadLetter] = collections.deque(maxlen=DEAD_LETTERS_KEPT)
        self._closed = False
        self._thread: threading.Thread | None = None

    # -- Broker --------------------------------------------------------------

    def publish(self, topic: str, data: bytes, *, event_id: bytes,
                timeout: float = 5.0) -> None:
        check_topic(topic)
        data = bytes(data)
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                self._check_open()
                groups = [g for g in self._groups.get(topic, {}).values() if g.members]
                if all(g.pending < self._max_pending for g in groups):
                    break
                left = deadline - time.monotonic()
                if left <= 0:
                    raise RPCError(Code.RESOURCE_EXHAUSTED,
                                   f"topic {topic!r}: a group holds {self._max_pending} "
                                   f"events already (timeout {timeout:g} s)",
                                   processed=False)
                self._room.wait(left)
            seq = next(self._seq)
            for group in groups:
                group.ready.append(_Event(data, seq))
                group.pending += 1
            if groups:
                self._work.notify()

    async def publish_async(self, topic: str, data: bytes, *, event_id: bytes,
                            timeout: float = 5.0) -> None:
        try:
            # Room now (the usual case): no thread hop.
            self.publish(topic, data, event_id=event_id, timeout=0)
            return
        except RPCError as exc:
            if exc.code != Code.RESOURCE_EXHAUSTED or timeout <= 0:
                raise
        # Full: wait on a thread, so the loop goes on meanwhile.
        await asyncio.get_running_loop().run_in_executor(
            None, functools.partial(self.publish, topic, data, event_id=event_id,
                                    timeout=timeout))

    def subscribe(self, topic: str, on_delivery: Callable[[Delivery], Any],
                  options: SubscribeOptions = SubscribeOptions()) -> Subscription:
        check_topic(topic)
        if not isinstance(options, SubscribeOptions):
            raise TypeError(f"options must be SubscribeOptions, not {type(options).__name__}")
        with self._lock:
            self._check_open()
            groups = self._groups.setdefault(topic, {})
            key: str | int = options.queue if options.queue is not None else next(self._seq)
            group = groups.get(key)
            if group is None:
                group = groups[key] = _Group(topic, options.queue)
            sub = _MemorySubscription(self, topic, group, on_delivery, options)
            group.members.append(sub)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, daemon=True,
                                                name="zmicro-memory-broker")
                self._thread.start()
            self._work.notify()
        return sub

    def dead_letters(self) -> list[DeadLetter]:
        with self._lock:
            return list(self._dead)

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            subs = [s for groups in self._groups.values() for g in groups.values()
                    for s in g.members]
            thread = self._thread
        for sub in subs:
            sub.close()
        with self._lock:
            self._groups.clear()
            self._later.clear()
            for condition in (self._work, self._room, self._idle):
                condition.notify_all()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=10)

    # -- for tests -------------------------------------------------------------

    def tick(self) -> None:
        """Look at the clock again (a test moved a fake clock); returns once
        every delivery due by now has been passed to its ``on_delivery``
        (so a test can also check that nothing was due)."""
        if self._thread is threading.current_thread():
            return  # (from on_delivery: the dispatcher looks again after it anyway)
        with self._lock:
            if self._thread is None or self._closed:
                return
            seen = self._idle_rounds
            self._work.notify()
            while self._idle_rounds == seen and not self._closed:
                self._idle.wait()

    # -- internals ---------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise BrokerError("the broker is closed")

    def _run(self) -> None:
        while True:
            with self._lock:
                while True:
                    if self._closed:
                        return
                    handed, wait = self._due()
                    if handed:
                        break
                    self._idle_rounds += 1
                    self._idle.notify_all()
                    self._work.wait(wait)
            for sub, delivery in handed:
                try:
                    sub._on_delivery(delivery)
                except Exception:
                    # A callback must not raise (base.py); if one does, the
                    # delivery stays unended and ack_wait brings it back.
                    log.exception("zmicro: on_delivery of %r raised", sub)

    def _due(self) -> tuple[list[tuple[_MemorySubscription, _MemoryDelivery]], float | None]:
        """Under the lock: move what is due, hand out what members have room
        for; the deliveries to make, and how long to wait if none."""
        now = self._clock()
        wait = None
        for groups in self._groups.values():
            for group in groups.values():
                for sub in group.members:
                    while sub.open:
                        first = next(iter(sub.open))
                        if first._due > now:
                            left = first._due - now
                            wait = left if wait is None else min(wait, left)
                            break
                        self._expire(first)
        while self._later and self._later[0][0] <= now:
            _, _, _, group, event = heapq.heappop(self._later)
            if group.members or group.queue is not None:
                group.ready.append(event)
        handed = []
        for groups in self._groups.values():
            for group in groups.values():
                handed += self._hand_out(group, now)
        if self._later:
            left = max(self._later[0][0] - now, 0.0)
            wait = left if wait is None else min(wait, left)
        return handed, wait

    def _hand_out(self, group: _Group, now: float) -> list[tuple[_MemorySubscription, _MemoryDelivery]]:
        handed = []
        members = group.members
        while group.ready and members:
            for i in range(len(members)):
                sub = members[(group.turn + i) % len(members)]
                if len(sub.open) + len(sub.late) < sub.options.max_in_flight:
                    group.turn = (group.turn + i + 1) % len(members)
                    break
            else:
                break  # every member is full
            event = group.ready.popleft()
            event.deliveries += 1
            delivery = _MemoryDelivery(self, sub, event, now + sub.options.ack_wait)
            sub.open[delivery] = None
            sub.counters["delivered"] += 1
            handed.append((sub, delivery))
        return handed

    def _end(self, delivery: _MemoryDelivery, action: str, arg: Any) -> None:
        with self._lock:
            if delivery.state is _EXPIRED:
                # ack_wait ran out (or the subscription closed): redelivered
                # already; ending it only gives its slot back.
                sub = delivery._sub
                sub.counters["late"] += 1
                if delivery in sub.late:
                    del sub.late[delivery]
                    self._work.notify()  # a slot is free: hand out what waits
                return
            if delivery.state is _ENDED:
                raise RuntimeError(f"{delivery!r} was ended already")
            delivery.state = _ENDED
            sub, event = delivery._sub, delivery._event
            del sub.open[delivery]
            group = sub._group
            if action == "ack":
                sub.counters["acked"] += 1
                group.pending -= 1
            elif action == "term":
                sub.counters["terminated"] += 1
                self._dead_letter(group, event, arg)
            else:
                sub.counters["nacked"] += 1
                self._retry(group, event, sub.options, arg)
            self._work.notify()
            self._room.notify_all()

    def _expire(self, delivery: _MemoryDelivery) -> None:
        """Under the lock: `delivery` was not ended in time."""
        delivery.state = _EXPIRED
        sub = delivery._sub
        del sub.open[delivery]
        sub.late[delivery] = None  # its slot stays taken until it is ended
        sub.counters["expired"] += 1
        self._retry(sub._group, delivery._event, sub.options, 0.0)

    def _retry(self, group: _Group, event: _Event, options: SubscribeOptions,
               delay: float | None) -> None:
        """Under the lock: deliver `event` again later, unless it had its share."""
        if event.deliveries >= options.max_deliveries:
            self._dead_letter(group, event, f"max_deliveries ({options.max_deliveries})")
            return
        if delay is None:
            delay = options.delay(event.deliveries)
        heapq.heappush(self._later, (self._clock() + delay, event.seq, next(self._tiebreak),
                                     group, event))

    def _dead_letter(self, group: _Group, event: _Event, reason: str) -> None:
        group.pending -= 1
        self._room.notify_all()
        self._dead.append(DeadLetter(topic=group.topic, queue=group.queue, data=event.data,
                                     reason=reason, deliveries=event.deliveries))

    def _close_subscription(self, sub: _MemorySubscription) -> None:
        with self._lock:
            if sub.closed:
                return
            sub.closed = True
            group = sub._group
            group.members.remove(sub)
            # Unended deliveries go back first in line (to another member, or
            # to the next one to join the queue group).
            for delivery in sorted(sub.open, key=lambda d: d._event.seq, reverse=True):
                delivery.state = _EXPIRED
                group.ready.appendleft(delivery._event)
            sub.open.clear()
            sub.late.clear()  # their events were redelivered when they expired
            if not group.members and group.queue is None:
                # A broadcast subscription's group dies with it.
                groups = self._groups.get(sub.topic, {})
                for key, g in list(groups.items()):
                    if g is group:
                        del groups[key]
                group.ready.clear()
                group.pending = 0
                if not groups:
                    self._groups.pop(sub.topic, None)
            self._work.notify()
            self._room.notify_all()
