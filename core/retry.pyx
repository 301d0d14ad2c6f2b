# retry.pyx - when a failed attempt goes again (gRPC A6): the policy, the
# retry budget, hedging, and the one decision both clients make after a
# failed attempt (retry_after), with the node accounting that goes with it
# (attempt_done).
#
# Uses: errors.pyx (_RPCError, _Code, is_unsent, is_lost, TransportError),
# selector.pyx (Balancer, NodeState).

#: Codes that count against a node for outlier ejection: the node (or the
#: way to it) failed, not the caller's request.
cdef frozenset NODE_FAILURES = frozenset({_Code.UNAVAILABLE, _Code.DEADLINE_EXCEEDED,
                                          _Code.INTERNAL, _Code.UNKNOWN, _Code.DATA_LOSS})


cdef inline bint _retiring(exc):
    """A node's refusal saying it will not process calls (draining, or a
    stale address): UNAVAILABLE flagged NOT_PROCESSED by the server."""
    return (isinstance(exc, _RPCError) and exc.code == C_UNAVAILABLE
            and exc.processed is False and not is_unsent(exc))


cdef inline bint _node_failed(exc):
    if isinstance(exc, _RPCError):
        return exc.code in NODE_FAILURES
    return isinstance(exc, TransportError)


cdef inline bint _costs_budget(RetryPolicy policy, exc):
    """Attempts that never left the client cost no token (gRPC's
    transparent retries): no server saw them. Nor do attempts whose
    connection dropped before their answer came: the budget guards a
    service from callers' retries while it answers with failures
    (overload), and a drop is no answer. A drop fails only the calls in
    flight on that one connection, once, and attempts to a node whose
    connection is down fail unsent; so these retries are bounded by the
    calls in flight, not a storm; and charged, the losses of several
    threads at once (each has its own connection) drained the budget
    before any success could refill it. Whether such an attempt goes
    again at all is still the policy's call: only idempotent ones do (a
    handler may have run)."""
    return (isinstance(exc, _RPCError) and exc.code in policy.retryable_codes
            and not is_unsent(exc) and not is_lost(exc))


cdef double retry_after(RetryPolicy policy, RetryBudget budget, exc, int attempts,
                        bint idempotent, double deadline, double now, double u) except -2:
    """Seconds to wait before the next attempt of a call whose attempt
    number `attempts` failed with `exc` at `now`, or -1 when it does not go
    again: no policy, the policy or the budget says no, or the backoff
    would end past the `deadline` (0: none). Charges the failure to the
    service's `budget`. `u` in [0, 1) spreads the backoff (jitter)."""
    cdef double delay
    if policy is None:
        return -1
    if _costs_budget(policy, exc):
        budget.failure()
    if not policy.allows(exc, attempts, idempotent) or not budget.allows():
        return -1
    delay = policy.backoff(attempts, u)
    if 0 < deadline <= now + delay:
        return -1
    return delay


cdef int attempt_done(Balancer balancer, NodeState node, double elapsed, exc) except -1:
    """Tell the balancer how an attempt on `node` ended (`exc` None: it
    succeeded): its latency, whether it counts against the node, and a
    draining node's refusal, which ejects it at once."""
    if node is None:
        return 0
    if exc is None:
        balancer.finish(node, elapsed, False)
        return 0
    if _retiring(exc):
        balancer.retire(node)
    balancer.finish(node, elapsed, _node_failed(exc))
    return 0


