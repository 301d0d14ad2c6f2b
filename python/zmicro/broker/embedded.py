"""The embedded broker: brokerless events over zmicro's own transport.

No server: subscribers register in the registry under their topic, and the
publisher delivers each event to them itself, over the same secure
DEALER/ROUTER path as calls (Curve, allowlist, MAC), as go-micro's http
broker does over HTTP.

Registry shape (docs/plans/events.md §2.4). A subscription of a Service is
one ``ServiceRecord(name="zmicro.topic.<topic>", version=<queue or "">)``
with the subscribing node (its address and Curve key). Records are grouped
by ``version``: a non-empty version is a **queue group** (each event goes
to one member, chosen by the same balancer as calls: ``selector=``); the
empty version is the **broadcast** group (each node gets every event).

The publisher's delivery engine (:class:`DeliveryEngine`), per event:

- ``publish()`` puts the frame in the **outbox** and returns: that is
  "accepted". The outbox is bounded (``max_pending`` events,
  ``max_pending_bytes`` bytes): when it is full, ``publish()`` blocks up to
  its ``timeout``, then raises ``RPCError(RESOURCE_EXHAUSTED,
  processed=False)`` (nothing accepted).
- The event's groups are the groups the registry lists for its topic when
  the engine routes it (at once, normally). **No subscriber at all** (no
  record for the topic): the event waits in the outbox, holding its place,
  for a group to appear, up to the publish call's ``timeout``; then it is
  dropped (counter ``unrouted``, logged at debug, no dead letter: no group
  ever existed for it). So a subscriber that registered a moment before the
  publish, not yet seen by the publisher's registry watch, still gets it;
  a topic nobody subscribes to does not fill the outbox for long. Once
  routed, the event's groups are fixed: a group that appears later does
  not get it (not durable: ``capabilities.durable`` is False).
- Per queue group: a member is picked (avoiding the members this round
  already tried); the subscriber's reply is the ack: done.
  ``NOT_PROCESSED`` refusals (draining, not subscribed any more,
  connection refused; "full" is the credit rule below) try the next member at once; when every member
  was tried, wait the backoff and start a new round. A processed error
  (the handler nacked or failed) or no answer within the ack wait (the
  member may have died holding it) counts as a delivery: wait the backoff
  (the subscriber's ``retry-after-ms`` when it gave one: ``nack(delay=)``),
  then any member. A terminal answer (INVALID_ARGUMENT, PERMISSION_DENIED,
  UNAUTHENTICATED, FAILED_PRECONDITION, UNIMPLEMENTED) from the handler
  side (processed: the subscriber's ``term(reason)``) dead-letters at once,
  with the subscriber's reason; refused before any handler
  (``NOT_PROCESSED``: an old node that answers kind 8 with UNIMPLEMENTED, a
  member that refuses this publisher's key, a subscriber refusing the
  event's MAC: ``term("bad_mac")``) excludes that member for this event,
  and dead-letters when every member did. A dead letter's reason is the
  answer's detail (the subscriber's ``term`` reason). ``max_deliveries``
  deliveries (not-processed refusals are not deliveries) dead-letter too.
- Credit: a subscription's record says its ``max_in_flight``
  (:func:`topic_node_metadata`), and this publisher never has more of its
  deliveries unanswered at that member; the rest wait in the outbox (bounded
  by ``max_pending``) and go as answers come back, with no refusal and no
  backoff round. A member that still answers "full" (RESOURCE_EXHAUSTED,
  not processed: other publishers hold its slots) is left alone for
  ``FULL_PAUSE`` (20 ms) or until one of this publisher's deliveries to it
  ends, then retried: neither a delivery nor a backoff round.
- The redelivery policy is the subscriber's: its topic record's node
  metadata (:func:`topic_node_metadata`: its SubscribeOptions'
  ``max_deliveries``, ``backoff`` and ``ack_wait``) rules the deliveries to
  that node; the broker's own options apply where a record does not say.
- A frame no subscriber would take (not a well-formed event frame, or one
  whose header names another topic: what a broker in the middle could
  hand over) is dead-lettered for every group when it is routed, with the
  reason a subscriber gives ("malformed", "kind", "wrong_topic"), never
  sent: a subscriber drops a malformed frame unanswered and finds the
  subscription by the header's topic, so asking it would only cost retries.
- Broadcast: one delivery per node of the broadcast group, retried on that
  node only; a node that leaves the registry ends its delivery (``gone``).
- **Who may subscribe** (``policy=``: a :class:`zmicro.auth.Policy` or its
  rules): before an event is sent to a member, the rules decide
  ``subscribe`` on ``zmicro.topic.<topic>`` for the member's principal
  (its registry key through the publisher's allowlist,
  ``Security.principal_for``, as a server names its callers: a key not in
  the allowlist, or none in insecure mode, is anonymous). A denied member
  never gets the event: it is skipped as a not-processed refusal is, and
  never tried again for that event (counter ``denied``, each skip); the
  decision is audited once per node (again when it changes: roles or the
  allowlist changed). A group (or a broadcast node) whose members are all
  denied dead-letters the event, reason ``"no permitted subscriber"``.
  Decided per event, not per registry update, so a key untrusted or a role
  taken away counts from the next event on.
- Every delivery ends by ``max_age`` after the publish (default 120 s, the
  subscribers' default ``max_age``: they would refuse it as stale after
  that): a group without members for that long, or a member answering
  "not processed" all along, dead-letters it as ``expired``.
- Dead letters: the last 1,000 are kept (:meth:`dead_letters`), each is
  logged (warning) and counted, and ``on_dead_letter(DeadLetter)`` is called
  when given.

**What a publisher that dies loses** (the issue asks for exactness): for
each event ``publish()`` accepted and each group that had not acked it:
never sent to any member: lost for that group; sent with no ack received:
the handler ran zero or one time on each member it was sent to (it may
have run and acked on the wire), never redelivered; acked: handled.
Nothing is persisted and no other process takes over. ``close(linger=)``
waits up to ``linger`` seconds for the outbox to empty and reports what it
drops (log, counter ``dropped``, the DeliveryReports in ``broker.dropped``);
SIGKILL skips that. ``publish_wait()`` returns the event's DeliveryReport
once every group acked it or gave it up: a caller that needs to know
waits for it.

Threads: the engine lives on one event loop, on a private thread of the
broker (started on first use). ``publish()`` hands the event over without
waiting for that thread when the outbox has room: it appends the event to
a hand-over queue under a lock (its events count against ``max_pending``
and ``max_pending_bytes`` as the outbox's do, so each is sure to fit) and
wakes the engine once per batch; the engine moves the whole batch into
the outbox in one step. Only when the outbox is full does ``publish()``
take the waiting path (the engine's ``put``: wait for room up to
``timeout``). ``publish_async()`` does the same without blocking the
caller's loop; ``publish_wait()`` always waits. One outbox per broker,
not per loop, on purpose (the alternative, an engine on each caller's
loop, saves the hand-over): an accepted event must outlive the caller's
loop (``asyncio.run(main())`` returning would cancel deliveries running on
it: at-least-once is "while the publisher lives", the broker, not one
loop), and ``max_pending`` bounds the broker as a whole. An event handed
over just as ``close()`` begins is dropped (counted, logged) as close()
drops what the outbox still holds.

The engine in two halves: the fast path, in the core (``_core.DeliveryCore``,
core/outbox.pyx, this engine's base class), settles what one pick can
settle: an event whose topic's members are known is routed at once, each
group's member with credit gets it, and the ack ends it in the answer's
callback, with no task or coroutine per event; deliveries that find no
member with credit wait in a lane per (topic, group), in publish order,
and go as slots are released. Everything else (no member yet, a refusal,
a failure, expiry, backoff, dead letters, the credit waits of retries) is
this class's slow path (``_deliver``, a task per delivery), which takes
over from the fast path's first answer. The rules above are the same on
both.

Subscribing: ``subscribe()`` adds the subscription to a ServerCore (one
socket, one port for calls and events): the attached Service's
(``attach(service)``, done by the Service, which keeps the topic records:
``registers_topics = True``), else a subscriber service of the broker's own,
named ``zmicro-events-<id>``, started on a free port (tests, the CLI), whose
topic records the broker keeps alive itself. The wire names no group, so a
node has one subscription per topic: a second subscription to a topic
starts another own service (an attached Service refuses it: ValueError).
Closing a subscription hands the deliveries it holds back at once (a nack
without delay: another member gets them). The subscriber side keeps no
dead letters: the publisher decides, and keeps them.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import functools
import itertools
import logging
import math
import os
import threading
import time
import uuid
import weakref
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from .. import _core
from ..errors import Code, RPCError, WireError
from ..registry import ServiceRecord
from ..wire import Kind
from ._loop import LoopThread
from .base import (
    TOPIC_PREFIX,
    Broker,
    BrokerError,
    Capabilities,
    DeadLetter,
    Delivery,
    SubscribeOptions,
    Subscription,
    check_topic,
)
from .base import _VALID as _VALID_TOPICS  # (the topics check_topic passed: the hand-over's test)

__all__ = ["DEAD_LETTERS_KEPT", "DeliveryEngine", "DeliveryReport", "EmbeddedBroker"]

log = logging.getLogger("zmicro.events")

#: Dead letters a broker keeps in memory (the oldest go first).
DEAD_LETTERS_KEPT = 1000

#: The dead letter's reason when every member of a group may not subscribe.
NO_PERMITTED = "no permitted subscriber"

#: Nodes whose subscribe decision a broker remembers (to audit each once);
#: cleared when full (the next event per node decides and audits again).
_DECISIONS_KEPT = 4096

#: Answers no other member or later attempt can change, when the handler
#: side gave them (processed): the event is dead-lettered at once.
TERMINAL = frozenset({Code.INVALID_ARGUMENT, Code.PERMISSION_DENIED, Code.UNAUTHENTICATED,
                      Code.FAILED_PRECONDITION, Code.UNIMPLEMENTED})

_STRATEGIES = {"round_robin": _core.SELECT_ROUND_ROBIN, "random": _core.SELECT_RANDOM,
               "p2c": _core.SELECT_P2C, "peak_ewma": _core.SELECT_PEAK_EWMA}

#: send(address, frame, event_id, topic, timeout): resolves on the ack,
#: raises RPCError otherwise (AsyncClient._deliver's contract).
Send = Callable[[str, bytes, bytes, str, float], Awaitable[None]]
#: lookup(topic) -> the records of "zmicro.topic.<topic>" (all versions).
Lookup = Callable[[str], Awaitable[list[ServiceRecord]]]
#: permit(topic, address, node key) -> whether that node may get the
#: topic's events (its principal's ``subscribe`` right).
Permit = Callable[[str, str, str], bool]


@dataclass
class DeliveryReport:
    """What became of one event: per group, ``"acked"`` or the reason it
    was not (a dead letter's reason, ``gone``, ``dropped``). Broadcast
    deliveries are keyed ``"(broadcast) <address>"``. Empty: no group."""

    topic: str
    event_id: bytes
    groups: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """Every group acked (and there was at least one)."""
        return bool(self.groups) and all(v == "acked" for v in self.groups.values())


#: Node metadata keys of a topic record through which a subscription tells
#: publishers its redelivery policy (SubscribeOptions): the embedded
#: publisher decides redeliveries, the subscriber chose how many and when.
POLICY_KEYS = ("zmicro.max_deliveries", "zmicro.backoff", "zmicro.ack_wait",
               "zmicro.max_in_flight")

#: Seconds a member that answered "full" (RESOURCE_EXHAUSTED, not processed:
#: other publishers hold its slots) is left alone, unless one of this
#: publisher's own deliveries to it ends first: a short wait for a slot,
#: not a backoff round.
FULL_PAUSE = 0.02
#: Waiters of one group's credit queue looked at per released slot.
WAKE_SCAN = 8



def topic_node_metadata(options: SubscribeOptions) -> dict[str, str]:
    """The node metadata a topic record carries for a subscription with
    `options` (beside ``service`` and ``health``): its max_deliveries,
    backoff and ack_wait, which the embedded publisher follows, and its
    max_in_flight: the publisher's credit for that member (it never has more
    deliveries unanswered there; the rest wait in its outbox)."""
    return {"zmicro.max_deliveries": str(options.max_deliveries),
            "zmicro.backoff": ",".join(repr(float(b)) for b in options.backoff),
            "zmicro.ack_wait": repr(float(options.ack_wait)),
            "zmicro.max_in_flight": str(options.max_in_flight)}


@dataclass(frozen=True)
class _Policy:
    """A subscription's redelivery policy, read from its node's metadata."""

    max_deliveries: int
    backoff: tuple[float, ...]
    ack_wait: float
    max_in_flight: int | None = None  # None: the record does not say (no credit limit)

    @staticmethod
    def of(metadata: dict[str, str]) -> _Policy | None:
        if not any(k in metadata for k in POLICY_KEYS):
            return None
        try:
            options = SubscribeOptions(
                max_deliveries=int(metadata.get("zmicro.max_deliveries", "5")),
                backoff=tuple(float(b) for b in
                              metadata.get("zmicro.backoff", "0.1,1,5").split(",")),
                ack_wait=float(metadata.get("zmicro.ack_wait", "30")),
                max_in_flight=int(metadata.get("zmicro.max_in_flight", "1")))
        except ValueError:  # a record written by someone else: the publisher's own
            return None
        return _Policy(options.max_deliveries, options.backoff, options.ack_wait,
                       options.max_in_flight if "zmicro.max_in_flight" in metadata else None)

    def delay(self, rounds: int) -> float:
        return self.backoff[min(max(rounds, 1), len(self.backoff)) - 1]


class _Topic:
    """The members of one topic, per group, as the registry lists them."""

    __slots__ = ("name", "balancers", "broadcast", "keys", "policies", "loaded", "loading",
                 "changed", "shape", "_groups", "_broadcast")

    def __init__(self, name: str) -> None:
        self.name = name
        self.balancers: dict[str, _core.Balancer] = {}   # queue group -> its members
        self.broadcast: dict[str, str] = {}               # address -> node id
        self.keys: dict[str, str] = {}                    # address -> Curve public key
        self.policies: dict[str, _Policy] = {}            # address -> its subscription's word
        self.loaded = False
        self.loading: asyncio.Future[list[ServiceRecord]] | None = None  # the first lookup
        self.changed = asyncio.Event()                    # set (and replaced) on a change
        self.shape: object = None                         # what a change is judged on
        self._groups: list[str] = []                      # groups(), as of the last update
        self._broadcast: list[str] = []                   # the broadcast addresses, listed

    def update(self, records: Iterable[ServiceRecord], strategy: int,
               outlier: Any) -> bool:
        """Take the registry's records; True when who may get events (the
        members per group, the broadcast members, their keys or policies)
        changed. A heartbeat rewrites a record every few seconds without
        changing any of that: no one waiting is woken for it (it woke
        every delivery waiting for credit, thousands under load)."""
        by_group: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {}
        broadcast: dict[str, str] = {}
        keys: dict[str, str] = {}
        policies: dict[str, _Policy] = {}
        for r in records:
            for n in r.nodes:
                if n.public_key:
                    keys[n.address] = n.public_key
                policy = _Policy.of(n.metadata)
                if policy is not None:
                    policies[n.address] = policy
                if not r.version:
                    broadcast[n.address] = n.id
                    continue
                nodes, resting = by_group.setdefault(r.version, ({}, {}))
                # As for calls: a node saying it does not serve gets events
                # only when no other member is left.
                into = resting if n.metadata.get("health") == "not_serving" else nodes
                into[n.address] = (n.address, r.version, dict(n.metadata), n.public_key)
        for group in list(self.balancers):
            if group not in by_group:
                self.balancers[group].update(())  # keep the object: picks may hold it
        for group, (nodes, resting) in by_group.items():
            balancer = self.balancers.get(group)
            if balancer is None:
                balancer = self.balancers[group] = _core.Balancer(strategy, outlier=outlier)
            chosen = nodes or resting
            balancer.update(chosen[a] for a in sorted(chosen))
        self.broadcast = broadcast
        self.keys = keys
        self.policies = policies
        self.loaded = True
        # Routing reads these per event: listed once per update.
        self._groups = [g for g, b in self.balancers.items() if len(b)]
        self._broadcast = list(broadcast)
        shape = (sorted((g, sorted(nodes or resting)) for g, (nodes, resting) in by_group.items()),
                 sorted(broadcast), sorted(keys.items()), sorted(policies.items()))
        if shape == self.shape:
            return False
        self.shape = shape
        changed, self.changed = self.changed, asyncio.Event()
        changed.set()
        return True

    def groups(self) -> list[str]:
        """Queue groups that have members now (do not change the list)."""
        return self._groups

    def broadcast_members(self) -> list[str]:
        """The broadcast group's addresses (do not change the list)."""
        return self._broadcast


