# outbox.pyx - the embedded publisher's fast path: the base class of
# zmicro.broker.embedded.DeliveryEngine (its module doc has the rules).
#
# Per event, when its topic's members are known and a member has credit:
# accept it into the outbox, route it to its groups, pick one member per
# group, send, and settle the answer when the channel completes it (_Flight
# -> _landed: no Future and no loop callback per event).
# Deliveries that find no member with credit wait, in publish order, in a
# lane per (topic, group): every released slot, "full" pause end, change of
# members and poke pumps the lanes. Anything one pick cannot settle (no
# member yet, expired, denied, an error answer) is handed to the Python
# engine's slow path (DeliveryEngine._slow -> _deliver: retries, backoff,
# refusals, dead letters), which shares this state (the attributes in
# outbox.pxd) and calls back into _ended/_finish/_slot_free.
#
# Python profile before this file (bench/events, 20,000 signed 64 B
# events): the engine thread spent ~68 % of its time in the interpreter on
# these few functions.
#
# Uses: selector.pyx (Balancer, NodeState: pick, start, finish), errors.pyx
# (_RPCError, C_UNAVAILABLE); the engine's Python methods _slow,
# _route_later, _dead_letter, _wake_credit and _report_of.

import asyncio as _outbox_asyncio
import collections as _outbox_collections
import logging as _outbox_logging

cdef object _outbox_log = _outbox_logging.getLogger("zmicro.events")
cdef object _Future = _outbox_asyncio.Future
cdef object _deque = _outbox_collections.deque


@cython.auto_pickle(False)
cdef class PendingEvent:

    def __init__(self, str topic not None, bytes frame not None, bytes event_id not None,
                 double now, double route_for, double max_age):
        self.topic = topic
        self.frame = frame
        self.event_id = event_id
        self.size = len(frame)
        self.accepted_at = now
        self.route_until = now + route_for
        self.expires = now + max_age
        self.outcomes = {}
        self.open = 0
        self.done = None


@cython.final
@cython.auto_pickle(False)
cdef class _Flight(Completion):
    """One fast-path delivery, sent and not ended: its end (the channel's
    Completion, or a slow-path Future's callback) goes to the engine."""

    def on_future(self, future):
        """The end as a Future (sends that did not go through the core)."""
        if future.cancelled():
            self.complete(_RPCError(C_UNAVAILABLE, "the delivery was cancelled",
                                    processed=False))
        else:
            self.complete(future.exception())

    cdef int complete(self, object error) except -1:
        try:
            self.engine._landed(self, error)
        except Exception:
            _outbox_log.exception("events: settling a delivery to %s failed", self.address)
        return 0

    @property
    def where(self):
        """(event, group, fixed): what close() reports dropped."""
        return self.event, self.group, self.fixed


