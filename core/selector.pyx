# selector.pyx - load balancing in the core: a Balancer picks one node per
# call over a node set that the registry cache updates in place.
#
# Strategies (SELECT_*):
#
#   RANDOM       uniform over the candidates;
#   ROUND_ROBIN  rotates across calls: the position lives in the Subset and
#                survives update() (go-micro's restarted at every lookup);
#   P2C          two distinct random candidates, fewer in-flight calls wins,
#                ties broken at random;
#   PEAK_EWMA    two random candidates, lower cost wins (Finagle's PeakEwma):
#                cost = latency EWMA x (in-flight + 1); the EWMA decays with
#                time constant `decay` but jumps to a new peak at once; a node
#                with no sample yet costs 0 when idle (so it gets tried) and a
#                large penalty while its first call is outstanding;
#   HASH         consistent hashing of the call's key on a ring with
#                `replicas` points per node (src/zm_hash.c): adding a node
#                moves ~1/n of the keys, removing one moves only its keys; no
#                key (None) behaves like RANDOM.
#
# Filters: subset(version, metadata) is computed once per node set and
# cached; update() recomputes every cached subset (and its ring) at once, so
# a pick costs the same with or without a filter.
#
# Outlier ejection (OutlierPolicy): `consecutive_failures` failures in a row
# eject a node for base_ejection x (its number of ejections), at most
# max_ejection; no more than max_ejected_share of the nodes are ejected at
# once (a node that would exceed it stays in). When its time is up it comes
# back on probation: its next failure ejects it again at once (for longer),
# a success ends probation. Ejected nodes are skipped unless every candidate
# is. The clock is read only while some node is ejected, by PEAK_EWMA picks,
# and when a call finishes (its latency feeds the EWMA).
#
# Skipping (ejected nodes, and the `avoid` of a retry) tries a few more
# candidates the strategy's way, then scans the candidates in order from a
# strategy-chosen start for the best one: a healthy node not avoided, else a
# healthy avoided one, else an ejected one. The scan is O(n) but only happens
# when most candidates are unusable.
#
# Threads: a Balancer may be shared by a client's threads. Everything runs
# with the GIL held, and pick(), start() and finish() call no Python code
# (but a Python `clock`, read before anything else), so no other thread
# runs in the middle of one. update() runs one at a time (a lock) and swaps
# each subset's members and ring together, without calling Python code in
# between.
#
# Uses: context.pyx (monotonic), src/zm_hash.h (the hash ring).

from libc.math cimport exp, isfinite, INFINITY
from libc.stdlib cimport malloc, free
from libc.stdint cimport int32_t
from cpython.list cimport PyList_GET_ITEM, PyList_GET_SIZE
import threading as _threading

SELECT_RANDOM = SEL_RANDOM
SELECT_ROUND_ROBIN = SEL_ROUND_ROBIN
SELECT_P2C = SEL_P2C
SELECT_PEAK_EWMA = SEL_PEAK_EWMA
SELECT_HASH = SEL_HASH
SELECT_NAMES = ("random", "round_robin", "p2c", "peak_ewma", "hash")

DEFAULT_REPLICAS = 64
cdef int MAX_REPLICAS = 4096
cdef Py_ssize_t MAX_SUBSETS = 256  # cached filters; the oldest is dropped
cdef int TRIES = 4                 # strategy-style retries before the scan
cdef int RING_WALK = 64            # ring points walked before the scan
cdef double PENALTY = 1.0e9        # PEAK_EWMA: cost of a node with no sample, busy
cdef object _MISSING = object()


@cython.auto_pickle(False)
cdef class NodeState:
    """One node of a Balancer and the balancer's view of it.

    Read-only from Python. The same object stands for the node as long as
    its address stays in the node set: ``inflight``, ``ewma``, ``failures``
    and ejection state carry over ``Balancer.update()``; its ``version``,
    ``metadata`` and ``public_key`` are refreshed from the new record.
    ``ejected_until`` is a clock time (0 when not ejected)."""

    def __init__(self):
        raise TypeError("NodeState objects are made by Balancer.update()")

    @staticmethod
    cdef NodeState new(str address):
        cdef NodeState n = NodeState.__new__(NodeState)
        cdef Py_ssize_t length = 0
        cdef const char *utf8 = PyUnicode_AsUTF8AndSize(address, &length)
        n.address = address
        n.key_hash = zm_hash64(utf8, <size_t>length)
        n.slot = -1
        return n

    @property
    def ejected(self):
        """True while the node is ejected."""
        return self.ejected_until != 0.0

    cdef double cost(self, double now, double decay) noexcept:
        """PEAK_EWMA's load estimate at `now` (lower is better)."""
        cdef double dt, e
        if not self.has_latency:
            return 0.0 if self.inflight <= 0 else PENALTY + self.inflight
        dt = now - self.ewma_at
        e = self.ewma * exp(-dt / decay) if dt > 0.0 else self.ewma
        return e * (self.inflight + 1)

    def __repr__(self):
        return (f"<NodeState {self.address!r} version={self.version!r} "
                f"inflight={self.inflight} failures={self.failures}"
                f"{' ejected' if self.ejected_until != 0.0 else ''}"
                f"{' probation' if self.probation else ''}>")


