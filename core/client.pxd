cdef class _Call
cdef class ClientCore


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
    cdef double last_used             # monotonic: the pool's idle TTL
    cdef int peer_state               # the monitor's last word: 1 connected, -1 lost, 0 none
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
    cdef int peer_state               # the monitor's last word: 1 connected, -1 lost, 0 none
    cdef double last_used             # monotonic: the pool's idle TTL

    cdef bint _send_now(self, _Pending p, const uint8_t *hbuf, size_t hlen,
                        object body, const zm_slice *b, MacKey key) except -1
    cdef bint _flush_one(self, _Pending p) except -1
    cdef int _flush_backlog(self) except -1
    cdef int _arm_timer(self, double deadline_at) except -1
    cdef int _check_events(self) except -1
    cdef int _schedule_read(self) except -1
    cdef int _drain(self) except -1
    cdef int _cancel_remote(self, uint64_t request_id, Keyring ring) except -1
    cdef int _fail(self, _Pending p, exc) except -1
    cdef int _succeed(self, _Pending p, value) except -1


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
    cdef double connect_by            # monotonic: unsent by then -> UNAVAILABLE (0: deadline)
    cdef _Call owner                  # node accounting and retries, or None
    cdef NodeState node               # the attempt's node (None: accounted for)
    cdef double started               # monotonic: when the attempt was sent
    cdef AsyncChannel channel         # with an owner: the channel it went on


cdef class RetryPolicy:
    """When a failed call goes again, and after how long (gRPC A6)."""
    cdef readonly int max_attempts
    cdef readonly double initial_backoff
    cdef readonly double max_backoff
    cdef readonly double multiplier
    cdef readonly double jitter
    cdef readonly frozenset retryable_codes   # of zmicro.errors.Code

    cdef double backoff(self, int retry, double u) noexcept
    cdef bint allows(self, exc, int attempts, bint idempotent)


cdef class RetryBudget:
    """A6 retry throttling: tokens per service."""
    cdef readonly double max_tokens
    cdef readonly double token_ratio
    cdef readonly double tokens

    cdef void success(self) noexcept
    cdef void failure(self) noexcept
    cdef bint allows(self) noexcept


cdef class HedgingPolicy:
    """Hedged calls for idempotent endpoints (gRPC A6)."""
    cdef readonly int max_attempts
    cdef readonly double delay
    cdef readonly frozenset non_fatal_codes


cdef class _Call:
    cdef ClientCore core
    cdef HedgingPolicy hedge          # None: not hedged
    cdef int live                     # attempts in flight
    cdef list attempts_live           # hedged: their _Pending
    cdef object future                # the caller's CallFuture
    cdef str service, endpoint, content_type
    cdef object body, decode, server_key, key
    cdef double deadline, started, delay
    cdef dict metadata
    cdef uint64_t trace_hi, trace_lo, span_id
    cdef Keyring ring
    cdef Balancer balancer            # None with a fixed address
    cdef Subset subset
    cdef NodeState node               # the latest attempt's node
    cdef set tried                    # nodes tried already
    cdef str address                  # a fixed address (no balancer)
    cdef RetryPolicy policy           # None: no retries
    cdef RetryBudget budget
    cdef bint idempotent
    cdef int attempts

    cdef int attempt_failed(self, exc) except -1
    cdef void _finish(self, _Pending p, bint failed) noexcept
    cdef int _failed_on(self, _Pending p, exc) except -1
    cdef int _cancel_others(self, _Pending winner) except -1
    cdef bint _send_next(self) except -1


cdef class PoolCounters:
    cdef public uint64_t opens, reuses, evictions, idle_closes


cdef class ChannelPool:
    """Channels by (address, server key): LRU bound, idle TTL, counters."""
    cdef object make                  # (address, server_key) -> channel
    cdef object entries               # OrderedDict key -> channel, LRU first
    cdef readonly size_t max_sockets
    cdef readonly double idle_ttl
    cdef double next_sweep
    cdef readonly PoolCounters counters
    cdef object __weakref__

    cdef object get(self, key, str address, object server_key, double now)
    cdef int _evict(self) except -1


cdef class ClientCore:
    """The call path of Client and AsyncClient (see client.pyx)."""

    cdef dict codecs                  # content type -> CodecEntry
    cdef CodecEntry default_codec     # the client's content type
    cdef readonly double timeout      # default seconds per call
    cdef object refresh               # service -> a new Balancer of its nodes
    cdef dict balancers               # service -> Balancer
    cdef object make_socket           # (address, server_key) -> (DEALER, monitor)
    cdef object keyring_for           # service -> Keyring, or None (insecure)
    cdef object refresh_keys          # () -> None: reload rotated MAC keys
    cdef dict keyrings                # service -> Keyring or None
    cdef double keys_checked          # monotonic time of the last refresh_keys()
    cdef readonly size_t max_message_size  # bytes per frame the peers accept
    cdef readonly RetryPolicy retry   # the client's policy (None: no retries)
    cdef readonly HedgingPolicy hedge  # the client's hedging of idempotent calls
    cdef tuple budget_args            # RetryBudget(max_tokens, token_ratio)
    cdef dict budgets                 # service -> RetryBudget
    cdef readonly double connect_timeout  # s an attempt may wait to connect (0: deadline)
    cdef size_t max_sockets
    cdef double idle_ttl
    cdef uint64_t rng                 # xorshift64* state (jitter)
    cdef bint is_async                # AsyncChannel (one loop) or Channel (per thread)
    cdef object local                 # threading.local: this thread's ChannelPool
    cdef object pools                 # WeakSet of the sync pools (stats)
    cdef ChannelPool apool            # async: the loop's pool
    cdef PoolCounters counters        # of every pool of this client
    cdef object all_channels          # WeakSet of every sync Channel (close())
    cdef object loop                  # async: the loop it belongs to
    cdef bint closed

    cdef double uniform(self) noexcept
    cdef CodecEntry _codec(self, str content_type)
    cdef Balancer _balancer(self, str service)
    cdef RetryBudget _budget(self, str service)
    cdef Keyring _keyring(self, str service)
    cdef ChannelPool _sync_pool(self)
    cdef Channel _sync_channel(self, str address, object server_key, double now)
    cdef AsyncChannel _async_channel(self, str address, object server_key, double now)
    cdef int send_async(self, _Call c) except -1