#: An event in the outbox (the core's: DeliveryCore's fast path reads it).
_Event = _core.PendingEvent


class _Counters:
    """Shared by a broker's engines (the loop threads update it under a lock)."""

    NAMES = ("published", "acked", "deliveries", "refusals", "denied", "dead_letters",
             "unrouted", "gone", "dropped", "full")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.values = dict.fromkeys(self.NAMES, 0)

    def add(self, name: str, n: int = 1) -> None:
        with self._lock:
            self.values[name] += n

    def bump(self, name: str) -> None:
        """add(name, 1) without the lock: only for a counter that one thread
        (the engine's) alone changes; snapshot() still copies under the lock."""
        self.values[name] += 1

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self.values)


class DeliveryEngine(_core.DeliveryCore):
    """The publisher's outbox and delivery state machine (see the module doc).

    Runs on one event loop: every method but :meth:`members_changed_threadsafe`
    is called on it. ``send`` and ``lookup`` are the transport and the
    registry (injected, so the engine is tested without sockets); ``check``
    (optional) looks at a frame once, when it is routed: a refusal reason
    dead-letters it for every group without sending it; ``clock``
    gives monotonic seconds (:meth:`poke` wakes the waits when a fake clock
    moves). Options are the broker's (:class:`EmbeddedBroker`).
    """

    def __init__(self, *, send: Send, lookup: Lookup,
                 clock: Callable[[], float] = time.monotonic,
                 selector: str = "round_robin", outlier: Any = None,
                 max_pending: int = 10_000, max_pending_bytes: int = 64 << 20,
                 ack_timeout: float = 10.0, max_deliveries: int = 5,
                 backoff: tuple[float, ...] = (0.1, 1.0, 5.0), max_age: float = 120.0,
                 dead_letters: collections.deque[DeadLetter] | None = None,
                 on_dead_letter: Callable[[DeadLetter], Any] | None = None,
                 counters: _Counters | None = None,
                 check: Callable[[str, bytes], str | None] | None = None,
                 permit: Permit | None = None) -> None:
        if selector not in _STRATEGIES:
            raise ValueError(f"selector is one of {sorted(_STRATEGIES)}, not {selector!r}")
        for name, count in (("max_pending", max_pending), ("max_pending_bytes", max_pending_bytes),
                            ("max_deliveries", max_deliveries)):
            if type(count) is not int or count < 1:
                raise ValueError(f"{name} must be an int >= 1, not {count!r}")
        for name, seconds in (("ack_timeout", ack_timeout), ("max_age", max_age)):
            if not (isinstance(seconds, (int, float)) and math.isfinite(seconds) and seconds > 0):
                raise ValueError(f"{name} must be seconds > 0, not {seconds!r}")
        # The same rule as SubscribeOptions.backoff (validated there).
        options = SubscribeOptions(backoff=tuple(backoff), max_deliveries=max_deliveries)
        # Used where the subscriber's record does not say (topic_node_metadata).
        self._default = _Policy(max_deliveries, options.backoff, float(ack_timeout))
        self._send = send
        self._lookup = lookup
        self._check = check
        self._permit = permit
        self._clock = clock
        self._strategy = _STRATEGIES[selector]
        self._outlier = outlier
        self.max_pending = max_pending
        self.max_pending_bytes = max_pending_bytes
        self.ack_timeout = float(ack_timeout)
        self.max_age = float(max_age)
        self._dead = dead_letters if dead_letters is not None else collections.deque(
            maxlen=DEAD_LETTERS_KEPT)
        self._on_dead_letter = on_dead_letter
        self.counters = counters or _Counters()
        self._topics: dict[str, _Topic] = {}
        self._events: set[_Event] = set()          # in the outbox
        self._pending_bytes = 0
        self._room = asyncio.Event()                # set (and replaced) when room is made
        self._room_waiters = 0                      # put()s waiting on _room
        self._tick = asyncio.Event()                # poke(): a fake clock moved
        # Credit per member: this publisher's deliveries unanswered there,
        # and members that said "full" (until when). Deliveries waiting for
        # credit queue per topic with the members they could use; a slot
        # released at a member wakes the first of them that can use it, and
        # only that one (waking them all made every ack cost O(waiting):
        # 30x slower with a full outbox).
        self._busy: dict[tuple[str, str], int] = {}        # (topic, address)
        self._full_until: dict[tuple[str, str], float] = {}
        # topic -> queue (a group, or "\0" + a broadcast address) -> waiters
        self._credit_waiters: dict[str, dict[str, collections.deque[
            tuple[asyncio.Future[None], frozenset[str]]]]] = {}
        # The fast path (see _offer): deliveries that found no credit at
        # their first try wait here, per topic and queue, in publish order,
        # as plain events (no task, no future): a released slot sends the
        # next one from its callback. A delivery whose first try fails, or
        # that needs more than one pick (no member yet, expired, denied),
        # goes on in a task of its own (_deliver, the slow path).
        self._lanes: dict[str, dict[str, collections.deque[_Event]]] = {}
        # Fast-path deliveries sent and not answered (the core's flights:
        # their .where is (event, group, fixed)); close() reports them dropped.
        self._flying: set[Any] = set()
        #: Called (on the engine's loop) with a topic's address -> Curve key
        #: whenever its members are read: EmbeddedBroker hands them to its
        #: client (checked against the registry's trust, as for calls).
        self.on_keys: Callable[[dict[str, str]], None] | None = None
        # Events whose topic's members are not known yet, per topic, in
        # publish order: its router task (_router) routes them.
        self._unrouted: dict[str, collections.deque[_Event]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closing = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._core_ready()

    def _report_of(self, event: _Event) -> DeliveryReport:
        """What became of `event` so far, per group."""
        return DeliveryReport(event.topic, event.event_id, dict(event.outcomes))

    # -- accepting -------------------------------------------------------------

    def _full(self, size: int) -> bool:
        return (len(self._events) >= self.max_pending
                or (bool(self._events) and self._pending_bytes + size > self.max_pending_bytes))

    async def put(self, topic: str, frame: bytes, event_id: bytes, *,
                  timeout: float, wait: bool = False) -> DeliveryReport | None:
        """Accept the event into the outbox (blocking up to `timeout` while
        it is full: then RESOURCE_EXHAUSTED, processed=False). With `wait`,
        return its DeliveryReport once every group ended it."""
        check_topic(topic)
        if self._closing:
            raise BrokerError("the broker is closed")
        if not (isinstance(timeout, (int, float)) and timeout > 0 and math.isfinite(timeout)):
            raise ValueError(f"timeout must be seconds > 0, not {timeout!r}")
        if len(frame) > self.max_pending_bytes:
            raise RPCError(Code.RESOURCE_EXHAUSTED,
                           f"the event is {len(frame)} bytes, over max_pending_bytes",
                           processed=False)
        self._loop = asyncio.get_running_loop()
        if self._full(len(frame)):
            # Real seconds, not the injected clock: this is the caller's wait.
            deadline = time.monotonic() + timeout
            while self._full(len(frame)):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise RPCError(Code.RESOURCE_EXHAUSTED,
                                   f"the outbox stayed full ({len(self._events)} events) "
                                   f"for {timeout:g} s", processed=False)
                self._room_waiters += 1
                try:
                    await asyncio.wait_for(self._room.wait(), left)
                except (asyncio.TimeoutError, TimeoutError):
                    pass
                finally:
                    self._room_waiters -= 1
                if self._closing:
                    raise BrokerError("the broker is closed")
        event = self._accept(topic, frame, event_id, timeout, wait)
        if event.done is not None:
            return await asyncio.shield(event.done)
        return None

    def accept_nowait(self, topic: str, frame: bytes, event_id: bytes, timeout: float, *,
                      count: bool = True, route: bool = True) -> _Event:
        """put() of an event the caller made room for (EmbeddedBroker's
        hand-over counts its events against the outbox before it passes
        them): into the outbox now, on the engine's loop, without a wait.
        Raises BrokerError once the engine is closing. `count`: add it to
        the ``published`` counter (False: the caller counts its batch);
        `route`: deliver it (False: the caller calls route(event) next)."""
        if self._closing:
            raise BrokerError("the broker is closed")
        self._loop = asyncio.get_running_loop()
        return self._accept(topic, frame, event_id, timeout, False, count, route)

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- members ---------------------------------------------------------------

    async def _topic(self, name: str) -> _Topic:
        topic = self._topics.get(name)
        if topic is None:
            topic = self._topics[name] = _Topic(name)
        if topic.loaded:
            return topic
        if topic.loading is None:  # one lookup, however many events wait for it
            topic.loading = asyncio.ensure_future(self._lookup(name))
        loading = topic.loading
        try:
            records = await asyncio.shield(loading)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - the registry: retried by the caller
            log.debug("events: registry lookup of %r failed: %s", name, exc)
            return topic
        finally:
            if topic.loading is loading and loading.done():
                topic.loading = None
        if not topic.loaded:  # (a change may have come meanwhile)
            topic.update(records, self._strategy, self._outlier)
            if self.on_keys is not None:
                self.on_keys(topic.keys)
        return topic

    def members_changed(self, name: str, records: list[ServiceRecord]) -> None:
        """The registry says `name`'s members changed (on the engine's loop)."""
        topic = self._topics.get(name)
        if topic is None:
            return
        changed = topic.update(records, self._strategy, self._outlier)
        if self.on_keys is not None:
            self.on_keys(topic.keys)
        if changed:
            self._wake_all_credit(name)  # a new member has credit

    def members_changed_threadsafe(self, name: str, records: list[ServiceRecord]) -> None:
        """members_changed() from another thread (the registry watch's)."""
        loop = self._loop
        if loop is not None and name in self._topics:
            try:
                loop.call_soon_threadsafe(self.members_changed, name, records)
            except RuntimeError:  # the loop is closed
                pass

    # -- waiting ---------------------------------------------------------------

    def poke(self) -> None:
        """Wake every wait to look at the clock again (a fake clock moved)."""
        tick, self._tick = self._tick, asyncio.Event()
        tick.set()
        for name in set(self._credit_waiters) | set(self._lanes):
            self._wake_all_credit(name)

    async def _sleep_until(self, when: float, also: asyncio.Event | None = None) -> None:
        """Until the clock reads `when` (or `also` is set)."""
        while not self._closing:
            left = when - self._clock()
            if left <= 0 or (also is not None and also.is_set()):
                return
            waits = [asyncio.ensure_future(self._tick.wait())]
            if also is not None:
                waits.append(asyncio.ensure_future(also.wait()))
            try:
                await asyncio.wait(waits, timeout=left, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for w in waits:
                    w.cancel()

    # -- delivering ------------------------------------------------------------

    def _route_later(self, event: _Event) -> None:
        """Route `event` once its topic's members are known: queued behind
        the topic's router task (one per topic, not one per event: a
        publisher faster than the first registry read queues thousands)."""
        waiting = self._unrouted.get(event.topic)
        if waiting is not None:
            waiting.append(event)
            return
        self._unrouted[event.topic] = collections.deque((event,))
        self._spawn(self._router(event.topic))

    async def _router(self, name: str) -> None:
        """Find topic `name`'s groups (waiting for one to appear, up to each
        event's publish timeout), then route what waits for them."""
        waiting = self._unrouted[name]
        try:
            while waiting:
                topic = await self._topic(name)
                groups = topic.groups()
                broadcast = topic.broadcast_members()
                if groups or broadcast:
                    while waiting:
                        event = waiting.popleft()
                        if event in self._events:  # (close() may have dropped it)
                            self._routed(event, groups, broadcast)
                    continue  # (any queued meanwhile)
                now = self._clock()
                for event in [e for e in waiting if now >= e.route_until or self._closing]:
                    waiting.remove(event)
                    self.counters.add("unrouted")
                    log.debug("events: no subscriber for %r: event %s dropped", name,
                              event.event_id.hex())
                    self._finish(event)
                if not waiting:
                    break
                # Members, a (fake) clock move, or a bounded retry of the lookup.
                step = min(min(e.route_until for e in waiting), now + 0.5)
                await self._sleep_until(step, topic.changed)
        except asyncio.CancelledError:
            for event in waiting:
                self._finish(event)
            raise
        finally:
            waiting.clear()
            if self._unrouted.get(name) is waiting:
                del self._unrouted[name]

    def _slow(self, event: _Event, group: str, fixed: str | None,
              first: tuple[str, RPCError, _Policy] | None) -> None:
        self._spawn(self._deliver(event, group, fixed, first))

    def _dead_letter(self, event: _Event, group: str, reason: str, deliveries: int) -> str:
        letter = DeadLetter(topic=event.topic, queue=group or None, data=event.frame,
                            reason=reason, deliveries=deliveries)
        self._dead.append(letter)
        self.counters.add("dead_letters")
        log.warning("events: %s event %s dead-lettered for %s after %d deliveries: %s",
                    event.topic, event.event_id.hex(),
                    f"group {group!r}" if group else "a broadcast subscriber",
                    deliveries, reason)
        if self._on_dead_letter is not None:
            try:
                self._on_dead_letter(letter)
            except Exception:  # noqa: BLE001 - the application's callback
                log.exception("events: on_dead_letter failed")
        return reason

    def _pick(self, topic: _Topic, group: str, fixed: str | None,
              skip: set[str]) -> tuple[Any, str | None, bool]:
        """(balancer, address, members exist) of the next member to try."""
        if fixed is not None:
            present = fixed in topic.broadcast
            return None, (fixed if present and fixed not in skip else None), present
        balancer = topic.balancers.get(group)
        if balancer is None or not len(balancer):
            return balancer, None, False
        avoid = {n for n in (balancer.lookup(a) for a in skip) if n is not None} if skip else None
        node = balancer.pick(None, None, avoid or None)
        if node is None or node.address in skip:
            return balancer, None, True
        return balancer, node.address, True

    async def _deliver(self, event: _Event, group: str, fixed: str | None,
                       first: tuple[str, RPCError, _Policy] | None = None) -> None:
        """The slow path: one delivery in a task of its own, from its first
        pick (`first` None) or on from a fast-path try that failed (its
        member, error and policy; its slot is released already)."""
        key = group if fixed is None else f"(broadcast) {fixed}"
        outcome = "dropped"
        try:
            outcome = await self._deliver_group(event, group, fixed, first)
        finally:
            if outcome == "acked":
                self.counters.add("acked")
            elif outcome == "gone":
                self.counters.add("gone")
            self._ended(event, key, outcome)

    async def _deliver_group(self, event: _Event, group: str, fixed: str | None,
                             first: tuple[str, RPCError, _Policy] | None) -> str:
        woken = [False]  # a released slot woke this delivery, not used yet
        try:
            return await self._deliver_group_loop(event, group, fixed, woken, first)
        finally:
            # A wake not used (expired, refused, closing) goes to the next
            # waiter (or lane), or that slot would sit idle.
            if woken[0]:
                self._slot_free(event.topic, None)

    async def _deliver_group_loop(self, event: _Event, group: str, fixed: str | None,
                                  woken: list[bool],
                                  first: tuple[str, RPCError, _Policy] | None) -> str:
        tried: set[str] = set()       # this round (since the last backoff)
        refused: dict[str, str] = {}  # terminal refusals before any handler: never again
        denied: set[str] = set()      # may not subscribe (permit): never for this event
        deliveries = 0                # sends a handler may have run
        rounds = 0                    # rounds ended without an ack (the backoff's index)
        last = "no member"
        policy = self._default        # of the member last tried
        address: str | None
        while True:
            if first is not None:
                # On from the fast path's try: its answer is this loop's
                # first (its slot and balancer outcome are settled).
                address, error, policy = first
                first = None
                topic = await self._topic(event.topic)
                balancer: Any = topic.balancers.get(group) if fixed is None else None
                node = balancer.lookup(address) if balancer is not None else None
                credit = (event.topic, address)
            else:
                if self._closing:
                    return "dropped"
                now = self._clock()
                if now >= event.expires:
                    return self._dead_letter(event, group,
                                             f"expired after {self.max_age:g} s: {last}",
                                             deliveries)
                topic = await self._topic(event.topic)
                excluded = tried | set(refused) | denied
                busy = self._without_credit(event.topic, topic, now)
                balancer, address, present = self._pick(topic, group, fixed, excluded | busy)
                if address is None and busy and self._pick(topic, group, fixed, excluded)[1]:
                    # Members left, all without credit: wait for a slot there
                    # (an answer to one of ours, or a "full" pause ending), not
                    # for a backoff round. The outbox (max_pending) bounds this.
                    last = "every member busy (no credit left)"
                    # No polling: a released slot, a "full" pause ending, a
                    # change of members or the clock (poke) wakes it.
                    usable = self._members(topic, group, fixed) - excluded
                    woken[0] = await self._wait_credit(
                        event.topic, group if fixed is None else "\0" + fixed, usable,
                        event.expires, front=woken[0])
                    continue
                if address is None:
                    if fixed is not None and not present:
                        return "gone"
                    if present and (refused or denied) and self._all_refused(
                            topic, group, fixed, set(refused) | denied):
                        reason = next(iter(refused.values())) if refused else NO_PERMITTED
                        return self._dead_letter(event, group, reason, deliveries)
                    # Every member tried (or none): back off, then a new round.
                    rounds += 1
                    tried.clear()
                    await self._sleep_until(min(event.expires, now + policy.delay(rounds)),
                                            None if present else topic.changed)
                    continue
                if self._permit is not None and not self._permit(
                        event.topic, address, topic.keys.get(address, "")):
                    denied.add(address)
                    self.counters.add("denied")
                    continue  # as a not-processed refusal: the next member at once
                policy = topic.policies.get(address, self._default)
                sent_at = self._clock()
                node = balancer.lookup(address) if balancer is not None else None
                if node is not None:
                    balancer.begin(node)
                failed = True
                credit = (event.topic, address)
                self._busy[credit] = self._busy.get(credit, 0) + 1
                woken[0] = False  # the slot is ours
                try:
                    # Never past the event's expiry, whatever ack_wait the
                    # subscriber's record asks for.
                    await self._send(address, event.frame, event.event_id, event.topic,
                                     min(policy.ack_wait, max(0.001, event.expires - sent_at)))
                    failed = False
                    return "acked"
                except RPCError as exc:
                    error = exc
                except (asyncio.CancelledError, KeyboardInterrupt, SystemExit):
                    raise
                except BaseException as exc:  # noqa: BLE001 - a transport bug must not lose the event
                    log.exception("events: sending to %s failed", address)
                    error = RPCError(Code.UNAVAILABLE, f"could not send: {exc!r}", processed=False)
                finally:
                    self._release(credit)
                    if node is not None:
                        balancer.end(node, max(0.0, self._clock() - sent_at), failed)
            last = f"{error.code.name}: {error.detail}" if error.detail else error.code.name
            if error.processed is False:
                self.counters.add("refusals")
                if error.code is Code.RESOURCE_EXHAUSTED:
                    # Full (other publishers hold its slots): not a failed
                    # member; it is left alone for FULL_PAUSE, then retried.
                    self._full_until[credit] = self._clock() + FULL_PAUSE
                    self.counters.add("full")
                    # One waiter tries it again when the pause ends (and,
                    # if taken, its answer wakes the next).
                    asyncio.get_running_loop().call_later(
                        FULL_PAUSE, self._slot_free, event.topic, address)
                    continue
                if error.code in TERMINAL:
                    refused[address] = error.detail or error.code.name.lower()
                elif (error.code is Code.UNAVAILABLE and node is not None
                      and not getattr(error, "_unsent", False)):
                    # The member said so: draining, or no longer subscribed.
                    # Not when it never got the frame (a handshake that timed
                    # out under load, a refused connect): a failed try for
                    # this event, as for calls; outlier detection judges more.
                    balancer.retire(node)
                tried.add(address)
                continue  # the next member at once
            deliveries += 1
            self.counters.add("deliveries")
            if error.code in TERMINAL:
                # The subscriber's term(reason): the reason is its detail,
                # as on every backend (so is a refusal's, above).
                return self._dead_letter(event, group, error.detail or error.code.name.lower(),
                                         deliveries)
            if deliveries >= policy.max_deliveries:
                return self._dead_letter(event, group, f"max_deliveries ({deliveries}): {last}",
                                         deliveries)
            rounds += 1
            tried.clear()  # any member next time
            delay = getattr(error, "retry_after", None)
            if delay is None or not (delay >= 0 and math.isfinite(delay)):
                delay = policy.delay(rounds)
            await self._sleep_until(min(event.expires, self._clock() + delay))

    def _without_credit(self, name: str, topic: _Topic, now: float) -> set[str]:
        """Members of topic `name` this publisher may not send one more
        delivery to now: as many of its deliveries unanswered there as the
        subscription's max_in_flight, or "full" for a moment."""
        out = set()
        for (t, address), n in self._busy.items():
            if t != name:
                continue
            policy = topic.policies.get(address)
            if policy is not None and policy.max_in_flight is not None \
                    and n >= policy.max_in_flight:
                out.add(address)
        for (t, address), until in list(self._full_until.items()):
            if until <= now:
                del self._full_until[(t, address)]
            elif t == name:
                out.add(address)
        return out

    def _release(self, credit: tuple[str, str]) -> None:
        """A delivery to `credit` (topic, address) ended: its slot is back."""
        self._release_slot(credit[0], credit[1])
        self._slot_free(credit[0], credit[1])

    def _members(self, topic: _Topic, group: str, fixed: str | None) -> frozenset[str]:
        """The addresses a delivery to `group` (or the broadcast member
        `fixed`) may go to."""
        if fixed is not None:
            return frozenset((fixed,))
        balancer = topic.balancers.get(group)
        if balancer is None:
            return frozenset()
        return frozenset(n.address for n in balancer.nodes())

    async def _wait_credit(self, name: str, queue: str, usable: frozenset[str], until: float,
                           *, front: bool) -> bool:
        """Wait until a slot at one of `usable` is released for us, the
        clock reads `until`, or poke() or a change of members wakes every
        waiter; True when woken. `front`:
        we were woken already and lost the slot to a newer delivery, so we
        keep our place at the head of the queue."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        queues = self._credit_waiters.get(name)
        if queues is None:
            queues = self._credit_waiters[name] = {}
        waiters = queues.get(queue)
        if waiters is None:
            waiters = queues[queue] = collections.deque()
        if front:
            waiters.appendleft((future, usable))
        else:
            waiters.append((future, usable))
        try:
            left = until - self._clock()
            if left > 0 and not self._closing:
                await asyncio.wait((future,), timeout=left)
        finally:
            woken = future.done() and not future.cancelled()
            if not future.done():
                future.cancel()  # its entry is skipped, and dropped, by _wake_credit
        return woken

    def _wake_all_credit(self, name: str) -> None:
        """Wake every delivery of topic `name` waiting for credit, to look
        again, and send what its lanes hold while members have credit."""
        for waiters in self._credit_waiters.pop(name, {}).values():
            for future, _usable in waiters:
                if not future.done():
                    future.set_result(None)
        self._pump(name)

    def _wake_credit(self, name: str, address: str | None = None) -> bool:
        """Wake the first delivery of topic `name` waiting for credit that
        can use `address` (None: any member of its with credit now); True
        if one was woken."""
        queues = self._credit_waiters.get(name)
        if not queues:
            return False
        busy: set[str] = set()
        if address is None:
            topic = self._topics.get(name)
            if topic is None:
                return False
            busy = self._without_credit(name, topic, self._clock())
        # One queue per group: its waiters can all use the same members
        # (but those a delivery excluded), so the first live one almost
        # always fits and the scan stops at the head.
        for key, waiters in list(queues.items()):
            while waiters and waiters[0][0].done():
                waiters.popleft()
            if not waiters:
                del queues[key]
                continue
            # A group's waiters share its members: when the first few
            # cannot use `address`, it is another group's (or excluded by
            # the few); never scan a whole queue (thousands) per answer.
            for i, (future, usable) in enumerate(itertools.islice(waiters, WAKE_SCAN)):
                if future.done():
                    continue
                if (address in usable) if address is not None else bool(usable - busy):
                    if i == 0:
                        waiters.popleft()
                    else:
                        del waiters[i]
                    future.set_result(None)
                    if not waiters:
                        del queues[key]
                    if not queues:
                        del self._credit_waiters[name]
                    return True
        if not queues:
            del self._credit_waiters[name]
        return False

    def _all_refused(self, topic: _Topic, group: str, fixed: str | None,
                     excluded: set[str]) -> bool:
        if fixed is not None:
            return fixed in excluded
        balancer = topic.balancers.get(group)
        return balancer is not None and all(n.address in excluded for n in balancer.nodes())

    # -- closing ---------------------------------------------------------------

    async def close(self, linger: float = 5.0) -> list[DeliveryReport]:
        """Wait up to `linger` seconds for the outbox to empty, then drop the
        rest; returns the reports of the events dropped (logged, counted)."""
        deadline = time.monotonic() + max(0.0, linger)
        while self._events and time.monotonic() < deadline:
            await asyncio.sleep(min(0.02, max(0.0, deadline - time.monotonic())))
        dropped = list(self._events)
        self._closing = True
        # What waits in a lane, and what is sent and not answered, is
        # dropped for its group (as the tasks cancelled below report theirs).
        for lanes in self._lanes.values():
            for queue, lane in lanes.items():
                key = queue if queue[:1] != "\0" else f"(broadcast) {queue[1:]}"
                for event in lane:
                    self._ended(event, key, "dropped")
        self._lanes.clear()
        for event, group, fixed in [flight.where for flight in self._flying]:
            self._ended(event, group if fixed is None else f"(broadcast) {fixed}", "dropped")
        self._flying.clear()
        self.poke()
        self._wake_room()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        for event in dropped:
            self._finish(event)
        if dropped:
            self.counters.add("dropped", len(dropped))
            log.warning("events: closing dropped %d event(s) not delivered to every group",
                        len(dropped))
        return [self._report_of(e) for e in dropped]


#: Why no subscriber of a topic would take a frame, or None (the core's
#: check, once per event: see zmicro._core.event_frame_refusal).
frame_refusal = _core.event_frame_refusal


# -- the broker ------------------------------------------------------------------


class _EmbeddedSubscription(Subscription):
    """A topic served by a ServerCore (the Service's, or a broker's own).
    The core hands each event to `on_delivery` itself, as an EventDelivery
    (ended once; later ends are ignored), and counts them (its TopicSub):
    nothing of this class runs per event."""

    def __init__(self, broker: EmbeddedBroker, core: Any, topic: str,
                 on_delivery: Callable[[Delivery], Any], options: SubscribeOptions,
                 own: _OwnService | None) -> None:
        self.topic = topic
        self.options = options
        self._broker = broker
        self._core = core
        self._own = own
        self._lock = threading.Lock()
        self._closed = False
        self._counts = core.add_subscription(topic, on_delivery, options.max_in_flight)

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        try:
            held = self._core.remove_subscription(self.topic)
        except Exception:  # noqa: BLE001 - the core is closed already: nothing to stop
            log.debug("events: removing %r from a closed core", self.topic, exc_info=True)
            held = []
        # Deliveries handed out and not ended go back to the publisher now
        # (another member, at once), not after its ack timeout.
        for delivery in held:
            delivery.nack(delay=0.0)
        self._broker._forget(self)

    def stats(self) -> dict[str, int]:
        stats: dict[str, int] = self._counts.stats()
        return stats


class _OwnService:
    """A subscriber service of the broker's own (no Service attached): a
    Service on a free port, on a thread, and its topic records."""

    def __init__(self, broker: EmbeddedBroker) -> None:
        from ..service import Service

        self.topics: dict[str, ServiceRecord] = {}  # topic -> its record
        svc = Service(f"zmicro-events-{uuid.uuid4().hex[:12]}",
                      registry=broker._registry_or_default(), insecure=broker.insecure,
                      keys=broker._keys, ttl=broker._ttl, grace=1.0)

        @svc.handler("Events.Stats")
        def stats(request: Any, ctx: Any) -> dict[str, Any]:
            """This node's subscriptions and their counters."""
            return {t: s.stats() for (_, t), s in list(broker._subs.items()) if s._own is self}

        self.svc = svc
        self._thread = threading.Thread(target=svc.run, name="zmicro-events-subscriber",
                                        daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 60
        while svc.address is None:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                svc.stop()
                raise BrokerError("the broker's subscriber service did not start")
            time.sleep(0.005)

    @property
    def core(self) -> Any:
        return self.svc._core

    def record(self, topic: str, options: SubscribeOptions) -> ServiceRecord:
        from ..registry import Node

        svc = self.svc
        assert svc.address is not None  # (started in __init__)
        return ServiceRecord(
            name=TOPIC_PREFIX + topic, version=options.queue or "",
            metadata={"zmicro.kind": "topic"},
            nodes=(Node(id=svc._node_id, address=svc.address,
                        metadata={"service": svc.name, "health": "serving",
                                  **topic_node_metadata(options)},
                        public_key=svc._security.public_key),))

    def stop(self) -> None:
        self.svc.stop()
        self._thread.join(30)


class EmbeddedBroker(Broker):
    """Brokerless events over zmicro's transport (see the module doc).

    Options, keyword-only: ``registry`` (default: the embedded one),
    ``insecure`` / ``keys`` (as for Client and Service), ``selector`` (how a
    queue group's member is picked: round_robin, random, p2c, peak_ewma),
    ``max_pending`` / ``max_pending_bytes`` (the outbox), and where the
    subscriber's record does not say: ``ack_timeout`` (seconds a delivery
    waits for its ack), ``max_deliveries``, ``backoff`` (seconds before the
    n-th redelivery round, the last repeats); ``max_age`` (seconds an event
    is delivered for at most), ``on_dead_letter`` (called with each
    DeadLetter on the engine's thread: keep it short), ``linger`` (close()'s
    default wait for the outbox), ``ttl`` (the topic records of the
    broker's own subscriber services), ``policy`` (a
    :class:`zmicro.auth.Policy`, or its rules: who may subscribe, see the
    module doc; None or a Policy without rules: anyone the transport lets
    in).
    """

    capabilities = Capabilities(durable=False, survives_publisher=False)
    #: Service keeps "zmicro.topic.<topic>" records for the subscriptions of
    #: a Service using this broker (the registry is the membership).
    registers_topics = True
    #: The node metadata of a topic record (Service adds it to its records).
    topic_node_metadata = staticmethod(topic_node_metadata)

    def __init__(self, registry: Any = None, *, insecure: bool | None = None,
                 keys: Any = None, selector: str = "round_robin", max_pending: int = 10_000,
                 max_pending_bytes: int = 64 << 20, ack_timeout: float = 10.0,
                 max_deliveries: int = 5, backoff: tuple[float, ...] = (0.1, 1.0, 5.0),
                 max_age: float = 120.0,
                 on_dead_letter: Callable[[DeadLetter], Any] | None = None,
                 linger: float = 5.0, ttl: float = 10.0, policy: Any = None) -> None:
        self._registry = registry
        self._keys = keys
        self._insecure = insecure
        self._security: Any = None
        self._options: dict[str, Any] = dict(
            selector=selector, max_pending=max_pending, max_pending_bytes=max_pending_bytes,
            ack_timeout=ack_timeout, max_deliveries=max_deliveries, backoff=tuple(backoff),
            max_age=max_age, on_dead_letter=on_dead_letter)
        DeliveryEngine(send=_never, lookup=_never, **self._options)  # validates them now
        if not (linger >= 0 and ttl > 0):
            raise ValueError("linger must be seconds >= 0 and ttl seconds > 0")
        self._linger = float(linger)
        self._ttl = float(ttl)
        self._rules, self._audit = _subscribe_rules(policy)
        # The hand-over to the engine's thread: publish() appends here under
        # _handing and wakes the engine once per batch (not a coroutine and
        # a thread round trip per event); events here count against the
        # outbox's bounds, so each is sure to fit when the engine takes it.
        self._handing = threading.Lock()
        self._hand: _core.Handover | None = None   # made with the engine (_started)
        # publish() calls waiting for room (_wait_room) wait on _room; the
        # hand-over counts them, and the engine wakes them (in the core)
        # when the outbox is down to _room_low.
        self._room = threading.Condition(self._handing)
        self._room_low = max_pending - max(1, min(256, max_pending // 8))
        # (topic, address, key) -> the last decision audited (engine thread only).
        self._decisions: dict[tuple[str, str, str], bool] = {}
        self._dead: collections.deque[DeadLetter] = collections.deque(maxlen=DEAD_LETTERS_KEPT)
        self._counters = _Counters()
        self._lock = threading.Lock()
        self._cache: Any = None
        self._unwatch: Callable[[], None] | None = None
        self._thread: LoopThread | None = None
        self._client: Any = None
        self._engine: DeliveryEngine | None = None
        self._service: Any = None            # the attached Service (it owns its core)
        self._own: list[_OwnService] = []    # the broker's own subscriber services
        self._subs: dict[tuple[int, str], _EmbeddedSubscription] = {}
        self._beat: threading.Thread | None = None
        self._stop = threading.Event()
        self._closed = False
        #: What close() dropped: the reports of events not done with every group.
        self.dropped: list[DeliveryReport] = []
        _brokers.add(self)

    def _fresh_in_child(self) -> None:
        """After fork(), in the child: the parent's engine thread, registry
        watch and subscriptions do not exist here. Publishing starts afresh
        (an engine, a client and a loop thread of the child's own, on first
        use); what the parent's outbox held stays the parent's to deliver;
        the parent's subscriptions stay the parent's (closing this broker
        in the child does not deregister them)."""
        self._lock = threading.Lock()
        self._handing = threading.Lock()
        self._hand = None
        self._room = threading.Condition(self._handing)
        self._counters = _Counters()
        self._cache = None
        self._unwatch = None
        self._thread = None
        self._client = None
        self._engine = None
        self._own = []
        self._subs = {}
        self._beat = None
        self._stop = threading.Event()

    @property
    def insecure(self) -> bool:
        """Whether this broker runs without Curve and MACs. The security
        (key store, ``ZMICRO_INSECURE``) is resolved at first use, not when
        the broker is made, as by the Service or Publisher using it."""
        if self._security is None:
            from ..security import Security
            self._security = Security.resolve(insecure=self._insecure, keys=self._keys)
        return bool(self._security.insecure)

    # -- publishing ---------------------------------------------------------------

    def _registry_or_default(self) -> Any:
        if self._registry is None:
            from ..registry import default_registry
            self._registry = default_registry()
        return self._registry

    def _registry_cache(self) -> Any:
        with self._lock:
            if self._cache is None:
                from ..registry.cache import RegistryCache
                self._cache = RegistryCache(self._registry_or_default())
                self._unwatch = self._cache.subscribe(self._members_changed)
            return self._cache

    async def _lookup(self, topic: str) -> list[ServiceRecord]:
        cache = self._registry_cache()
        # The first read of a name asks the registry: not on the loop.
        return await asyncio.get_running_loop().run_in_executor(
            None, cache.get, TOPIC_PREFIX + topic)

    def _members_changed(self, name: str, records: list[ServiceRecord]) -> None:
        engine = self._engine
        if engine is not None and name.startswith(TOPIC_PREFIX):
            engine.members_changed_threadsafe(name[len(TOPIC_PREFIX):], records)

    def _started(self) -> tuple[LoopThread, DeliveryEngine]:
        """The engine and its thread, started on first use."""
        started, running = self._thread, self._engine
        if started is not None and running is not None and not self._closed:
            return started, running  # (per publish: no lock once started)
        with self._lock:
            if self._closed:
                raise BrokerError("the broker is closed")
            if self._thread is not None and self._engine is not None:
                return self._thread, self._engine
            from ..client import AsyncClient  # (client imports much: not at import time)

            thread = LoopThread("zmicro-events-publisher")
            client = AsyncClient(registry=self._registry_or_default(),
                                 insecure=self.insecure, keys=self._keys,
                                 timeout=self._options["ack_timeout"])

            deliver = client._deliver

            def send(address: str, frame: bytes, event_id: bytes, topic: str,
                     timeout: float) -> Awaitable[None]:
                try:  # (the node keys reached the client through on_keys)
                    return deliver(address, frame, event_id, topic=topic, timeout=timeout)
                except ValueError:
                    if len(event_id) != _NONCE_SIZE:
                        raise
                # A channel keys its pending answers by the frame's request
                # id, and two publishers sharing this broker may number
                # alike (or one frame is published twice): this one waits
                # for the other to end on that node.
                return _after_same_id(client, address, frame, event_id, topic, timeout)

            engine = DeliveryEngine(send=send, lookup=self._lookup, dead_letters=self._dead,
                                    counters=self._counters, check=frame_refusal,
                                    permit=None if self._rules is None else self._permitted,
                                    **self._options)
            # The fast path sends through the client's core itself (the
            # closure above is the slow path's); the nodes' registry keys
            # reach the client when the engine reads them, not per send.
            engine._direct = client._core
            engine._same_id = functools.partial(_after_same_id, client)
            engine.on_keys = client._node_keys.update
            self._hand = _core.Handover(engine, self._handing, self._room, self._room_low,
                                        valid_topics=_VALID_TOPICS, check=_check_offer)
            self._thread, self._client, self._engine = thread, client, engine
            return thread, engine

    def _permitted(self, topic: str, address: str, key: str) -> bool:
        """Whether the node at `address` (registry key `key`) may subscribe
        to `topic`: the rules' ``subscribe`` decision for its principal,
        audited once per node and decision (on the engine's thread)."""
        assert self._rules is not None and self._security is not None
        principal = self._security.principal_for(key or None)
        service = TOPIC_PREFIX + topic
        decision = self._rules.decide(principal, service, "subscribe")
        seen = (topic, address, key)
        if self._decisions.get(seen) is not decision.allowed:
            if len(self._decisions) >= _DECISIONS_KEPT:
                self._decisions.clear()
            self._decisions[seen] = decision.allowed
            self._audit("allow" if decision.allowed else "deny", decision.reason,
                        principal=principal, service=service, endpoint="subscribe",
                        node=address)
        return bool(decision.allowed)

    def publish(self, topic: str, data: bytes, *, event_id: bytes,
                timeout: float = 5.0) -> None:
        """Put the event in the outbox (blocking up to `timeout` while it is
        full: then RESOURCE_EXHAUSTED). Thread-safe."""
        state = self._hand_over(topic, data, event_id, timeout)
        if state == _FULL:
            # Wait here for room (the engine wakes us once a batch of it is
            # free), not through the engine's loop: a thread round trip per
            # event while the outbox is full cost more than the delivery.
            deadline = time.monotonic() + timeout
            while state == _FULL:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise RPCError(Code.RESOURCE_EXHAUSTED,
                                   f"the outbox stayed full ({self._engine_pending()} events) "
                                   f"for {timeout:g} s", processed=False)
                self._wait_room(len(data), left)
                state = self._hand_over(topic, data, event_id, timeout)
        if state != _HANDED:
            self._put(topic, data, event_id, timeout, False).result()

    async def publish_async(self, topic: str, data: bytes, *, event_id: bytes,
                            timeout: float = 5.0) -> None:
        """publish() for asyncio. The outbox is the broker's one, on its
        thread: accepted events outlive the caller's loop."""
        if self._hand_over(topic, data, event_id, timeout) != _HANDED:
            await asyncio.wrap_future(self._put(topic, data, event_id, timeout, False))

    def _hand_over(self, topic: str, data: bytes, event_id: bytes, timeout: float) -> int:
        """Accept the event without waiting when the outbox has room for
        it (counting the events handed over and not taken yet): queued for
        the engine's thread, woken once per batch: _HANDED. _FULL: no room
        now; _REFUSED: closing or too large (the engine's put() says why).
        The topic and the timeout are checked by the hand-over (in the
        core: _check_offer for those it has not seen)."""
        hand = self._hand
        if hand is None or self._closed:
            _check_offer(topic, timeout)
            self._started()
            hand = self._hand
            assert hand is not None
        state: int = hand.offer(topic, data, event_id, timeout)
        if state != _HANDED_WAKE:
            return state
        try:
            self._thread.loop.call_soon_threadsafe(self._take_over, hand)  # type: ignore[union-attr]
        except (RuntimeError, AttributeError):  # the loop is closed: so is the broker
            raise BrokerError("the broker is closed") from None
        return _HANDED

    def _engine_pending(self) -> int:
        engine = self._engine
        return 0 if engine is None else engine.pending

    def _wait_room(self, size: int, most: float) -> None:
        """Block up to `most` seconds for room for `size` bytes (or close)."""
        engine = self._engine
        assert engine is not None
        hand = self._hand
        assert hand is not None
        with self._handing:
            # Counted before the look, so the engine (which makes room first,
            # then looks at the count) cannot miss us.
            hand.room_waiters += 1
            hand.room_called = False  # (the engine notifies once per wait)
            try:
                if hand.no_room_locked(size) and not engine.closing:
                    self._room.wait(min(most, _ROOM_RECHECK))
            finally:
                hand.room_waiters -= 1

    def _take_over(self, hand: _core.Handover) -> None:
        """On the engine's thread: move the handed-over events to the outbox."""
        engine = self._engine
        accepted: list[_Event] = []
        lost = 0
        batch = hand.take()
        try:
            if engine is None or engine.closing:  # close() began after publish() returned
                lost = len(batch)
            elif batch:
                engine._loop = asyncio.get_running_loop()
                accepted = engine.accept_batch(batch)
        finally:
            hand.landed()
        if accepted and engine is not None:
            self._counters.add("published", len(accepted))
            engine.route_all(accepted)
        if lost:
            self._counters.add("dropped", lost)
            log.warning("events: closing dropped %d event(s) just published", lost)

    def publish_wait(self, topic: str, data: bytes, *, event_id: bytes,
                     timeout: float = 5.0) -> DeliveryReport:
        """publish(), then wait until every group acked the event or gave it
        up (at most ``max_age``): its DeliveryReport."""
        report: DeliveryReport = self._put(topic, data, event_id, timeout, True).result()
        return report

    async def publish_wait_async(self, topic: str, data: bytes, *, event_id: bytes,
                                 timeout: float = 5.0) -> DeliveryReport:
        """publish_wait() for asyncio."""
        report: DeliveryReport = await asyncio.wrap_future(
            self._put(topic, data, event_id, timeout, True))
        return report

    def _put(self, topic: str, data: bytes, event_id: bytes, timeout: float,
             wait: bool) -> concurrent.futures.Future[Any]:
        check_topic(topic)
        thread, engine = self._started()
        return thread.submit(engine.put(topic, data, event_id, timeout=timeout, wait=wait))

    def dead_letters(self) -> list[DeadLetter]:
        """The last 1,000 events this broker's publisher gave up, oldest
        first: subscribers' term() and the last nack before max_deliveries
        end here, on the publisher's side (the embedded subscriber keeps
        none: the publisher decides)."""
        return list(self._dead)

    def stats(self) -> dict[str, int]:
        """Publisher counters: published, acked, deliveries (sends a handler
        may have run that were not acked), refusals (not processed), denied
        (members skipped: may not subscribe, ``policy=``), dead_letters, unrouted (no subscriber), gone, dropped; pending (in
        the outbox now)."""
        engine = self._engine
        return self._counters.snapshot() | {"pending": 0 if engine is None else engine.pending}

    # -- subscribing ----------------------------------------------------------------

    def attach(self, service: Any) -> None:
        """The Service using this broker is bound: its ServerCore serves the
        subscriptions (Service calls this before it subscribes, and keeps
        the topic records itself)."""
        with self._lock:
            if self._own or self._subs:
                raise BrokerError("attach() comes before any subscribe()")
            self._service = service

    def subscribe(self, topic: str, on_delivery: Callable[[Delivery], Any],
                  options: SubscribeOptions = SubscribeOptions()) -> Subscription:
        """Serve `topic` on the attached Service's socket; without one, on a
        subscriber service of the broker's own (a new one when every own
        service subscribes to `topic` already: the wire names no group, so
        a node has one subscription per topic)."""
        check_topic(topic)
        if not isinstance(options, SubscribeOptions):
            raise TypeError(f"options must be SubscribeOptions, not {type(options).__name__}")
        if not callable(on_delivery):
            raise TypeError("on_delivery must be callable")
        with self._lock:
            if self._closed:
                raise BrokerError("the broker is closed")
            service = self._service
            if service is not None and (id(service), topic) in self._subs:
                raise ValueError(f"this service subscribes to {topic!r} already")
            own = None if service is not None else next(
                (o for o in self._own if topic not in o.topics), None)
        if service is not None:
            if service._core is None:
                raise BrokerError("the attached service is not running")
            sub = _EmbeddedSubscription(self, service._core, topic, on_delivery, options, None)
            with self._lock:
                self._subs[(id(service), topic)] = sub
            return sub
        if own is None:
            own = _OwnService(self)
            with self._lock:
                closed = self._closed
                if not closed:
                    self._own.append(own)
            if closed:
                own.stop()
                raise BrokerError("the broker is closed")
        sub = _EmbeddedSubscription(self, own.core, topic, on_delivery, options, own)
        record = own.record(topic, options)
        with self._lock:
            self._subs[(id(own), topic)] = sub
            own.topics[topic] = record
            if self._beat is None:
                self._beat = threading.Thread(target=self._heartbeat, name="zmicro-events-ttl",
                                              daemon=True)
                self._beat.start()
        self._registry_or_default().register(record, ttl=self._ttl)
        return sub

    def _forget(self, sub: _EmbeddedSubscription) -> None:
        owner = sub._own
        with self._lock:
            key = (id(owner if owner is not None else self._service), sub.topic)
            if self._subs.get(key) is sub:
                del self._subs[key]
            record = owner.topics.pop(sub.topic, None) if owner is not None else None
        if record is not None:
            try:
                self._registry_or_default().deregister(record)
            except Exception as exc:  # noqa: BLE001 - its TTL ends it anyway
                log.warning("events: could not deregister %s: %s", record.name, exc)

    def _heartbeat(self) -> None:
        # Refresh the own services' topic records every ttl/3, as a Service
        # does its record.
        while not self._stop.wait(self._ttl / 3):
            with self._lock:
                records = [r for o in self._own for r in o.topics.values()]
            for record in records:
                try:
                    self._registry_or_default().register(record, ttl=self._ttl)
                except Exception as exc:  # noqa: BLE001 - the next beat tries again
                    log.warning("events: could not refresh %s: %s", record.name, exc)

    # -- closing --------------------------------------------------------------------

    def close(self, *, linger: float | None = None) -> None:
        """Close the subscriptions (deregistered), wait up to `linger`
        seconds (default: the broker's) for the outbox to empty, then drop
        the rest: their reports are kept in ``dropped`` (and logged,
        counted). Idempotent. Blocks: from a coroutine, ``await aclose()``."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            subs = list(self._subs.values())
        for sub in subs:
            sub.close()
        thread, engine, client = self._thread, self._engine, self._client
        if thread is not None and engine is not None:
            wait = self._linger if linger is None else max(0.0, linger)
            try:
                self.dropped = thread.submit(engine.close(wait)).result(wait + 60)
                thread.submit(_call(client.close)).result(60)
            except Exception:  # noqa: BLE001 - closing goes on
                log.warning("events: closing the publisher failed", exc_info=True)
            thread.stop()
        self._stop.set()
        for own in self._own:
            own.stop()
        if self._beat is not None:
            self._beat.join(30)
        if self._unwatch is not None:
            self._unwatch()
        if self._cache is not None:
            self._cache.close()

    async def aclose(self, *, linger: float | None = None) -> None:
        """close() from a coroutine (on a worker thread: the loop goes on)."""
        await asyncio.get_running_loop().run_in_executor(
            None, functools.partial(self.close, linger=linger))


#: Every EmbeddedBroker of the process (a forked child makes each fresh).
_brokers: weakref.WeakSet[EmbeddedBroker] = weakref.WeakSet()


def _fresh_after_fork() -> None:
    for broker in list(_brokers):
        broker._fresh_in_child()


os.register_at_fork(after_in_child=_fresh_after_fork)

# _hand_over's answers.
_HANDED, _FULL, _REFUSED, _HANDED_WAKE = (_core.HANDED, _core.FULL, _core.REFUSED,
                                          _core.HANDED_WAKE)
#: Seconds a publish() waiting for room looks again by itself (a wake-up
#: cannot be missed; this only bounds the cost of a bug).
_ROOM_RECHECK = 0.1

#: Bytes of an event id (the frame's nonce).
_NONCE_SIZE = 16
#: Seconds between two looks at a channel still holding a delivery with
#: the request id of the next one (rare: see _after_same_id).
_SAME_ID_POLL = 0.002


def _check_offer(topic: str, timeout: float) -> None:
    """ValueError for a bad topic or timeout (the hand-over's check, for
    what its fast test does not pass)."""
    check_topic(topic)
    if not (isinstance(timeout, (int, float)) and timeout > 0 and math.isfinite(timeout)):
        raise ValueError(f"timeout must be seconds > 0, not {timeout!r}")


async def _after_same_id(client: Any, address: str, frame: bytes, event_id: bytes,
                         topic: str, timeout: float) -> None:
    """Deliver `frame` once no delivery with its request id is in flight
    to `address` (within `timeout`: then UNAVAILABLE, not sent)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        await asyncio.sleep(_SAME_ID_POLL)
        left = deadline - loop.time()
        if left <= 0:
            raise RPCError(Code.UNAVAILABLE, "a delivery with the same request id stayed in "
                           f"flight to {address} for {timeout:g} s", processed=False)
        try:
            future = client._deliver(address, frame, event_id, topic=topic, timeout=left)
        except ValueError:
            continue
        await future
        return


def _subscribe_rules(policy: Any) -> tuple[Any, Callable[..., None]]:
    """(Rules or None, audit hook) of a broker's ``policy=``: a Policy (its
    rules and its audit hook), Rules, or an iterable of Rule."""
    from ..auth.audit import audit
    from ..auth.policy import Policy
    from ..auth.rules import Rule, Rules

    if policy is None:
        return None, audit
    if isinstance(policy, Policy):
        return policy.rules, policy.audit
    if isinstance(policy, Rules):
        return policy, audit
    given: list[Any] = [policy] if isinstance(policy, (str, bytes)) else list(policy)
    rules = [r for r in given if isinstance(r, Rule)]
    if len(rules) != len(given):
        raise TypeError("policy must be a Policy, Rules or Rule objects")
    return Rules(rules), audit


async def _call(fn: Callable[[], Any]) -> Any:
    return fn()


async def _never(*args: Any) -> Any:
    raise AssertionError("not used")
