cdef class _Call:
    """An AsyncClient call across its attempts (retries, hedging)."""
    cdef ClientCore core
    cdef Request rq                   # what every attempt sends
    cdef HedgingPolicy hedge          # None: not hedged
    cdef int live                     # attempts in flight
    cdef list attempts_live           # hedged: their _Pending
    cdef object future                # the caller's CallFuture
    cdef object key                   # the hash selector's key
    cdef Balancer balancer            # None with a fixed address
    cdef Subset subset
    cdef NodeState node               # the latest attempt's node
    cdef set tried                    # nodes tried already
    cdef str address                  # a fixed address (no balancer)
    cdef int attempts
    cdef double delay                 # before the next retry

    @staticmethod
    cdef _Call after_first(_Pending p)
    cdef void _finish(self, _Pending p, object exc) noexcept
    cdef int failed(self, _Pending p, exc) except -1
    cdef int succeeded(self, _Pending p) except -1
    cdef int abandon(self, _Pending p) except -1
    cdef int _cancel_others(self, _Pending winner) except -1
    cdef bint _send_next(self) except -1


cdef class ClientCore:
    """The call path of Client and AsyncClient (see client.pyx)."""

    cdef dict codecs                  # content type -> CodecEntry
    cdef CodecEntry default_codec     # the client's content type
    cdef readonly double timeout      # default seconds per call
    cdef object refresh               # service -> a new Balancer of its nodes
    cdef dict balancers               # service -> Balancer
    cdef object make_socket           # (address, server_key) -> (DEALER, monitor)
    cdef KeySource keys               # MAC keyrings (None: insecure)
    cdef readonly size_t max_message_size  # bytes per frame the peers accept
    cdef readonly RetryPolicy retry   # the client's policy (None: no retries)
    cdef readonly HedgingPolicy hedge  # the client's hedging of idempotent calls
    cdef tuple budget_args            # RetryBudget(max_tokens, token_ratio)
    cdef dict budgets                 # service -> RetryBudget
    cdef readonly double connect_timeout  # s an attempt may wait to connect (0: deadline)
    cdef readonly bint wait_for_ready # calls wait for refusing nodes (unless they say)
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
    cdef ChannelPool _sync_pool(self)
    cdef Channel _sync_channel(self, str address, object server_key, double now)
    cdef AsyncChannel _async_channel(self, str address, object server_key, double now)
    cdef double _connect_by(self, Request rq, double now) noexcept
    cdef int send_async(self, _Call c) except -1
    cdef object deliver_event(self, str address, bytes frame, bytes event_id, str topic,
                              double timeout, object server_key, Completion sink=*)
