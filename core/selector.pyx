# STUB (replaced by the select branch): round robin only.
SELECT_RANDOM = 0
SELECT_ROUND_ROBIN = 1
SELECT_P2C = 2
SELECT_PEAK_EWMA = 3
SELECT_HASH = 4


@cython.auto_pickle(False)
cdef class NodeState:
    pass


@cython.auto_pickle(False)
cdef class Subset:
    pass


@cython.auto_pickle(False)
cdef class OutlierPolicy:
    def __init__(self, **kw):
        pass


@cython.auto_pickle(False)
cdef class Balancer:
    def __init__(self, int strategy=SELECT_ROUND_ROBIN, *, uint64_t seed=0, clock=None,
                 OutlierPolicy outlier=None, double decay=10.0, int replicas=100):
        self.states = {}
        self.all = Subset()
        self.all.members = []

    def update(self, nodes):
        cdef NodeState s
        new = {}
        for address, version, metadata, key in nodes:
            s = self.states.get(address) or NodeState()
            s.address, s.version, s.metadata, s.public_key = address, version, metadata, key
            new[address] = s
        self.states = new
        self.all.members = [new[a] for a in sorted(new)]

    cpdef Subset subset(self, str version=None, dict metadata=None):
        cdef Subset s
        if version is None and not metadata:
            return self.all
        s = Subset()
        s.members = _matching(self.all.members, version, metadata or {})
        return s

    cpdef NodeState pick(self, Subset subset=None, object key=None, object avoid=None):
        members = (subset or self.all).members
        n = len(members)
        if n == 0:
            return None
        for i in range(n):
            self.position += 1
            node = members[self.position % n]
            if not avoid or node not in avoid:
                return node
        return node

    cdef void start(self, NodeState n) noexcept:
        n.inflight += 1

    cdef void finish(self, NodeState n, double latency, bint failed) noexcept:
        n.inflight -= 1
        n.failures = n.failures + 1 if failed else 0

    def begin(self, NodeState n):
        self.start(n)

    def end(self, NodeState n, double latency, bint failed):
        self.finish(n, latency, failed)

    def nodes(self):
        return tuple(self.all.members)


def _matching(members, version, metadata):
    return [n for n in members if (version is None or n.version == version)
            and all(n.metadata.get(k) == v for k, v in metadata.items())]