@cython.auto_pickle(False)
cdef class RetryPolicy:
    """When and how a failed call is tried again (gRPC's A6).

    An attempt that fails with a code in ``retryable_codes`` is retried, up
    to ``max_attempts`` in all, within the call's one deadline, only if no
    handler ran it (``RPCError.processed`` is False: never sent, or refused
    before any handler) or the endpoint is idempotent (the call says so).
    Before attempt n+1 the client waits ``min(initial_backoff *
    multiplier**(n-1), max_backoff)``, spread by ``jitter`` (0.2: ±20 %).
    Each retry goes to a node not tried yet when there is one, signed anew
    (a fresh nonce). ``max_attempts=1`` never retries.
    """

    def __init__(self, int max_attempts=3, double initial_backoff=0.01,
                 double max_backoff=1.0, double multiplier=2.0, double jitter=0.2,
                 retryable_codes=(_Code.UNAVAILABLE,)):
        if not 1 <= max_attempts <= 10:
            raise ValueError(f"max_attempts must be 1..10, not {max_attempts}")
        if not (initial_backoff > 0 and max_backoff >= initial_backoff):
            raise ValueError("backoffs must be positive, initial_backoff <= max_backoff")
        if not multiplier >= 1:
            raise ValueError(f"multiplier must be >= 1, not {multiplier}")
        if not 0 <= jitter < 1:
            raise ValueError(f"jitter must be in [0, 1), not {jitter}")
        self.max_attempts = max_attempts
        self.initial_backoff = initial_backoff
        self.max_backoff = max_backoff
        self.multiplier = multiplier
        self.jitter = jitter
        codes = set()
        for code in retryable_codes:
            try:
                codes.add(_Code(code) if not isinstance(code, str) else _Code[code])
            except (ValueError, KeyError):
                raise ValueError(f"retryable_codes: {code!r} is not a status code") from None
        self.retryable_codes = frozenset(codes)

    cdef double backoff(self, int retry, double u) noexcept:
        """Seconds to wait before retry number `retry` (1-based); u in [0, 1)."""
        cdef double b = self.initial_backoff
        cdef int i
        for i in range(1, retry):
            b *= self.multiplier
            if b >= self.max_backoff:
                b = self.max_backoff
                break
        b *= 1.0 + self.jitter * (2.0 * u - 1.0)
        return b if b < self.max_backoff else self.max_backoff

    def delay(self, int retry, double u=0.5):
        """backoff() for Python (tests)."""
        return self.backoff(retry, u)

    cdef bint allows(self, exc, int attempts, bint idempotent):
        """May a call that failed with `exc` after `attempts` go again?"""
        if attempts >= self.max_attempts or not isinstance(exc, _RPCError):
            return False
        if exc.code not in self.retryable_codes:
            return False
        return idempotent or exc.processed is False

    def __repr__(self):
        return (f"RetryPolicy(max_attempts={self.max_attempts}, "
                f"initial_backoff={self.initial_backoff}, max_backoff={self.max_backoff}, "
                f"multiplier={self.multiplier}, jitter={self.jitter}, retryable_codes="
                f"{sorted(c.name for c in self.retryable_codes)})")


@cython.auto_pickle(False)
cdef class RetryBudget:
    """Retry throttling per service (gRPC A6): a failed attempt costs a
    token, a success returns ``token_ratio`` of one (up to
    ``max_tokens``); retries stop while the tokens are at or below half,
    so a failing service gets at most its callers' first attempts. An
    attempt that never left the client (its node unreachable) costs
    nothing: no server saw it (gRPC's transparent retries); nor does one
    whose connection dropped before any answer (the node died)."""

    def __init__(self, double max_tokens=10.0, double token_ratio=0.1):
        if not 0 < max_tokens <= 1000:
            raise ValueError(f"max_tokens must be in (0, 1000], not {max_tokens}")
        if not 0 < token_ratio <= 1:
            raise ValueError(f"token_ratio must be in (0, 1], not {token_ratio}")
        self.max_tokens = max_tokens
        self.token_ratio = token_ratio
        self.tokens = max_tokens

    cdef inline void success(self) noexcept:
        if self.tokens < self.max_tokens:
            self.tokens += self.token_ratio
            if self.tokens > self.max_tokens:
                self.tokens = self.max_tokens

    cdef inline void failure(self) noexcept:
        self.tokens -= 1.0
        if self.tokens < 0:
            self.tokens = 0

    cdef inline bint allows(self) noexcept:
        return self.tokens > self.max_tokens / 2

    def record(self, bint ok):
        """Count one attempt's outcome (for tests)."""
        if ok:
            self.success()
        else:
            self.failure()

    @property
    def retry_allowed(self):
        return self.allows()


@cython.auto_pickle(False)
cdef class HedgingPolicy:
    """Hedged calls (gRPC A6) for idempotent endpoints of an AsyncClient:
    the first attempt goes out; while no answer has come, another goes to
    another node every ``delay`` seconds, up to ``max_attempts`` in flight
    in all; the first reply wins and the others are cancelled. An attempt
    failing with a code in ``non_fatal_codes`` sends the next one at once;
    any other code ends the call."""

    def __init__(self, int max_attempts=2, double delay=0.05,
                 non_fatal_codes=(_Code.UNAVAILABLE,)):
        if not 2 <= max_attempts <= 5:
            raise ValueError(f"max_attempts must be 2..5, not {max_attempts}")
        if not delay >= 0:
            raise ValueError(f"delay must be >= 0, not {delay}")
        self.max_attempts = max_attempts
        self.delay = delay
        self.non_fatal_codes = RetryPolicy(retryable_codes=non_fatal_codes).retryable_codes

    def __repr__(self):
        return (f"HedgingPolicy(max_attempts={self.max_attempts}, delay={self.delay}, "
                f"non_fatal_codes={sorted(c.name for c in self.non_fatal_codes)})")
