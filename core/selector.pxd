cdef enum SelectStrategy:
    # Balancer.strategy (the Python constants SELECT_* carry the same values).
    SEL_RANDOM = 0
    SEL_ROUND_ROBIN = 1
    SEL_P2C = 2           # power of two choices, fewer in-flight calls wins
    SEL_PEAK_EWMA = 3     # power of two choices on peak-EWMA latency x load
    SEL_HASH = 4          # consistent hashing on the call's key
    SEL_COUNT = 5


cdef class NodeState:
    """One node of a Balancer and what the balancer knows of it. Lives as
    long as its address stays in the node set (Balancer.update)."""

    cdef readonly str address         # the node's endpoint
    cdef readonly str version         # its service version ("" if none)
    cdef readonly object metadata     # dict: its registry metadata
    cdef readonly str public_key      # its Curve server key (None: unknown)
    cdef readonly int inflight        # calls started and not yet finished
    cdef readonly double ewma         # peak-EWMA latency, seconds (at ewma_at)
    cdef double ewma_at               # clock time of the last latency sample
    cdef bint has_latency             # one latency sample seen (ewma is data)
    cdef readonly int failures        # consecutive failed calls
    cdef readonly int ejections       # times ejected so far
    cdef readonly double ejected_until  # clock time it comes back (0: not ejected)
    cdef readonly bint probation      # back from ejection, not yet succeeded
    cdef Py_ssize_t slot              # index in its balancer's node list (-1: removed)
    cdef uint64_t key_hash            # zm_hash64 of the address (ring points)

    @staticmethod
    cdef NodeState new(str address)
    cdef double cost(self, double now, double decay) noexcept


cdef class OutlierPolicy:
    """When a node is ejected, and for how long (plain settings)."""

    cdef readonly int consecutive_failures  # failures in a row that eject
    cdef readonly double base_ejection      # seconds of the first ejection
    cdef readonly double max_ejection       # cap on an ejection's seconds
    cdef readonly double max_ejected_share  # most nodes ejected at once (0..1)


cdef class Subset:
    """The nodes of a Balancer matching one filter (version, metadata),
    computed when the node set changes, with its own rotation and ring."""

    cdef readonly str version         # required version (None: any)
    cdef readonly object metadata     # dict of required metadata (None: any)
    cdef object key                   # the balancer's cache key of this filter
    cdef object owner                 # the Balancer that made it
    cdef uint64_t generation          # owner's generation when computed
    cdef list members                 # NodeState, in the node set's order
    cdef uint64_t position            # round-robin position (persists)
    cdef zm_ring_point *ring          # SEL_HASH: sorted points (NULL: not built)
    cdef size_t ring_len

    cdef bint matches(self, NodeState n)
    cdef int _recompute(self, list nodes, uint64_t generation, int replicas,
                        Subset source) except -1
    cdef int _build_ring(self, int replicas) except -1
    cdef int _filter_ring(self, Subset source) except -1


cdef class Balancer:
    """Picks a node per call over a node set updated in place (see
    selector.pyx); start()/finish() feed it each call's outcome."""

    cdef readonly int strategy        # SEL_*
    cdef uint64_t rng                 # xorshift64* state (never 0)
    cdef object clock                 # () -> monotonic seconds, or None (C monotonic)
    cdef readonly OutlierPolicy outlier
    cdef readonly double decay        # peak-EWMA decay time, seconds
    cdef readonly int replicas        # ring points per node (SEL_HASH)
    cdef list _nodes                  # NodeState in the registry's order
    cdef dict by_address              # address -> NodeState
    cdef object update_lock           # threading.Lock: one update() at a time
    cdef Subset all_nodes             # the unfiltered subset
    cdef dict subsets                 # filter key -> Subset (bounded, oldest dropped)
    cdef uint64_t generation          # bumped by every update()
    cdef list ejected                 # NodeState currently ejected
    cdef double next_return           # earliest ejected_until among `ejected`
    cdef uint64_t n_picks
    cdef uint64_t n_ejections         # ejections made
    cdef uint64_t n_ejections_refused # ejections the share cap prevented
    cdef uint64_t n_returns           # ejected nodes returned on probation

    cdef double now(self) except? -1.0
    cdef uint64_t _next(self) noexcept
    cdef Py_ssize_t _below(self, Py_ssize_t n) noexcept
    cdef int _apply(self, list records) except -1
    cdef int _forget_removed(self) except -1
    cdef Subset _new_subset(self, str version, dict metadata, object key)
    cdef int _expire(self, double now) except -1
    cdef int _eject(self, NodeState n, double now) except -1
    cpdef int retire(self, NodeState n) except -1
    cdef int _score(self, NodeState n, object avoid) except -1
    cdef NodeState _scan(self, list members, Py_ssize_t start, object avoid)
    cdef NodeState _pick_hash(self, Subset s, object key, object avoid)
    cdef NodeState _pick_two(self, list members, Py_ssize_t n, double now, object avoid)
    cpdef Subset subset(self, str version=*, dict metadata=*)
    cpdef NodeState lookup(self, str address)
    cpdef NodeState pick(self, Subset subset=*, object key=*, object avoid=*)
    cdef void start(self, NodeState n) noexcept
    cdef void finish(self, NodeState n, double latency, bint failed) noexcept