@cython.auto_pickle(False)
cdef class DeliveryCore:

    def __cinit__(self, *args, **kwargs):
        self._topics = {}
        self._busy = {}
        self._full_until = {}
        self._lanes = {}
        self._flying = set()
        self._credit_waiters = {}
        self._unrouted = {}
        self._events = set()
        self._pending_bytes = 0
        self._closing = False
        self._room_waiters = 0
        self._direct = None
        self._same_id = None

    @property
    def pending(self):
        """Events in the outbox (accepted, not done with every group)."""
        return len(self._events)

    @property
    def pending_bytes(self):
        """Bytes of the events in the outbox."""
        return self._pending_bytes

    @property
    def closing(self):
        return self._closing

    def _core_ready(self):
        """After the engine set counters: bump its counters directly."""
        self._counts = self.counters.values

    # -- accepting and routing ---------------------------------------------------

    def _accept(self, str topic, frame, event_id, double timeout, bint wait,
                bint count=True, bint route=True):
        cdef PendingEvent event = PendingEvent(
            topic, frame if type(frame) is bytes else bytes(frame),
            event_id if type(event_id) is bytes else bytes(event_id),
            self._clock(), timeout, self.max_age)
        if wait:
            event.done = self._loop.create_future()
        self._events.add(event)
        self._pending_bytes += event.size
        if count:
            self.counters.add("published")
        if route:
            self._route_one(event)
        return event

    def accept_batch(self, handed):
        """Accept the (topic, frame, event_id, timeout) tuples of `handed`
        (EmbeddedBroker's hand-over, counted against the outbox already)
        into the outbox, unrouted: the list of their PendingEvents, for
        route_all(). Call on the engine's loop, not closing."""
        cdef list out = []
        cdef PendingEvent event
        cdef double now = self._clock()
        cdef Py_ssize_t added = 0
        for topic, frame, event_id, timeout in handed:
            event = PendingEvent(topic, frame, event_id, now, timeout, self.max_age)
            self._events.add(event)
            added += event.size
            out.append(event)
        self._pending_bytes += added
        return out

    def route_all(self, list events not None):
        """Route each of `events`, in order (now, or behind its topic's router)."""
        for event in events:
            self._route_one(<PendingEvent?>event)

    cdef int _route_one(self, PendingEvent event) except -1:
        """Deliver `event` now, when its topic's members are known; else
        its topic's router task does, in publish order."""
        topic = self._topics.get(event.topic)
        if (topic is None or not topic.loaded or event.topic in self._unrouted
                or not self._route_at_once(event, topic)):
            self._route_later(event)  # (behind those waiting: publish order)
        return 0

    cdef bint _route_at_once(self, PendingEvent event, object topic) except -1:
        """Route `event` at once if `topic` has members (False: it has none
        yet, _route waits for them)."""
        if self._closing:
            return False
        groups = topic.groups()
        broadcast = topic.broadcast_members()
        if not groups and not broadcast:
            return False
        self._fan_out(event, groups, broadcast)
        return True

    def _routed(self, PendingEvent event not None, list groups not None,
                list broadcast not None):
        """The event's groups are fixed: refuse it for all of them, or offer
        it to each."""
        self._fan_out(event, groups, broadcast)

    cdef int _fan_out(self, PendingEvent event, list groups, list broadcast) except -1:
        cdef str group, address
        event.open = len(groups) + len(broadcast)
        refusal = self._check(event.topic, event.frame) if self._check is not None else None
        if refusal is not None:
            # What every subscriber would answer: no need to ask them.
            for group in groups:
                self._end(event, group, self._dead_letter(event, group, refusal, 0))
            for address in broadcast:
                self._end(event, "(broadcast) " + address,
                          self._dead_letter(event, "", refusal, 0))
            return 0
        for group in groups:
            self._offer_to(event, group, None)
        for address in broadcast:
            self._offer_to(event, "", address)
        return 0

    # -- the fast path: one pick, one send, a callback ---------------------------

    cdef int _offer_to(self, PendingEvent event, str group, str fixed) except -1:
        """Deliver `event` to `group` (or the broadcast member `fixed`):
        sent now when a member has credit, else queued in the group's lane
        behind the deliveries already waiting there."""
        cdef str queue = group if fixed is None else "\0" + fixed
        cdef dict lanes = self._lanes.get(event.topic)
        lane = lanes.get(queue) if lanes is not None else None
        if lane:
            # Never ahead of those waiting; they go as slots are released
            # (every release, member change and pause end pumps the lanes).
            lane.append(event)
            return 0
        if not self._try(event, group, fixed):
            if lanes is None:
                lanes = self._lanes[event.topic] = {}
            lanes[queue] = _deque((event,))
        return 0

    cdef bint _try(self, PendingEvent event, str group, str fixed) except -1:
        """One try of the fast path: False when no member has credit now
        (nothing done: the caller queues it). Otherwise the delivery is
        under way: sent (its end calls _landed), or handed to the slow
        path for what one pick cannot settle (no member, expired, denied:
        _deliver decides, counts and waits as always)."""
        cdef str name = event.topic
        cdef str address
        cdef Balancer balancer = None
        cdef NodeState node = None
        cdef double now, left, wait
        cdef set avoid
        cdef _Flight flight
        topic = self._topics.get(name)
        now = self._clock()
        if topic is None or now >= event.expires or self._closing:
            self._slow(event, group, fixed, None)
            return True
        if fixed is None:
            balancer = topic.balancers.get(group)
            if balancer is not None:
                node = balancer.pick(None, None, None)
            if node is None:
                self._slow(event, group, fixed, None)
                return True
            if not self._credit(name, node.address, topic, now):
                avoid = {node}
                while True:  # another member with credit?
                    node = balancer.pick(None, None, avoid)
                    if node is None or node in avoid:
                        return False  # every member busy
                    if self._credit(name, node.address, topic, now):
                        break
                    avoid.add(node)
            address = node.address
        else:
            if fixed not in topic.broadcast:
                self._slow(event, group, fixed, None)  # it left: "gone"
                return True
            if not self._credit(name, fixed, topic, now):
                return False
            address = fixed
        if self._permit is not None and not self._permit(name, address,
                                                         topic.keys.get(address, "")):
            self._slow(event, group, fixed, None)  # it decides again, and counts it
            return True
        policy = topic.policies.get(address, self._default)
        credit = (name, address)
        self._busy[credit] = self._busy.get(credit, 0) + 1
        if node is not None:
            balancer.start(node)
        # Never past the event's expiry, whatever ack_wait the subscriber's
        # record asks for.
        left = event.expires - now
        wait = policy.ack_wait
        if wait >= left:
            wait = left if left > 0.001 else 0.001
        flight = _Flight.__new__(_Flight)
        flight.engine = self
        flight.event = event
        flight.group = group
        flight.fixed = fixed
        flight.address = address
        flight.node = node
        flight.balancer = balancer
        flight.sent_at = now
        flight.policy = policy
        # In _flying before it is sent: its end may come at once (deferred
        # to the loop by the channel, but close() must see it meanwhile).
        self._flying.add(flight)
        try:
            if self._direct is not None:
                try:
                    (<ClientCore>self._direct).deliver_event(
                        address, event.frame, event.event_id, name, wait, None, flight)
                    return True  # (its end: flight.complete)
                except ValueError:
                    if len(event.event_id) != ZM_NONCE_SIZE:
                        raise
                    # Its request id is in flight to that node already (two
                    # publishers numbering alike, or a frame published twice).
                    sent = self._same_id(address, event.frame, event.event_id, name, wait)
            else:
                sent = self._send(address, event.frame, event.event_id, name, wait)
            future = sent if isinstance(sent, _Future) else _outbox_asyncio.ensure_future(sent)
        except (KeyboardInterrupt, SystemExit):
            self._flying.discard(flight)
            raise
        except BaseException as exc:  # settled by _landed, as an answer
            future = _outbox_asyncio.get_running_loop().create_future()
            future.set_exception(exc)
        future.add_done_callback(flight.on_future)
        return True

    cdef bint _credit(self, str name, str address, object topic, double now) except -1:
        """Whether one more delivery may go to `address` now (as
        _without_credit judges it, for one member)."""
        self.n_credit_looks += 1
        credit = (name, address)
        until = self._full_until.get(credit)
        if until is not None:
            if until > now:
                return False
            del self._full_until[credit]
        policy = topic.policies.get(address)
        if policy is None:
            return True
        most = policy.max_in_flight
        return most is None or self._busy.get(credit, 0) < most

    cdef int _landed(self, _Flight flight, object exc) except -1:
        """A fast-path delivery's end: acked (`exc` None), or the slow path
        goes on from this first try's error."""
        cdef PendingEvent event
        cdef NodeState node
        cdef double latency
        if PySet_Discard(self._flying, flight) != 1:
            return 0  # close() reported it dropped
        event = flight.event
        error = None
        if exc is not None:
            if isinstance(exc, _RPCError):
                error = exc
            else:  # a transport bug must not lose the event
                _outbox_log.error("events: sending to %s failed", flight.address, exc_info=exc)
                error = _RPCError(C_UNAVAILABLE, f"could not send: {exc!r}", processed=False)
        self._release(event.topic, flight.address)
        node = flight.node
        if node is not None:
            latency = self._clock() - flight.sent_at
            flight.balancer.finish(node, latency if latency > 0 else 0.0, error is not None)
        if error is None:
            self._counts["acked"] += 1  # (the engine's thread alone changes it)
            self._end(event, flight.group if flight.fixed is None
                      else "(broadcast) " + flight.fixed, "acked")
        else:
            self._slow(event, flight.group, flight.fixed, (flight.address, error, flight.policy))
        self._freed(event.topic, flight.address)
        return 0

    def _release_slot(self, str name not None, str address not None):
        """A delivery to `address` of topic `name` ended (both paths): its
        credit is back, and a "full" pause there is over (it answered)."""
        self._release(name, address)

    cdef int _release(self, str name, str address) except -1:
        credit = (name, address)
        cdef Py_ssize_t n = self._busy.get(credit, 0) - 1
        if n > 0:
            self._busy[credit] = n
        else:
            self._busy.pop(credit, None)
        if self._full_until:
            self._full_until.pop(credit, None)
        return 0

    def _slot_free(self, str name not None, str address):
        """A slot at `address` (None: any member of topic `name`) may be
        free: it goes to a slow-path delivery waiting for it first (they
        waited longer), else to the lanes."""
        self._freed(name, address)

    cdef int _freed(self, str name, str address) except -1:
        if name in self._credit_waiters and self._wake_credit(name, address):
            return 0
        self._pump_lanes(name, address)
        return 0

    def _pump(self, str name not None, str address=None):
        """Send what waits in topic `name`'s lanes (those that can use
        `address`; None: all) while members have credit."""
        self._pump_lanes(name, address)

    cdef int _pump_lanes(self, str name, str address) except -1:
        cdef dict lanes = self._lanes.get(name)
        cdef str queue, fixed, group
        cdef Balancer balancer
        if not lanes:
            return 0
        self.n_pumps += 1
        topic = self._topics.get(name)
        for queue in list(lanes):
            lane = lanes.get(queue)
            if queue[:1] == "\0":
                fixed, group = queue[1:], ""
            else:
                fixed, group = None, queue
            if address is not None and lane:
                if fixed is not None:
                    if fixed != address:
                        continue
                elif topic is not None:
                    balancer = topic.balancers.get(group)
                    if balancer is not None and balancer.lookup(address) is None:
                        continue
            while lane:
                if not self._try(<PendingEvent>lane[0], group, fixed):
                    break
                lane.popleft()
            if not lane:
                lanes.pop(queue, None)
        if not lanes:
            self._lanes.pop(name, None)
        return 0

    # -- ending --------------------------------------------------------------------

    def _ended(self, PendingEvent event not None, str key, str outcome):
        self._end(event, key, outcome)

    cdef int _end(self, PendingEvent event, str key, str outcome) except -1:
        event.outcomes[key] = outcome
        event.open -= 1
        if event.open <= 0:
            self._done_event(event)
        return 0

    def _finish(self, PendingEvent event not None):
        self._done_event(event)

    cdef int _done_event(self, PendingEvent event) except -1:
        """`event` is done with every group: out of the outbox (room made),
        its publish_wait report set."""
        if PySet_Discard(self._events, event) == 1:
            self._pending_bytes -= event.size
            self._room_made()
        if event.done is not None and not event.done.done():
            event.done.set_result(self._report_of(event))
        return 0

    def _wake_room(self):
        self._room_made()

    cdef int _room_made(self) except -1:
        """Wake who waits for room: put()s on this loop, and publish()
        calls waiting in the hand-over (Handover._room_made)."""
        if self._room_waiters or self._closing:
            room = self._room
            self._room = _outbox_asyncio.Event()
            room.set()
        if self._hand is not None:
            (<Handover>self._hand)._room_made()
        return 0


