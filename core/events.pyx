# events.pyx - event frames (docs/protocol.md §4.6): encode_event() builds
# and signs one, EventInbox.check() is what every subscriber checks of one,
# whatever broker carried it (memory, embedded, NATS).
#
# Uses: message.pyx (header_init, out_assemble, out_close, mac_items),
# keyring.pyx (KeySource, Keyring.verify, next_nonce, MacFailure), wire.pyx
# (_text, _data, _slice_text, fill_metadata), buffers.pyx (view_get),
# context.pyx (monotonic), errors.pyx (_RPCError, C_RESOURCE_EXHAUSTED),
# src/zm_frame.h, src/zm_replay.h; zmicro.broker.base (check_topic,
# TOPIC_PREFIX) and zmicro.errors (EventRefused), imported on first use.
#
# An event is one frame - header, inline body, MAC trailer - at most
# ZM_EVENT_MAX bytes, built and MACed once whatever the number of groups and
# redeliveries: its nonce (the event id) and timestamp never change. Its
# `service` field is "zmicro.topic.<topic>", which names the MAC key
# (§7.5's per-service KDF). A subscriber checks, in this order (§4.6; the
# embedded server runs 1-3 itself before it hands the frame over, the
# numbers are the plan's and protocol.md's):
#
#   1. frame: one frame, BODY_INLINE, at most ZM_EVENT_MAX   -> "malformed"
#   2. version 2 (-> "version"), kind event (-> "kind")
#   4. topic: `service` is this inbox's "zmicro.topic.<topic>" -> "wrong_topic"
#   5. sizes: SIGNED, MAC trailer, 16-byte nonce              -> "unsigned"
#   6. key id, MAC in constant time (Keyring.verify, the one MAC path)
#                                         -> "unknown_key", "bad_mac";
#      timestamp at most `window` ahead   -> "future",
#                at most `max_age` behind -> "stale"
#   7. acked set: a nonce acked here before -> duplicate=True (ack again,
#      do not run the handler); a nonce being handled here now (checked, not
#      yet acked() nor release()d) -> in_progress=True (nack it for later,
#      do not run it: one event never runs twice at once on one node); no
#      room to remember one more -> "replay_full"
#
# An event's nonce is remembered for good only once it is handled (acked()),
# not when it arrives, unlike a request's: a nack or a crash must let it come
# back (release() clears its in-progress mark). The in-progress mark is what
# stops a copy that arrives meanwhile (a broker's redelivery after ack_wait,
# a replaying broker, a publisher resending after its timeout) from running
# beside the first.
# An insecure inbox (no secrets) accepts unsigned events and cannot check a
# MAC; it still applies 1, 2, 4, the time limits and the acked set.

from posix.time cimport CLOCK_REALTIME
import weakref as _weakref

#: Largest event frame, in bytes (src/zm_limits.h: NATS' default max_payload).
EVENT_MAX = ZM_EVENT_MAX

#: The reasons EventInbox.check() gives, in check order.
EVENT_REFUSALS = ("malformed", "version", "kind", "wrong_topic", "unsigned",
                  "unknown_key", "bad_mac", "future", "stale", "replay_full")

cdef object _check_topic = None
# MacSecrets -> the KeySource encode_event signs through, so that a
# publisher that passes its MacSecrets picks up rotated keys by the core's
# one rule (KeySource.tick) without holding anything; weak: a secrets
# object dropped by its publisher is not kept alive here.
cdef object _SOURCES = _weakref.WeakKeyDictionary()
cdef str _TOPIC_PREFIX = None
cdef object _EventRefused = None

cdef dict _MAC_REASON = {MAC_UNSIGNED: "unsigned", MAC_UNKNOWN_KEY: "unknown_key",
                         MAC_BAD: "bad_mac"}


cdef int _late_imports() except -1:
    # zmicro.broker and zmicro.errors sit above the core: imported on first
    # use, so importing the core never imports the broker package.
    global _check_topic, _TOPIC_PREFIX, _EventRefused
    if _check_topic is None:
        from zmicro.broker.base import check_topic, TOPIC_PREFIX
        from zmicro.errors import EventRefused
        _TOPIC_PREFIX = TOPIC_PREFIX
        _EventRefused = EventRefused
        _check_topic = check_topic
    return 0


cdef int64_t _realtime_us() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_REALTIME, &ts)
    return <int64_t>ts.tv_sec * 1000000 + ts.tv_nsec // 1000


