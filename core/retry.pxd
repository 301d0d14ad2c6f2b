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


cdef double retry_after(RetryPolicy policy, RetryBudget budget, exc, int attempts,
                        bint idempotent, double deadline, double now, double u) except -2
cdef int attempt_done(Balancer balancer, NodeState node, double elapsed, exc) except -1
