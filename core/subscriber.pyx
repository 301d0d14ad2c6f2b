# subscriber.pyx - what a subscription does with each delivery, whatever
# broker made it (zmicro.events._Subscriber's glue; the order is the one
# zmicro/events.py's docstring gives): EventInbox.check, duplicates acked,
# copies in progress nacked, the body decoded, an EventContext and a core
# Context made, the handler run, the delivery ended.
#
# Uses: events.pyx (EventInbox, InEvent, _EventRefused), context.pyx
# (Context, CURRENT, _MappingProxyType, _EMPTY_METADATA), server.pyx
# (EventDelivery: ended without a Python call); zmicro.auth.principal
# (ANONYMOUS), imported on first use.
#
# Only the path every event takes when all goes well is here: checked,
# decoded, run inline, acked. Everything else (refusals, copies in
# progress, undecodable bodies, handlers that raise, async and blocking
# handlers, the glue failing) is handed to the owner, the Python
# _Subscriber, which decides and counts through add(). Counters are C
# integers changed with the GIL held and no Python code in between, and
# the inbox is all C but for MACs of 64 KiB or more, computed before its
# replay set is touched: so neither needs a lock, from whatever threads
# the broker delivers and the handlers end.

cdef object _ANONYMOUS = None

#: The names of EventGlue.counters(), in GlueCounter order.
GLUE_COUNTERS = ("received", "refused", "duplicates", "in_progress", "undecodable",
                 "acked", "nacked", "rejected", "failed")
cdef dict _GLUE_INDEX = {name: i for i, name in enumerate(GLUE_COUNTERS)}


cdef inline int _ack(object d) except -1:
    if type(d) is EventDelivery:
        return (<EventDelivery>d)._end(END_ACK)
    d.ack()
    return 0


@cython.freelist(64)
@cython.auto_pickle(False)
cdef class EventContext:
    """What a subscriber knows about the event it handles; made by zmicro.

    ``topic``; ``queue`` (the subscription's queue group, None: broadcast);
    ``event_id`` (16 bytes, the same for every delivery of the event);
    ``published_at`` (Unix seconds, the publisher's clock); ``deliveries``
    (this one included, or None where the backend cannot know);
    ``metadata`` (str to str, read-only); ``principal`` (the publisher, see
    zmicro.events; interceptors may refine it; looked up when first read);
    ``user_id`` (the transport-authenticated key, or None);
    ``content_type``; ``signed``; trace context ``trace_hi``,
    ``trace_lo``, ``span_id`` (``trace_id``: the 128-bit id). For
    interceptors written for calls, ``service`` is ``zmicro.topic.<topic>``
    and ``endpoint`` is ``publish``; there is no deadline.
    """

    def __init__(self, *, str topic, queue, bytes event_id, double published_at, deliveries,
                 metadata, principal, user_id, str content_type, bint signed,
                 uint64_t trace_hi=0, uint64_t trace_lo=0, uint64_t span_id=0):
        self.topic = topic
        self.queue = queue
        self.event_id = event_id
        self.published_at = published_at
        self.deliveries = deliveries
        self.metadata = _MappingProxyType(dict(metadata))
        self._principal = principal
        self.user_id = user_id
        self.content_type = content_type
        self.signed = signed
        self.trace_hi = trace_hi
        self.trace_lo = trace_lo
        self.span_id = span_id

    @property
    def principal(self):
        """The publisher (zmicro.auth.Principal), None in insecure mode."""
        if self._resolve is not None:  # (cleared only once it answered)
            self._principal = self._resolve(self._key)
            self._resolve = self._key = None
        return self._principal

    @principal.setter
    def principal(self, value):
        self._resolve = self._key = None
        self._principal = value

    @property
    def service(self):
        return _TOPIC_PREFIX + self.topic

    @property
    def endpoint(self):
        return "publish"

    @property
    def deadline(self):
        return None

    @property
    def cancelled(self):
        return False

    @property
    def trace_id(self):
        return (<object>self.trace_hi << 64) | self.trace_lo

    def time_remaining(self):
        return None

    def __repr__(self):
        return (f"<EventContext {self.topic!r} id={self.event_id.hex()} "
                f"deliveries={self.deliveries}>")


