cdef class InEvent:
    """One event that passed EventInbox.check (read-only)."""

    cdef readonly str topic           # without the "zmicro.topic." prefix
    cdef readonly bytes event_id      # the header's nonce (16 bytes when signed)
    cdef readonly uint64_t request_id # the publisher's delivery id
    cdef readonly uint64_t published_us   # header timestamp, Unix microseconds
    cdef readonly str content_type
    cdef readonly dict metadata       # str -> str (UTF-8, surrogateescape)
    cdef readonly str principal       # the publisher's claimed identity (MACed, not proven)
    cdef readonly uint64_t trace_id_high
    cdef readonly uint64_t trace_id_low
    cdef readonly uint64_t span_id
    cdef readonly bytes body
    cdef readonly bint signed         # the MAC was checked and passed
    cdef readonly bint duplicate      # this inbox acked this event_id already
    cdef readonly bint in_progress    # another copy of it is being handled here now
    cdef bint holds                   # this copy holds the id's in-progress mark
    cdef object inbox                 # the EventInbox that checked it (acked() refuses others)


cdef class EventInbox:
    """What one subscription checks of every event frame it gets (§4.6)."""

    cdef readonly str topic
    cdef bytes name                   # TOPIC_PREFIX + topic, UTF-8: the service field
    cdef readonly str service         # the same as a str: the key's name
    cdef KeySource keys               # the topic's ring (rotated keys picked up); None: insecure
    cdef readonly double max_age      # seconds an event may be old
    cdef readonly double window       # seconds an event may be ahead of our clock
    cdef int64_t max_age_us
    cdef int64_t window_us
    cdef zm_replay acked_set          # nonces of events acked here, until published + max_age
    cdef size_t quota                 # most ids remembered at once, acked + in progress
    cdef dict running                 # nonce -> None: events being handled here (check..acked/release)
    cdef object clock                 # None (CLOCK_REALTIME) or () -> Unix seconds
    cdef uint64_t n_checked           # frames given to check()
    cdef uint64_t n_duplicates        # of which duplicates
    cdef uint64_t n_in_progress       # of which copies of an event in progress
    cdef dict refused                 # reason -> count
    cdef bytes last_ct                # the last content type and principal as received,
    cdef str last_ct_str              # and as str (most events of a topic share them:
    cdef bytes last_principal         # one str each, not one per event)
    cdef str last_principal_str

    cdef int64_t now_us(self) except? -1
    cdef object _refuse(self, str reason)
    cdef InEvent _check(self, object data)
    cdef int _acked(self, InEvent event) except -1
    cdef int _release(self, InEvent event) except -1
    cdef str _cached(self, zm_slice s, bint principal)
