cdef class PendingEvent:
    """One event in the embedded publisher's outbox (accepted, not done
    with every group)."""

    cdef public str topic
    cdef public bytes frame           # the event frame, sent as is
    cdef public bytes event_id
    cdef public Py_ssize_t size       # len(frame): counts against max_pending_bytes
    cdef public double accepted_at    # the engine's clock
    cdef public double route_until    # no group by then: dropped (unrouted)
    cdef public double expires        # accepted_at + max_age: every delivery ends by then
    cdef public dict outcomes         # report key (group, "(broadcast) <address>") -> outcome
    cdef public int open              # deliveries not ended yet
    cdef public object done           # asyncio.Future of its DeliveryReport (publish_wait), or None


cdef class _Flight(Completion):
    """One fast-path delivery, sent and not ended (what _try knew)."""

    cdef DeliveryCore engine
    cdef PendingEvent event
    cdef str group, fixed, address
    cdef NodeState node               # the group's member picked (None: broadcast)
    cdef Balancer balancer
    cdef double sent_at               # the engine's clock
    cdef object policy                # the member's _Policy


cdef class DeliveryCore:
    """The fast path of zmicro.broker.embedded.DeliveryEngine (its base
    class): what one event costs when a member has credit and acks."""

    # Shared with the Python engine (its slow path reads and writes them).
    cdef public dict _topics          # topic -> _Topic (members per group)
    cdef public dict _busy            # (topic, address) -> deliveries unanswered there
    cdef public dict _full_until      # (topic, address) -> clock: "full" until then
    cdef public dict _lanes           # topic -> queue -> deque of PendingEvent
    cdef public set _flying           # _Flight: fast-path deliveries sent, not ended
    cdef public dict _credit_waiters  # the slow path's: topic -> queue -> waiters
    cdef public dict _unrouted        # topic -> deque of PendingEvent its router routes
    cdef public set _events           # the outbox
    cdef public Py_ssize_t _pending_bytes
    cdef public object _send, _permit, _clock, _check
    cdef public object _default       # the broker's _Policy
    cdef public object counters       # _Counters
    cdef public bint _closing
    cdef public Py_ssize_t _room_waiters  # put()s waiting on _room
    cdef public object _room          # asyncio.Event, set (and replaced) when room is made
    cdef object _hand                 # the Handover feeding this engine (or None)
    cdef public object _loop
    cdef public double max_age
    cdef public Py_ssize_t max_pending     # events in the outbox, at most
    cdef public Py_ssize_t max_pending_bytes
    cdef readonly unsigned long long n_credit_looks  # credit looks (tests count work)
    cdef readonly unsigned long long n_pumps         # lanes looked at for a freed slot
    cdef public object _direct        # a ClientCore to deliver through (no `_send` call), or None
    cdef public object _same_id       # (client, address, frame, event_id, topic, timeout)
                                      # -> awaitable: a delivery whose request id is in
                                      # flight there already (see EmbeddedBroker)
    cdef dict _counts                 # counters.values (the engine's own counters: bumped)

    cdef int _route_one(self, PendingEvent event) except -1
    cdef bint _route_at_once(self, PendingEvent event, object topic) except -1
    cdef int _fan_out(self, PendingEvent event, list groups, list broadcast) except -1
    cdef int _offer_to(self, PendingEvent event, str group, str fixed) except -1
    cdef bint _try(self, PendingEvent event, str group, str fixed) except -1
    cdef int _release(self, str name, str address) except -1
    cdef int _freed(self, str name, str address) except -1
    cdef int _pump_lanes(self, str name, str address) except -1
    cdef bint _credit(self, str name, str address, object topic, double now) except -1
    cdef int _end(self, PendingEvent event, str key, str outcome) except -1
    cdef int _landed(self, _Flight flight, object exc) except -1
    cdef int _done_event(self, PendingEvent event) except -1
    cdef int _room_made(self) except -1


cdef class Handover:
    """EmbeddedBroker.publish() -> the engine's thread: events queued
    without waiting for it, counted against the outbox's bounds (those
    queued, and those the engine took and is moving in), under `lock`."""

    cdef public object lock           # threading.Lock (the broker's room Condition's too)
    cdef public object queue          # deque of (topic, frame, event_id, timeout)
    cdef public Py_ssize_t queued_bytes
    cdef public Py_ssize_t transit    # events taken by the engine, not in the outbox yet
    cdef public Py_ssize_t transit_bytes
    cdef public bint woken            # the engine is woken for the queue already
    cdef public object room           # threading.Condition on `lock`: publish() waits
                                      # there for room
    cdef public Py_ssize_t room_waiters  # publish() calls waiting on `room` (under `lock`)
    cdef public Py_ssize_t room_low   # they are woken when the outbox is down to this
    cdef public bint room_called      # `room` was notified: not again until a waiter
                                      # waits anew (it clears this under `lock`)
    cdef set valid_topics             # topics checked already (broker.base's cache)
    cdef object check                 # (topic, timeout) -> None, or raises ValueError
    cdef DeliveryCore engine

    cdef bint _no_room(self, Py_ssize_t size) except -1
    cdef int _room_made(self) except -1