cdef inline uint32_t _seconds_up(int64_t us) noexcept nogil:
    """Whole seconds, rounded up (the acked set's clock), clamped at 0."""
    return <uint32_t>((us + 999999) // 1000000) if us > 0 else 0


def event_frame_check(str topic not None, frame):
    """``(request_id, refusal)`` of the event `frame` (a bytes-like) a
    publisher is about to deliver on `topic`, read once when it is routed:
    `refusal` is None, or what every subscriber of `topic` would refuse it
    for before any handler runs ("malformed": not one well-formed frame
    with an inline body; "kind": not an event; "wrong_topic": its header
    names another topic), and `request_id` (the header's, the key of its
    answer on a channel) is then 0."""
    cdef uint64_t request_id = 0
    refusal = _frame_check(topic, frame, &request_id)
    return request_id, refusal


def event_frame_refusal(str topic not None, frame):
    """event_frame_check()'s refusal alone: why no subscriber of `topic`
    would take `frame`, or None. A subscriber's ServerCore drops a
    malformed frame without an answer and looks the subscription up by the
    header's topic, so the embedded publisher checks this itself, once per
    event: a broker in the middle (or a bug) that hands it such a frame
    gets a dead letter at once, as on the other backends, not retries
    until the ack wait runs out."""
    cdef uint64_t request_id = 0
    return _frame_check(topic, frame, &request_id)


cdef object _frame_check(str topic, frame, uint64_t *request_id):
    cdef Py_buffer view
    cdef zm_slice one
    cdef zm_header h
    cdef zm_frame_view v
    cdef int rc
    cdef bytes name
    _late_imports()
    name = (_TOPIC_PREFIX + topic).encode("utf-8", "surrogateescape")
    view_get(frame, &view, &one)
    try:
        rc = zm_frame_parse(&one, 1, 0, &h, &v)
        if rc != ZM_OK:
            return "malformed"
        if h.kind != ZM_KIND_EVENT:
            return "kind"
        if not v.inline_body:
            return "malformed"
        if not same_bytes(name, h.service.ptr, h.service.len):
            return "wrong_topic"
        request_id[0] = h.request_id
        return None
    finally:
        PyBuffer_Release(&view)


def encode_event(str topic, body, *, secrets, uint64_t request_id,
                 str content_type="application/msgpack", metadata=None,
                 str principal="", uint64_t trace_id_high=0, uint64_t trace_id_low=0,
                 uint64_t span_id=0, now=None):
    """``(frame, event_id)``: one event frame of `body` (a bytes-like) on
    `topic`, kind event, signed with the topic's key when `secrets` (a
    zmicro.security MacSecrets, or a KeySource over one) is given,
    unsigned otherwise (insecure). Rotated keys are picked up as calls pick
    them up: the secrets file is looked at (one stat) at most every
    KEYS_RELOAD_INTERVAL seconds, before signing.
    `event_id` is the frame's 16-byte random nonce (also when unsigned).
    `request_id`: the publisher's delivery id. `now`: Unix seconds to stamp
    (default: the clock). ValueError for a bad topic or header field,
    RPCError RESOURCE_EXHAUSTED when the frame would exceed EVENT_MAX."""
    cdef zm_header h
    cdef uint8_t nonce[ZM_NONCE_SIZE]
    cdef Outgoing o
    cdef Py_buffer view
    cdef zm_slice b
    cdef MacKey key = None
    cdef Keyring ring
    cdef KeySource source
    cdef size_t size
    cdef str name
    cdef dict meta = dict(metadata) if metadata else None
    _late_imports()
    _check_topic(topic)
    name = _TOPIC_PREFIX + topic
    header_init(&h, ZM_KIND_EVENT, request_id)
    h.n_metadata = 0
    h.trace_hi = trace_id_high
    h.trace_lo = trace_id_low
    h.span_id = span_id
    _slice_text(name, &h.service)
    _slice_text(content_type, &h.content_type)
    _slice_text(principal, &h.principal)
    fill_metadata(meta, &h)
    o.n = 0
    view_get(body, &view, &b)
    try:
        if b.len > ZM_EVENT_MAX:  # before any copy: the frame could only be larger
            raise _RPCError(C_RESOURCE_EXHAUSTED, f"an event frame is at most {ZM_EVENT_MAX} "
                            f"bytes; this body alone is {b.len}", processed=False)
        if secrets is not None:
            if type(secrets) is KeySource:
                source = <KeySource>secrets
            else:
                source = _SOURCES.get(secrets)
                if source is None:  # (two threads may both make one: harmless)
                    source = KeySource(secrets)
                    _SOURCES[secrets] = source
            ring = source.ring(name, monotonic())
            key = ring.stamp(&h, nonce)
        else:
            next_nonce(nonce)
            h.nonce.ptr = nonce
            h.nonce.len = ZM_NONCE_SIZE
            h.timestamp_us = <uint64_t>_realtime_us()
        if now is not None:  # stamped before the header is written and MACed
            h.timestamp_us = <uint64_t>(<double>now * 1e6)
        out_assemble(&o, &h, &b, 1, None, True, key, NULL)
        size = ZMQ.msg_size(&o.parts[0])
        if size > ZM_EVENT_MAX:
            raise _RPCError(C_RESOURCE_EXHAUSTED, f"an event frame is at most {ZM_EVENT_MAX} "
                            f"bytes; this one is {size}", processed=False)
        frame = PyBytes_FromStringAndSize(<const char *>ZMQ.msg_data(&o.parts[0]),
                                          <Py_ssize_t>size)
    finally:
        out_close(&o)
        PyBuffer_Release(&view)
    return frame, PyBytes_FromStringAndSize(<char *>nonce, ZM_NONCE_SIZE)


@cython.auto_pickle(False)
cdef class InEvent:
    """An event frame EventInbox.check() accepted: its header fields and
    body. ``duplicate``: the inbox acked this event already (ack it again,
    do not run the handler). ``in_progress``: another copy of it is being
    handled here now (nack it for later, do not run it). Otherwise this
    copy holds the event's in-progress mark until EventInbox.acked() or
    EventInbox.release() gets it."""

    def __init__(self):
        raise TypeError("InEvent objects are made by EventInbox.check()")

    @property
    def published_at(self):
        """The publish time, Unix seconds (the header's timestamp)."""
        return self.published_us / 1e6

    def context(self, *, principal=None, str user_id=None):
        """The core Context its handler runs in (set as the current context
        by the subscriber glue), so that the calls and events the handler
        makes carry this event's trace context (its trace id, its span as
        the parent) and metadata on, as calls made in a call handler do.
        ``service`` is ``zmicro.topic.<topic>``, ``endpoint`` ``publish``,
        no deadline (an event has none)."""
        cdef Context ctx = Context.__new__(Context)
        _late_imports()
        ctx.service = _TOPIC_PREFIX + self.topic
        ctx.endpoint = "publish"
        ctx.request_id = self.request_id
        ctx.peer = b""
        ctx.content_type = self.content_type
        ctx.user_id = user_id
        ctx._principal = principal
        ctx.deadline_at = 0.0
        # Context metadata is str -> bytes (what the wire carries): the
        # event's text values as the reader decoded them.
        ctx._metadata = ({k: v.encode("utf-8", "surrogateescape")
                          for k, v in self.metadata.items()} if self.metadata else None)
        ctx.trace_hi = self.trace_id_high
        ctx.trace_lo = self.trace_id_low
        ctx.span_id = self.span_id
        ctx.signed = self.signed
        return ctx

    def __repr__(self):
        return (f"<InEvent {self.topic!r} id={self.event_id.hex()} "
                f"signed={bool(self.signed)} duplicate={bool(self.duplicate)} "
                f"in_progress={bool(self.in_progress)}>")


@cython.auto_pickle(False)
cdef class EventInbox:
    """The checks of one subscription (see the file's comment for the order).

    ``EventInbox(topic, *, secrets, max_age=120.0, window=30.0,
    replay_quota=1_500_000, clock=None)``: `secrets` a zmicro.security
    MacSecrets (None: insecure, unsigned events accepted), `max_age` how old
    an event may be, `window` how far ahead of our clock, `replay_quota`
    how many event ids (acked, or in progress) it remembers at once
    (beyond: "replay_full"). An acked id is kept max_age seconds, so a
    subscription takes at most replay_quota / max_age events/s sustained
    (12,500/s at the defaults); "replay_full" is temporary: the glue nacks
    the event with a delay, it is never dead-lettered for it.
    `clock` a callable returning Unix seconds (tests). Callable from any
    threads without a lock: each method reads and changes the acked and
    in-progress sets with no Python code in between, under the GIL (a MAC
    of 64 KiB or more, computed with the GIL released, and `clock` come
    before)."""

    def __init__(self, str topic, *, secrets, double max_age=120.0, double window=30.0,
                 size_t replay_quota=1_500_000, clock=None):
        _late_imports()
        _check_topic(topic)
        if not max_age > 0 or not window > 0:
            raise ValueError("max_age and window must be positive seconds")
        if replay_quota < 1:
            raise ValueError("replay_quota must be positive")
        self.topic = topic
        self.service = _TOPIC_PREFIX + topic
        self.name = self.service.encode()
        self.keys = KeySource(secrets) if secrets is not None else None
        self.max_age = max_age
        self.window = window
        self.max_age_us = <int64_t>(max_age * 1e6)
        self.window_us = <int64_t>(window * 1e6)
        zm_replay_init(&self.acked_set, replay_quota)
        self.quota = replay_quota
        self.running = {}
        self.clock = clock
        self.refused = dict.fromkeys(EVENT_REFUSALS, 0)

    def __dealloc__(self):
        zm_replay_free(&self.acked_set)

    cdef int64_t now_us(self) except? -1:
        if self.clock is not None:
            return <int64_t>(self.clock() * 1e6)
        return _realtime_us()

    cdef object _refuse(self, str reason):
        self.refused[reason] += 1
        return _EventRefused(reason)

    def check(self, data):
        """The InEvent of the event frame `data` (a bytes-like), or raise
        zmicro.errors.EventRefused(reason) (EVENT_REFUSALS)."""
        return self._check(data)

    cdef str _cached(self, zm_slice s, bint principal):
        """_text(s), the same str as last time when the bytes are the same."""
        cdef bytes last = self.last_principal if principal else self.last_ct
        if last is not None and same_bytes(last, s.ptr, s.len):
            return self.last_principal_str if principal else self.last_ct_str
        text = _text(s)
        if principal:
            self.last_principal, self.last_principal_str = _data(s), text
        else:
            self.last_ct, self.last_ct_str = _data(s), text
        return text

    cdef InEvent _check(self, object data):
        cdef Py_buffer view
        cdef zm_slice frame
        cdef zm_header h
        cdef zm_frame_view v
        cdef zm_slice items[ZM_FRAME_MAX + 1]
        cdef size_t n
        cdef int rc, failure
        cdef int64_t now, ts
        cdef bint signed = False, duplicate = False, in_progress = False, holds = False
        cdef bytes nonce = None
        cdef InEvent ev
        cdef Keyring ring
        cdef uint32_t i
        self.n_checked += 1
        view_get(data, &view, &frame)
        try:
            # 1-2. one frame, BODY_INLINE, at most EVENT_MAX; version; kind
            if frame.len > ZM_EVENT_MAX:
                raise self._refuse("malformed")
            rc = zm_frame_parse(&frame, 1, 0, &h, &v)
            if rc == ZM_E_VERSION:
                raise self._refuse("version")
            if rc == ZM_E_KIND:
                raise self._refuse("kind")
            if rc != ZM_OK or not v.inline_body:
                raise self._refuse("malformed")
            if h.kind != ZM_KIND_EVENT:
                raise self._refuse("kind")
            # 4. the topic this inbox subscribes to
            if not same_bytes(self.name, h.service.ptr, h.service.len):
                raise self._refuse("wrong_topic")
            # 5-6. sizes, key id, MAC: the one MAC path (Keyring.verify)
            if self.keys is not None:
                ring = self.keys.ring(self.service, monotonic())  # (h.service is ours)
                n = mac_items(&v, &frame, NULL, items)
                failure = ring.verify(&h, items, n, v.tag)
                if failure != MAC_OK:
                    raise self._refuse(_MAC_REASON[failure])
                signed = True
            # 6. time: at most `window` ahead, at most `max_age` behind
            now = self.now_us()
            ts = <int64_t>h.timestamp_us if h.timestamp_us < 0x7FFFFFFFFFFFFFFF else -1
            if ts > now + self.window_us:
                raise self._refuse("future")
            if ts < 0 or ts < now - self.max_age_us:
                raise self._refuse("stale")
            # 7. acked set (only 16-byte nonces can be remembered)
            if h.nonce.len == ZM_NONCE_SIZE:
                if zm_replay_contains(&self.acked_set, h.nonce.ptr,
                                      _seconds_up(now)) == ZM_E_REPLAY:
                    duplicate = True
                    self.n_duplicates += 1
                else:
                    nonce = _data(h.nonce)
                    if nonce in self.running:
                        in_progress = True
                        self.n_in_progress += 1
                    else:
                        rc = zm_replay_room(&self.acked_set, 0, _seconds_up(now))
                        if rc != ZM_OK and rc != ZM_E_REPLAY_FULL:
                            raise_zm(rc)
                        # Acked ids and ids in progress share the quota: each
                        # one in progress takes an acked slot when it ends.
                        if (rc == ZM_E_REPLAY_FULL or zm_replay_held(&self.acked_set, 0)
                                + <size_t>len(self.running) >= self.quota):
                            raise self._refuse("replay_full")
                        self.running[nonce] = None
                        holds = True
            ev = InEvent.__new__(InEvent)
            ev.topic = self.topic
            ev.event_id = nonce if nonce is not None else _data(h.nonce)
            ev.request_id = h.request_id
            ev.published_us = <uint64_t>ts
            ev.content_type = self._cached(h.content_type, False)
            ev.metadata = {_text(h.metadata[i].key):
                           _data(h.metadata[i].value).decode("utf-8", "surrogateescape")
                           for i in range(h.n_metadata)}
            ev.principal = self._cached(h.principal, True)
            ev.trace_id_high = h.trace_hi
            ev.trace_id_low = h.trace_lo
            ev.span_id = h.span_id
            ev.body = _data(v.body)
            ev.signed = signed
            ev.duplicate = duplicate
            ev.in_progress = in_progress
            ev.holds = holds
            ev.inbox = self
            return ev
        finally:
            PyBuffer_Release(&view)

    def acked(self, InEvent event not None):
        """`event` was handled: remember its id until it is older than
        max_age, so later copies come back with duplicate=True. An event
        without a 16-byte id cannot be remembered (unsigned, not ours)."""
        self._acked(event)

    cdef int _acked(self, InEvent event) except -1:
        cdef int rc
        cdef uint32_t now
        if event.inbox is not self:
            raise ValueError("this event was checked by another inbox")
        if len(event.event_id) != ZM_NONCE_SIZE:
            return 0
        # The clock first (a test's clock is Python code, which may let
        # another thread run): from the in-progress set to the acked set
        # with no Python code in between, so no copy checked meanwhile finds
        # the id in neither.
        now = _seconds_up(self.now_us())
        if event.holds:
            event.holds = False
            del self.running[event.event_id]
        rc = zm_replay_insert(&self.acked_set, <const uint8_t *>PyBytes_AS_STRING(event.event_id),
                              0, _seconds_up(<int64_t>event.published_us + self.max_age_us),
                              now)
        if rc != ZM_OK and rc != ZM_E_REPLAY and rc != ZM_E_REPLAY_FULL:
            # REPLAY: acked twice (a duplicate acked again); FULL: checked
            # when it arrived, filled since: it may run once more.
            raise_zm(rc)
        return 0

    def release(self, InEvent event not None):
        """`event` was not handled (nacked, termed, failed, given back):
        clear its in-progress mark, so a later copy runs. Only the copy
        that took the mark (the first one checked) clears it; releasing
        any other copy, or twice, does nothing."""
        self._release(event)

    cdef int _release(self, InEvent event) except -1:
        if event.inbox is not self:
            raise ValueError("this event was checked by another inbox")
        if event.holds:
            event.holds = False
            del self.running[event.event_id]
        return 0

    def stats(self):
        """``checked``, ``refused`` (all reasons), ``duplicates``,
        ``in_progress`` (copies that came while the event was being handled
        here), ``running`` (ids in progress now), ``remembered`` (acked ids
        held, expired ones not purged yet included), and
        ``refused_<reason>`` per reason."""
        out = {"checked": self.n_checked, "refused": sum(self.refused.values()),
               "duplicates": self.n_duplicates, "in_progress": self.n_in_progress,
               "running": len(self.running), "remembered": self.acked_set.count}
        for reason, count in self.refused.items():
            out["refused_" + reason] = count
        return out

    def __repr__(self):
        return f"<EventInbox {self.topic!r} insecure={self.keys is None}>"