@cython.auto_pickle(False)
cdef class EventGlue:
    """The per-event path of one subscription, called as the broker's
    ``on_delivery(delivery)`` (the embedded ServerCore calls it without a
    Python call). `owner` (zmicro.events._Subscriber) is called for every
    outcome but a handler run inline that returns:

    - ``_refused(d, reason)``: EventInbox.check refused the frame;
    - ``_later(d)``: a copy in progress here (counted): nack with the backoff;
    - ``_decoder(content_type)``: the decoder of a content type (None: the
      body as is), asked once per content type change;
    - ``_undecodable(d, exc)``: the body did not decode (counted, released);
    - ``_start(d, ev, value, ctx)``: run a handler that is not inline (an
      async one, a blocking one): it ends with finish(), or not_run();
    - ``_failed(d, ev, exc)``: the handler raised (released; counts);
    - ``_glue_failed(d, ev)``: this glue raised (counted), inside the
      ``except`` clause: log, release `ev` if not None, nack.

    `inbox` an EventInbox, `handler(value, ctx)` the handler with the
    interceptors applied, `resolve(key)` the Principal of a key (None:
    insecure), `inline` whether to run the handler on the delivering
    thread."""

    def __init__(self, owner, EventInbox inbox not None, *, queue, handler, resolve,
                 bint inline):
        global _ANONYMOUS
        if _ANONYMOUS is None:
            from zmicro.auth.principal import ANONYMOUS
            _ANONYMOUS = ANONYMOUS
        self.owner = owner
        self.inbox = inbox
        self.topic = inbox.topic
        self.queue = queue
        self.handler = handler
        self.resolve = resolve
        self.inline = inline

    def __call__(self, delivery):
        self.deliver(delivery)

    cdef int deliver(self, object d) except -1:
        """on_delivery(d): never raises unless the owner's _glue_failed does."""
        cdef InEvent ev = None
        try:
            self.n[G_RECEIVED] += 1
            data = (<EventDelivery>d).data if type(d) is EventDelivery else d.data
            try:
                ev = self.inbox._check(data)
            except _EventRefused as exc:
                self.owner._refused(d, exc.reason)
                return 0
            self._deliver(d, ev)
        except Exception:
            self.n[G_FAILED] += 1
            self.owner._glue_failed(d, ev)
        return 0

    cdef int _deliver(self, object d, InEvent ev) except -1:
        cdef EventContext ctx
        cdef str ct
        if ev.duplicate:
            self.n[G_DUPLICATES] += 1
            return _ack(d)
        if ev.in_progress:
            # Another copy runs here now (a redelivery after ack_wait, a
            # replaying broker, a publisher's resend): never run one event
            # twice at once; its outcome decides, this copy comes back later.
            self.n[G_IN_PROGRESS] += 1
            self.owner._later(d)
            return 0
        if self.draining:
            self.inbox._release(ev)
            return 0  # closed soon: the broker gives it back (base.py: close)
        ct = ev.content_type
        try:
            if ct is not self.last_ct and ct != self.last_ct:
                self.last_decode = self.owner._decoder(ct)
                self.last_ct = ct
            value = ev.body if self.last_decode is None else self.last_decode(ev.body)
        except Exception as exc:
            self.inbox._release(ev)
            self.n[G_UNDECODABLE] += 1
            self.owner._undecodable(d, exc)
            return 0
        ctx = self._context(d, ev)
        self.active += 1
        if not self.inline:
            self.owner._start(d, ev, value, ctx)
            return 0
        return self._run(d, ev, value, ctx)

    cdef EventContext _context(self, object d, InEvent ev):
        """The EventContext of `ev` and, as its _core, the core Context its
        handler runs in: the calls and events the handler makes carry the
        event's trace and metadata on (as InEvent.context() makes it)."""
        cdef EventContext ctx = EventContext.__new__(EventContext)
        cdef Context core = Context.__new__(Context)
        if type(d) is EventDelivery:
            user_id = (<EventDelivery>d).user_id
            deliveries = None
        else:
            user_id = d.user_id
            deliveries = d.deliveries
        ctx.topic = self.topic
        ctx.queue = self.queue
        ctx.event_id = ev.event_id
        ctx.published_at = ev.published_us / 1e6
        ctx.deliveries = deliveries
        ctx.metadata = _MappingProxyType(ev.metadata) if ev.metadata else _EMPTY_METADATA
        ctx.user_id = user_id
        ctx.content_type = ev.content_type
        ctx.signed = ev.signed
        ctx.trace_hi = ev.trace_id_high
        ctx.trace_lo = ev.trace_id_low
        ctx.span_id = ev.span_id
        core.service = self.inbox.service
        core.endpoint = "publish"
        core.request_id = ev.request_id
        core.peer = b""
        core.content_type = ev.content_type
        core.user_id = user_id
        core.deadline_at = 0.0
        if self.inline:
            core._blocks_address = self.blocks_address
        # Context metadata is str -> bytes (what the wire carries).
        if ev.metadata:
            core._metadata = {k: v.encode("utf-8", "surrogateescape")
                              for k, v in ev.metadata.items()}
        core.trace_hi = ev.trace_id_high
        core.trace_lo = ev.trace_id_low
        core.span_id = ev.span_id
        core.signed = ev.signed
        # The principal: the transport's key when the broker knows it,
        # else the event's signed principal field; looked up when first
        # read (as a call's), which most handlers without a policy never do.
        if self.resolve is not None:
            if user_id is not None:
                ctx._resolve = core._resolve = self.resolve
                ctx._key = user_id
            elif ev.signed and ev.principal:
                ctx._resolve = self.resolve
                ctx._key = ev.principal
                core._principal = ctx.principal  # (its user_id names nobody)
            else:
                ctx._principal = core._principal = _ANONYMOUS
        ctx._core = core
        return ctx

    cdef int _run(self, object d, InEvent ev, object value, EventContext ctx) except -1:
        token = PyContextVar_Set(CURRENT, ctx._core)  # the C API: no attribute lookups
        try:
            try:
                self.handler(value, ctx)
            except BaseException as exc:
                self._finish(d, ev, exc)
                if not isinstance(exc, Exception):
                    raise
                return 0
            return self._finish(d, ev, None)
        finally:
            PyContextVar_Reset(CURRENT, token)

    cdef int _finish(self, object d, InEvent ev, object exc) except -1:
        try:
            if exc is None:
                # Remembered first: a copy that arrives once the ack is
                # out is then a duplicate.
                self.inbox._acked(ev)
                self.n[G_ACKED] += 1
                return _ack(d)
            self.inbox._release(ev)
            self.owner._failed(d, ev, exc)
        finally:
            self.active -= 1
        return 0

    # -- for the owner's other paths --

    def run(self, delivery, InEvent event not None, value, EventContext ctx not None):
        """Run the handler here (a pool thread) and end `delivery`."""
        self._run(delivery, event, value, ctx)

    def finish(self, delivery, InEvent event not None, exc):
        """The handler ended (`exc` None: it returned): end `delivery`."""
        self._finish(delivery, event, exc)

    def not_run(self):
        """A handler _start() could not start: no longer counted active."""
        self.active -= 1

    def add(self, str name not None, uint64_t n=1):
        """Count `n` of `name` (GLUE_COUNTERS)."""
        self.n[<int>_GLUE_INDEX[name]] += n

    def counters(self):
        """GLUE_COUNTERS -> count."""
        return {name: self.n[i] for i, name in enumerate(GLUE_COUNTERS)}

    def __repr__(self):
        return f"<EventGlue {self.topic!r} active={self.active}>"
