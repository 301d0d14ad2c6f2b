# STUB (replaced by the select branch): the Balancer interface the client uses.
cdef class NodeState:
    cdef readonly str address
    cdef readonly str version
    cdef readonly object metadata
    cdef readonly str public_key
    cdef readonly int inflight
    cdef readonly int failures


cdef class Subset:
    cdef list members


cdef class OutlierPolicy:
    pass


cdef class Balancer:
    cdef dict states
    cdef Subset all
    cdef uint64_t position

    cpdef Subset subset(self, str version=*, dict metadata=*)
    cpdef NodeState pick(self, Subset subset=*, object key=*, object avoid=*)
    cdef void start(self, NodeState n) noexcept
    cdef void finish(self, NodeState n, double latency, bint failed) noexcept