cdef class OutlierPolicy:
    """When a Balancer ejects a node, and for how long.

    ``consecutive_failures`` (>= 1) failures in a row eject a node for
    ``base_ejection`` seconds times its number of ejections, at most
    ``max_ejection`` (>= base_ejection); at most ``max_ejected_share``
    (0..1) of the nodes are ejected at once: 0 turns ejection off. Bad
    values raise ValueError naming the field."""

    def __init__(self, *, int consecutive_failures=5, double base_ejection=30.0,
                 double max_ejection=300.0, double max_ejected_share=0.5):
        if consecutive_failures < 1:
            raise ValueError(f"consecutive_failures: must be >= 1, got {consecutive_failures}")
        if not (isfinite(base_ejection) and base_ejection > 0.0):
            raise ValueError(f"base_ejection: must be a finite number of seconds > 0, "
                             f"got {base_ejection!r}")
        if not (isfinite(max_ejection) and max_ejection >= base_ejection):
            raise ValueError(f"max_ejection: must be finite and >= base_ejection "
                             f"({base_ejection!r}), got {max_ejection!r}")
        if not (0.0 <= max_ejected_share <= 1.0):
            raise ValueError(f"max_ejected_share: must be within 0..1, got {max_ejected_share!r}")
        self.consecutive_failures = consecutive_failures
        self.base_ejection = base_ejection
        self.max_ejection = max_ejection
        self.max_ejected_share = max_ejected_share

    def __repr__(self):
        return (f"OutlierPolicy(consecutive_failures={self.consecutive_failures}, "
                f"base_ejection={self.base_ejection!r}, max_ejection={self.max_ejection!r}, "
                f"max_ejected_share={self.max_ejected_share!r})")


