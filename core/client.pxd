cdef class Channel:
    """One DEALER connected to one node, used by one thread (sync client)."""

    cdef object zsock                 # pyzmq DEALER, kept alive
    cdef void *sock                   # its libzmq socket
    cdef object monitor               # PAIR receiving its handshake events, or None
    cdef readonly str address         # the node's endpoint
    cdef bytes partition              # the address in UTF-8: replies' nonce partition
    cdef public size_t max_frame      # largest frame the peer accepts (0: no limit)
    cdef uint64_t next_id             # request ids, unique on this socket
    cdef readonly uint64_t n_stale    # replies to requests no longer awaited
    cdef readonly uint64_t n_malformed  # frames that were not a valid reply
    cdef readonly uint64_t n_unauthenticated  # replies that failed the MAC checks
    cdef object __weakref__           # the client tracks its channels weakly


cdef class AsyncChannel:
    """One DEALER connected to one node, owned by one asyncio loop."""

    cdef object zsock                 # pyzmq DEALER, kept alive
    cdef void *sock                   # its libzmq socket
    cdef object monitor               # PAIR receiving its handshake events, or None
    cdef readonly str address         # the node's endpoint
    cdef bytes partition              # the address in UTF-8: replies' nonce partition
    cdef public size_t max_frame      # largest frame the peer accepts (0: no limit)
    cdef object loop                  # the event loop that owns it
    cdef int fd                       # ZMQ_FD, watched with add_reader
    cdef uint64_t next_id             # request ids, unique on this socket
    cdef dict pending                 # request id -> _Pending
    cdef list timers                  # heap of (deadline_at, request id)
    cdef object timer                 # loop handle firing at timers[0]
    cdef double timer_at              # when `timer` fires (monotonic)
    cdef object backlog               # deque of _Pending not yet sent (no room)
    cdef bint read_scheduled          # a drain is queued with call_soon
    cdef bint closed
    cdef readonly uint64_t n_stale    # replies to requests no longer awaited
    cdef readonly uint64_t n_malformed  # frames that were not a valid reply
    cdef readonly uint64_t n_unauthenticated  # replies that failed the MAC checks
    cdef object rpc_error             # zmicro.errors.RPCError

    cdef bint _send_now(self, _Pending p, const uint8_t *hbuf, size_t hlen,
                        object body, const zm_slice *b, MacKey key) except -1
    cdef bint _flush_one(self, _Pending p) except -1
    cdef int _flush_backlog(self) except -1
    cdef int _arm_timer(self, double deadline_at) except -1
    cdef int _check_events(self) except -1
    cdef int _schedule_read(self) except -1
    cdef int _drain(self) except -1
    cdef int _cancel_remote(self, uint64_t request_id, Keyring ring) except -1


cdef class _Pending:
    cdef uint64_t request_id
    cdef double deadline_at           # monotonic; 0 = none
    cdef object future
    cdef object decode                # body -> value
    cdef bytes header                 # written header (inline: the whole frame), until sent
    cdef object body                  # body object, until sent (not inline)
    cdef bint inline                  # the body rides in the header frame
    cdef bint sent
    cdef Keyring ring                 # checks the reply (None: unsigned)
    cdef list frames                  # a signed request's frames, until sent


cdef class ClientCore:
    """The call path of Client and AsyncClient (see client.pyx)."""

    cdef dict codecs                  # content type -> CodecEntry
    cdef CodecEntry default_codec     # the client's content type
    cdef readonly double timeout      # default seconds per call
    cdef object refresh               # (service, NodeSelector|None) -> NodeSelector
    cdef double cache_ttl             # seconds a service's node set is trusted
    cdef dict selectors               # service -> NodeSelector
    cdef dict expires                 # service -> monotonic expiry of its nodes
    cdef object make_socket           # (address, server_key) -> (DEALER, monitor)
    cdef object keyring_for           # service -> Keyring, or None (insecure)
    cdef object refresh_keys          # () -> None: reload rotated MAC keys
    cdef dict keyrings                # service -> Keyring or None
    cdef double keys_checked          # monotonic time of the last refresh_keys()
    cdef readonly size_t max_message_size  # bytes per frame the peers accept
    cdef bint is_async                # AsyncChannel (one loop) or Channel (per thread)
    cdef object local                 # threading.local: this thread's Channels
    cdef dict channels                # async: address -> AsyncChannel
    cdef object all_channels          # WeakSet of every sync Channel (close())
    cdef object loop                  # async: the loop it belongs to
    cdef bint closed

    cdef CodecEntry _codec(self, str content_type)
    cdef str _pick(self, str service)
    cdef Keyring _keyring(self, str service)
    cdef Channel _sync_channel(self, str address, object server_key)
    cdef AsyncChannel _async_channel(self, str address, object server_key)


cdef class NodeSelector:
    """Picks one node address per call: random, or a round robin that
    rotates across calls (its position survives between calls)."""

    cdef tuple _nodes                 # addresses
    cdef readonly int strategy        # SELECT_RANDOM or SELECT_ROUND_ROBIN
    cdef uint64_t position            # round-robin position
    cdef uint64_t rng                 # xorshift64* state

    cpdef str pick(self)