# _hand_over's answers (EmbeddedBroker.publish).
HANDED, FULL, REFUSED, HANDED_WAKE = 0, 1, 2, 3


@cython.auto_pickle(False)
cdef class Handover:

    def __init__(self, DeliveryCore engine not None, lock not None, room not None,
                 Py_ssize_t room_low, *, set valid_topics not None, check not None):
        self.engine = engine
        self.valid_topics = valid_topics
        self.check = check
        self.lock = lock
        self.room = room
        self.room_low = room_low
        self.room_waiters = 0
        self.room_called = False
        self.queue = _deque()
        self.queued_bytes = 0
        self.transit = 0
        self.transit_bytes = 0
        self.woken = False
        engine._hand = self

    cdef int _room_made(self) except -1:
        """On the engine's thread, room was made: wake the publish() calls
        waiting for it once the outbox is down to room_low (or empty, or
        closing), not once per event (a thread switch per event). A waiter
        counts itself under `lock` before it looks for room, and room is
        made before this looks at the count: none is missed."""
        cdef DeliveryCore e = self.engine
        cdef Py_ssize_t n
        if not self.room_waiters:
            return 0
        n = len(e._events)
        if n and not e._closing and (
                n > self.room_low
                or e._pending_bytes > e.max_pending_bytes - e.max_pending_bytes // 8):
            return 0
        self.lock.acquire()
        try:
            # Once per wait: until the woken waiters run (they need this
            # thread's GIL), every event ended would notify again.
            if not self.room_called:
                self.room.notify_all()
                self.room_called = True
        finally:
            self.lock.release()
        return 0

    cdef bint _no_room(self, Py_ssize_t size) except -1:
        cdef DeliveryCore e = self.engine
        cdef Py_ssize_t count = len(e._events) + len(self.queue) + self.transit
        cdef Py_ssize_t used = e._pending_bytes + self.queued_bytes + self.transit_bytes
        return count >= e.max_pending or (count > 0 and used + size > e.max_pending_bytes)

    def no_room_locked(self, Py_ssize_t size):
        """Whether an event of `size` bytes does not fit now (the caller
        holds `lock`)."""
        return self._no_room(size)

    def offer(self, topic, frame, event_id, timeout):
        """Queue the event for the engine's thread if the outbox has room
        for it, counting what is queued and in transit: HANDED, or
        HANDED_WAKE (the caller wakes the engine: once per batch); FULL:
        no room now; REFUSED: closing, or larger than max_pending_bytes
        (the engine's put() says why). A topic not in `valid_topics`, or a
        timeout that is not seconds > 0, goes to check(topic, timeout)
        first (it raises ValueError for a bad one)."""
        cdef DeliveryCore e = self.engine
        cdef Py_ssize_t size
        cdef double seconds
        if not (type(topic) is str and topic in self.valid_topics and type(timeout) is float
                and 0.0 < <double>timeout < INFINITY):
            self.check(topic, timeout)
        seconds = timeout
        if type(frame) is not bytes:
            frame = bytes(frame)
        if type(event_id) is not bytes:
            event_id = bytes(event_id)
        size = len(frame)
        self.lock.acquire()
        try:
            if e._closing or size > e.max_pending_bytes:
                return REFUSED
            if self._no_room(size):
                return FULL
            self.queue.append((topic, frame, event_id, seconds))
            self.queued_bytes += size
            if self.woken:
                return HANDED
            self.woken = True
            return HANDED_WAKE
        finally:
            self.lock.release()

    def take(self):
        """On the engine's thread: the queued batch, counted as in transit
        until landed() (publish() does not wait while it is moved)."""
        self.lock.acquire()
        try:
            batch, self.queue = self.queue, _deque()
            self.transit, self.transit_bytes = len(batch), self.queued_bytes
            self.queued_bytes = 0
            self.woken = False
            return batch
        finally:
            self.lock.release()

    def landed(self):
        """The batch take() gave is in the outbox (or dropped)."""
        self.lock.acquire()
        try:
            self.transit = self.transit_bytes = 0
        finally:
            self.lock.release()