@cython.auto_pickle(False)
cdef class Subset:
    """The nodes of one Balancer that match a filter: ``version`` (None: any)
    and every item of ``metadata`` (None: no condition). Made by
    ``Balancer.subset()``, recomputed by ``Balancer.update()``; keeps its own
    round-robin position and hash ring. ``len()`` and ``nodes()`` show the
    current members."""

    def __init__(self):
        raise TypeError("Subset objects are made by Balancer.subset()")

    def __dealloc__(self):
        free(self.ring)
        self.ring = NULL

    def __len__(self):
        return len(self.members)

    def nodes(self):
        """The matching nodes (NodeState), in the node set's order."""
        return tuple(self.members)

    cdef bint matches(self, NodeState n):
        if self.version is not None and n.version != self.version:
            return False
        if self.metadata is not None:
            for k, v in (<dict>self.metadata).items():
                if (<dict>n.metadata).get(k, _MISSING) != v:
                    return False
        return True

    cdef int _recompute(self, list nodes, uint64_t generation, int replicas,
                        Subset source) except -1:
        """Members from `nodes`; with SEL_HASH (`source` not None: the
        balancer's unfiltered subset, already recomputed) the ring too."""
        cdef NodeState n
        self.members = [n for n in nodes if self.matches(n)]
        self.generation = generation
        free(self.ring)
        self.ring = NULL
        self.ring_len = 0
        if source is self:
            self._build_ring(replicas)
        elif source is not None:
            self._filter_ring(source)
        return 0

    cdef int _build_ring(self, int replicas) except -1:
        cdef Py_ssize_t count = len(self.members), i
        cdef size_t total = <size_t>count * <size_t>replicas, k = 0
        cdef uint32_t r
        cdef NodeState n
        free(self.ring)
        self.ring = NULL
        self.ring_len = 0
        if count == 0:
            return 0
        self.ring = <zm_ring_point *>malloc(total * sizeof(zm_ring_point))
        if self.ring == NULL:
            raise MemoryError()
        for i in range(count):
            n = <NodeState>self.members[i]
            for r in range(<uint32_t>replicas):
                self.ring[k].point = zm_ring_vpoint(n.key_hash, r)
                self.ring[k].member = <uint32_t>i
                self.ring[k].replica = r
                k += 1
        if zm_ring_sort(self.ring, total) != 0:
            free(self.ring)
            self.ring = NULL
            raise MemoryError()
        self.ring_len = total
        return 0

    cdef int _filter_ring(self, Subset source) except -1:
        """This subset's ring: `source`'s (a superset, in the same order)
        without the points of nodes not in this subset; no sort needed."""
        cdef Py_ssize_t count = len(source.members), i, j = 0
        cdef size_t k, out = 0
        cdef int32_t *index
        if source.ring == NULL or not self.members:
            return 0
        index = <int32_t *>malloc(<size_t>count * sizeof(int32_t))
        self.ring = <zm_ring_point *>malloc(
            source.ring_len / <size_t>count * <size_t>len(self.members) * sizeof(zm_ring_point))
        if index == NULL or self.ring == NULL:
            free(index)
            free(self.ring)
            self.ring = NULL
            raise MemoryError()
        for i in range(count):
            if j < len(self.members) and self.members[j] is source.members[i]:
                index[i] = <int32_t>j
                j += 1
            else:
                index[i] = -1
        for k in range(source.ring_len):
            if index[source.ring[k].member] >= 0:
                self.ring[out] = source.ring[k]
                self.ring[out].member = <uint32_t>index[source.ring[k].member]
                out += 1
        free(index)
        self.ring_len = out
        if out != source.ring_len / <size_t>count * <size_t>len(self.members):
            # `source` was not this node set's (an update() running in
            # another thread): build the ring from the members instead
            self._build_ring(<int>(source.ring_len / <size_t>count))
        return 0

    def __repr__(self):
        return (f"<Subset version={self.version!r} metadata={self.metadata!r} "
                f"nodes={len(self.members)}>")


cdef inline object _check_avoid(object avoid):
    if avoid is None:
        return None
    if not isinstance(avoid, (set, frozenset, tuple, list)):
        raise TypeError(f"avoid: a set or tuple of NodeState (or None), "
                        f"not {type(avoid).__name__}")
    return avoid if len(avoid) else None


@cython.auto_pickle(False)
cdef class Balancer:
    """Picks a node per call, in the core (see the top of selector.pyx).

    ``strategy``: one of SELECT_RANDOM, SELECT_ROUND_ROBIN, SELECT_P2C,
    SELECT_PEAK_EWMA, SELECT_HASH. ``seed``: the random generator's seed
    (0: from the clock). ``clock``: a callable returning monotonic seconds
    (None: the C monotonic clock, same as time.monotonic). ``outlier``: the
    OutlierPolicy (None: the defaults). ``decay``: PEAK_EWMA's time constant
    in seconds. ``replicas``: ring points per node for SELECT_HASH.

    update(nodes) sets the node set; pick() chooses; start(n) / finish(n,
    latency, failed) (begin/end from Python) bracket every call sent to the
    chosen node. Bad arguments raise ValueError or TypeError naming them."""

    def __init__(self, int strategy=SEL_ROUND_ROBIN, *, uint64_t seed=0, clock=None,
                 OutlierPolicy outlier=None, double decay=10.0,
                 int replicas=DEFAULT_REPLICAS):
        if not 0 <= strategy < SEL_COUNT:
            raise ValueError(f"strategy: unknown selector strategy {strategy} "
                             f"(SELECT_RANDOM .. SELECT_HASH)")
        if clock is not None and not callable(clock):
            raise TypeError(f"clock: a callable returning seconds, not {type(clock).__name__}")
        if not (isfinite(decay) and decay > 0.0):
            raise ValueError(f"decay: must be a finite number of seconds > 0, got {decay!r}")
        if not 1 <= replicas <= MAX_REPLICAS:
            raise ValueError(f"replicas: must be within 1..{MAX_REPLICAS}, got {replicas}")
        self.strategy = strategy
        self.clock = clock
        self.outlier = OutlierPolicy() if outlier is None else outlier
        self.decay = decay
        self.replicas = replicas
        if seed == 0:
            seed = <uint64_t>(monotonic() * 1e9) ^ <uint64_t><size_t><void *>self
        self.rng = zm_hash_mix64(seed) or 1
        self._nodes = []
        self.by_address = {}
        self.subsets = {}
        self.ejected = []
        self.next_return = INFINITY
        self.update_lock = _threading.Lock()
        self.all_nodes = self._new_subset(None, None, None)

    # -- node set ---------------------------------------------------------

    def update(self, nodes):
        """Replace the node set with `nodes`, an iterable of (address,
        version, metadata, public_key): address a non-empty str, version a
        str or None, metadata a dict or None, public_key a str or None.
        An address listed twice is one node, with the later record's fields
        at the earlier one's place. Addresses that stay keep their NodeState
        (in-flight counts, EWMA, failures, ejection); round-robin positions
        persist; every cached subset is recomputed. On bad input nothing changes (ValueError or
        TypeError naming the record and field)."""
        with self.update_lock:  # one update at a time; picks go on meanwhile
            self._update(nodes)

    def _update(self, nodes):
        cdef list records = []
        cdef dict seen = {}
        cdef Py_ssize_t i = 0
        for item in nodes:
            if not isinstance(item, (tuple, list)) or len(item) != 4:
                raise ValueError(f"nodes[{i}]: expected (address, version, metadata, "
                                 f"public_key), got a {type(item).__name__}"
                                 + (f" of {len(item)}" if isinstance(item, (tuple, list)) else ""))
            address, version, metadata, public_key = item
            if not isinstance(address, str) or not address:
                raise ValueError(f"nodes[{i}].address: a non-empty str, got {address!r}"
                                 if isinstance(address, str) else
                                 f"nodes[{i}].address: a non-empty str, not {type(address).__name__}")
            try:
                PyUnicode_AsUTF8AndSize(address, NULL)
            except UnicodeEncodeError:
                raise ValueError(f"nodes[{i}].address: not encodable as UTF-8") from None
            if version is None:
                version = ""
            elif not isinstance(version, str):
                raise TypeError(f"nodes[{i}].version: a str or None, not {type(version).__name__}")
            if metadata is None:
                metadata = {}
            elif isinstance(metadata, dict):
                metadata = dict(metadata)
            else:
                raise TypeError(f"nodes[{i}].metadata: a dict or None, not {type(metadata).__name__}")
            if public_key is not None and not isinstance(public_key, str):
                raise TypeError(f"nodes[{i}].public_key: a str or None, "
                                f"not {type(public_key).__name__}")
            record = (address, version, metadata, public_key)
            at = seen.get(address)
            if at is None:
                seen[address] = len(records)
                records.append(record)
            else:  # the same node listed twice (re-registered): the later one wins
                records[<Py_ssize_t>at] = record
            i += 1
        self._apply(records)

    cdef int _apply(self, list records) except -1:
        cdef list fresh = []
        cdef dict by_address = {}
        cdef NodeState n
        cdef Subset s
        for address, version, metadata, public_key in records:
            n = self.by_address.get(address)
            if n is None:
                n = NodeState.new(address)
            n.version = version
            n.metadata = metadata
            n.public_key = public_key
            n.slot = len(fresh)
            fresh.append(n)
            by_address[address] = n
        for n in self._nodes:
            if by_address.get(n.address) is not n:
                n.slot = -1  # gone: its late finish() changes nothing here
        self._nodes = fresh
        self.by_address = by_address
        self._forget_removed()
        # Subsets get the new generation before the balancer does, so a pick
        # in between (another thread, while metadata comparisons run Python
        # code) does not recompute them too; a subset made meanwhile has the
        # old one and is recomputed on use.
        cdef uint64_t generation = self.generation + 1
        cdef Subset source = self.all_nodes if self.strategy == SEL_HASH else None
        self.all_nodes._recompute(fresh, generation, self.replicas, source)
        for s in list(self.subsets.values()):
            s._recompute(fresh, generation, self.replicas, source)
        self.generation = generation
        return 0

    cdef int _forget_removed(self) except -1:
        cdef NodeState n
        cdef list keep = []
        cdef double nxt = INFINITY
        for n in self.ejected:
            if n.slot >= 0:
                keep.append(n)
                if n.ejected_until < nxt:
                    nxt = n.ejected_until
        self.ejected = keep
        self.next_return = nxt
        return 0

    def nodes(self):
        """The nodes (NodeState), in the order update() gave them."""
        return tuple(self._nodes)

    cpdef NodeState lookup(self, str address):
        """The NodeState of `address`, or None when it is not in the set
        (for a call made to an explicit address)."""
        return self.by_address.get(address)

    def __len__(self):
        return len(self._nodes)

    cdef Subset _new_subset(self, str version, dict metadata, object key):
        cdef Subset s = Subset.__new__(Subset)
        s.version = version
        s.metadata = None if metadata is None else dict(metadata)
        s.key = key
        s.owner = self
        s.members = []
        s.position = self._next()  # clients do not all start on one node
        return s

    cpdef Subset subset(self, str version=None, dict metadata=None):
        """The nodes whose version is `version` (None: any) and whose
        metadata has every item of `metadata` (None or empty: no
        condition). Cached per filter and recomputed by update(), so the
        call costs a dict lookup; metadata values must be hashable."""
        cdef Subset s
        key = None
        if not metadata:
            if version is None:
                return self.all_nodes
            s = self.subsets.get(version)
            key = version
        else:
            try:
                if len(metadata) == 1:  # the common case, without a frozenset
                    for k, v in metadata.items():
                        key = (version, k, v)
                else:
                    key = (version, frozenset(metadata.items()))
                s = self.subsets.get(key)
            except TypeError:
                raise TypeError("metadata: filter values must be hashable") from None
        if s is not None:
            return s
        s = self._new_subset(version, metadata if metadata else None, key)
        s._recompute(self._nodes, self.generation, self.replicas,
                     self.all_nodes if self.strategy == SEL_HASH else None)
        if len(self.subsets) >= MAX_SUBSETS:
            del self.subsets[next(iter(self.subsets))]  # still usable: pick() recomputes it
        self.subsets[key] = s
        return s

    # -- picking ------------------------------------------------------------

    cdef double now(self) except? -1.0:
        if self.clock is None:
            return monotonic()
        return <double>self.clock()

    cdef uint64_t _next(self) noexcept:
        cdef uint64_t x = self.rng  # xorshift64* (Vigna)
        x ^= x >> 12
        x ^= x << 25
        x ^= x >> 27
        self.rng = x
        return x * 2685821657736338717ULL

    cdef Py_ssize_t _below(self, Py_ssize_t n) noexcept:
        """Uniform in [0, n) for 0 < n < 2**32 (bias below 2**-32 n)."""
        return <Py_ssize_t>(((self._next() >> 32) * <uint64_t>n) >> 32)

    cdef int _score(self, NodeState n, object avoid) except -1:
        """0: usable; 1: avoided by this call; 2: ejected; 3: both."""
        cdef int s = 2 if n.ejected_until != 0.0 else 0
        if avoid is not None and n in avoid:
            s += 1
        return s

    cdef NodeState _scan(self, list members, Py_ssize_t start, object avoid):
        cdef Py_ssize_t n = PyList_GET_SIZE(members), k
        cdef NodeState node, best = None
        cdef int score, best_score = 4
        for k in range(n):
            node = <NodeState>PyList_GET_ITEM(members, (start + k) % n)
            score = self._score(node, avoid)
            if score == 0:
                return node
            if score < best_score:
                best, best_score = node, score
        return best

    cdef NodeState _pick_two(self, list members, Py_ssize_t n, double now, object avoid):
        cdef Py_ssize_t i, j
        cdef int t, sa, sb
        cdef double ca, cb
        cdef NodeState a, b
        cdef bint check = avoid is not None or len(self.ejected) > 0
        for t in range(TRIES):
            i = self._below(n)
            j = self._below(n - 1)
            if j >= i:
                j += 1
            a = <NodeState>PyList_GET_ITEM(members, i)
            b = <NodeState>PyList_GET_ITEM(members, j)
            if check:
                sa = self._score(a, avoid)
                sb = self._score(b, avoid)
                if sa and sb:
                    continue
                if sa:
                    return b
                if sb:
                    return a
            if self.strategy == SEL_P2C:
                ca = a.inflight
                cb = b.inflight
            else:
                ca = a.cost(now, self.decay)
                cb = b.cost(now, self.decay)
            if ca < cb:
                return a
            if cb < ca:
                return b
            return a if self._next() >> 63 else b
        return self._scan(members, self._below(n), avoid)

    cdef NodeState _pick_hash(self, Subset s, object key, object avoid):
        cdef const char *data
        cdef Py_ssize_t length = 0
        cdef size_t idx, k, walk
        cdef NodeState node
        cdef list members = s.members
        _key_bytes(key, &data, &length, "key: a str or bytes for SELECT_HASH")
        if s.ring_len == 0:  # not built yet
            s._build_ring(self.replicas)
        idx = zm_ring_find(s.ring, s.ring_len, zm_hash64(data, <size_t>length))
        node = <NodeState>PyList_GET_ITEM(members, s.ring[idx].member)
        if (avoid is None and not self.ejected) or self._score(node, avoid) == 0:
            return node
        walk = s.ring_len if s.ring_len < <size_t>RING_WALK else <size_t>RING_WALK
        for k in range(1, walk):
            node = <NodeState>PyList_GET_ITEM(members, s.ring[(idx + k) % s.ring_len].member)
            if self._score(node, avoid) == 0:
                return node
        return self._scan(members, s.ring[idx].member, avoid)

    cpdef NodeState pick(self, Subset subset=None, object key=None, object avoid=None):
        """The node for the next call: from `subset` (None: all nodes), by
        the strategy; `key` (str or bytes) for SELECT_HASH; `avoid` (None,
        or a set/tuple of NodeState this call already tried) makes a retry
        go elsewhere when another node exists. Ejected nodes are skipped
        unless every candidate is ejected. None when there is no node."""
        cdef Subset s = self.all_nodes if subset is None else subset
        cdef list members
        cdef Py_ssize_t n, i
        cdef int t
        cdef double now = 0.0
        cdef NodeState node
        cdef bint check
        if s.owner is not self:
            raise ValueError("subset: made by another Balancer")
        avoid = _check_avoid(avoid)
        # The clock first: a Python clock may let another thread run (and
        # update() the node set); from here on nothing calls Python code, so
        # members and ring are read as one consistent pair.
        if self.strategy == SEL_PEAK_EWMA or self.ejected:
            now = self.now()
            if self.ejected and now >= self.next_return:
                self._expire(now)
        if s.generation < self.generation:  # dropped from the cache since
            s._recompute(self._nodes, self.generation, self.replicas,
                         self.all_nodes if self.strategy == SEL_HASH else None)
        members = s.members
        n = PyList_GET_SIZE(members)
        if n == 0:
            return None
        self.n_picks += 1
        check = avoid is not None or len(self.ejected) > 0
        if self.strategy == SEL_ROUND_ROBIN:
            for t in range(TRIES):
                i = <Py_ssize_t>(s.position % <uint64_t>n)
                s.position += 1
                node = <NodeState>PyList_GET_ITEM(members, i)
                if not check or self._score(node, avoid) == 0:
                    return node
            return self._scan(members, <Py_ssize_t>(s.position % <uint64_t>n), avoid)
        if self.strategy == SEL_HASH and key is not None:
            return self._pick_hash(s, key, avoid)
        if (self.strategy == SEL_P2C or self.strategy == SEL_PEAK_EWMA) and n > 1:
            return self._pick_two(members, n, now, avoid)
        for t in range(TRIES):  # RANDOM, HASH without a key, one node
            node = <NodeState>PyList_GET_ITEM(members, self._below(n))
            if not check or self._score(node, avoid) == 0:
                return node
        return self._scan(members, self._below(n), avoid)

    # -- outcomes -------------------------------------------------------------

    cdef void start(self, NodeState n) noexcept:
        """A call is sent to `n`."""
        if n is not None:
            n.inflight += 1

    cdef void finish(self, NodeState n, double latency, bint failed) noexcept:
        """The call sent to `n` ended after `latency` seconds, `failed` or
        not (a failed call's latency feeds the EWMA too; a latency that is
        negative, NaN or infinite does not). A node no longer in the set
        only has its in-flight count and EWMA updated."""
        cdef double now, w
        if n is None:
            return
        if n.inflight > 0:
            n.inflight -= 1
        now = self.now()
        if isfinite(latency) and latency >= 0.0:
            if not n.has_latency:
                n.ewma = latency
                n.has_latency = True
            elif latency > n.ewma:
                n.ewma = latency  # peak: jump up at once
            else:
                w = exp(-(now - n.ewma_at) / self.decay) if now > n.ewma_at else 1.0
                n.ewma = n.ewma * w + latency * (1.0 - w)
            n.ewma_at = now
        if n.slot < 0 or n.slot >= len(self._nodes) or self._nodes[n.slot] is not n:
            return
        if not failed:
            n.failures = 0
            n.probation = False
            return
        n.failures += 1
        if n.ejected_until != 0.0:
            return  # sent before it was ejected
        if n.probation or n.failures >= self.outlier.consecutive_failures:
            self._eject(n, now)

    cdef int _expire(self, double now) except -1:
        """Bring back, on probation, the ejected nodes whose time is up."""
        cdef NodeState n
        cdef list keep = []
        cdef double nxt = INFINITY
        for n in self.ejected:
            if n.ejected_until <= now:
                n.ejected_until = 0.0
                n.probation = True
                n.failures = 0
                self.n_returns += 1
            else:
                keep.append(n)
                if n.ejected_until < nxt:
                    nxt = n.ejected_until
        self.ejected = keep
        self.next_return = nxt
        return 0

    cdef int _eject(self, NodeState n, double now) except -1:
        cdef double seconds
        if self.ejected and now >= self.next_return:
            self._expire(now)
        if len(self.ejected) + 1 > self.outlier.max_ejected_share * len(self._nodes):
            self.n_ejections_refused += 1
            return 0
        n.ejections += 1
        seconds = self.outlier.base_ejection * n.ejections
        if seconds > self.outlier.max_ejection:
            seconds = self.outlier.max_ejection
        n.ejected_until = now + seconds
        if n.ejected_until == 0.0:  # 0 means "not ejected"
            n.ejected_until = 5e-324
        n.probation = False
        self.ejected.append(n)
        if n.ejected_until < self.next_return:
            self.next_return = n.ejected_until
        self.n_ejections += 1
        return 0

    cpdef int retire(self, NodeState n) except -1:
        """`n` said it is going away (it refused a call as not processed:
        draining, or no longer this service): eject it now, within
        max_ejected_share, instead of after consecutive failures."""
        if n is None or n.ejected_until != 0.0:
            return 0
        if n.slot < 0 or n.slot >= len(self._nodes) or self._nodes[n.slot] is not n:
            return 0
        return self._eject(n, self.now())

    # -- Python wrappers and introspection ----------------------------------

    def begin(self, NodeState n not None):
        """start(n), from Python: a call is sent to `n`."""
        self.start(n)

    def end(self, NodeState n not None, double latency, bint failed=False):
        """finish(n, latency, failed), from Python; `latency` in seconds,
        finite and >= 0 (ValueError otherwise)."""
        if not (isfinite(latency) and latency >= 0.0):
            raise ValueError(f"latency: must be finite seconds >= 0, got {latency!r}")
        if self.clock is not None:
            self.now()  # let a failing clock raise here rather than be swallowed
        self.finish(n, latency, failed)

    def stats(self):
        """Counters: strategy, nodes, ejected, probation, inflight (sum),
        subsets (cached filters), picks, ejections, ejections_refused (by
        the share cap), returns (from ejection)."""
        cdef NodeState n
        return {
            "strategy": SELECT_NAMES[self.strategy],
            "nodes": len(self._nodes),
            "ejected": len(self.ejected),
            "probation": sum(1 for n in self._nodes if n.probation),
            "inflight": sum(n.inflight for n in self._nodes),
            "subsets": len(self.subsets),
            "picks": self.n_picks,
            "ejections": self.n_ejections,
            "ejections_refused": self.n_ejections_refused,
            "returns": self.n_returns,
        }

    def __repr__(self):
        return (f"<Balancer {SELECT_NAMES[self.strategy]} nodes={len(self._nodes)} "
                f"ejected={len(self.ejected)}>")


def _hash64(data):
    """zm_hash64 of `data` (bytes, or a str as UTF-8): the key hash of
    SELECT_HASH, exposed for tests."""
    cdef const char *p
    cdef Py_ssize_t length = 0
    _key_bytes(data, &p, &length, "data: str or bytes")
    return zm_hash64(p, <size_t>length)


cdef int _key_bytes(object key, const char **data, Py_ssize_t *length,
                    str what) except -1:
    """Point *data at the bytes of `key` (a str as UTF-8, or bytes)."""
    if isinstance(key, str):
        data[0] = PyUnicode_AsUTF8AndSize(key, length)
    elif isinstance(key, bytes):
        data[0] = PyBytes_AS_STRING(key)
        length[0] = PyBytes_GET_SIZE(key)
    else:
        raise TypeError(f"{what}, not {type(key).__name__}")
    return 0
