"""Rate limits per caller and per endpoint: token buckets, as a server
interceptor.

A :class:`TokenBucket` holds up to ``burst`` tokens and gains ``rate`` per
second; a call takes one. :class:`RateLimiter` keeps one bucket per caller
(the principal's ``subject``; every anonymous caller shares the bucket
``"anonymous"``) and one per ``(service, endpoint)``, and refuses a call with
``RESOURCE_EXHAUSTED`` when either is empty. A refused call takes from
neither bucket, so a caller held back by an endpoint's limit keeps its own
budget, and vice versa.

Memory is bounded: each table keeps at most ``max_keys`` buckets and evicts
the least recently used beyond that. An evicted bucket restarts *full* when
its key comes back, so a caller able to use more than ``max_keys`` distinct
identities in turn can exceed its limit; size ``max_keys`` above the
number of identities (allowlisted keys, token subjects) you expect. Endpoint
buckets have their own table, so a flood of identities never resets them.

Time comes from ``clock`` (default :func:`time.monotonic`), in seconds;
tests pass a fake one. Nothing here sleeps: a refused caller retries later.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import Code, RPCError
from .audit import audit as _audit

if TYPE_CHECKING:
    from .._core import Context
    from ..middleware import Handler, ServerInterceptor

__all__ = ["Rate", "RateLimiter", "TokenBucket", "rate_limiter"]

Clock = Callable[[], float]


@dataclass(frozen=True, slots=True)
class Rate:
    """``rate`` calls per ``per`` seconds, in bursts of up to ``burst``
    calls (default: ``rate``, at least 1)."""

    rate: float
    per: float = 1.0
    burst: float | None = None

    def __post_init__(self) -> None:
        if not self.rate > 0 or not self.per > 0:
            raise ValueError("rate and per must be positive")
        if self.burst is not None and not self.burst >= 1:
            # A bucket that cannot hold one token refuses every call.
            raise ValueError("burst must be at least 1")

    @property
    def per_second(self) -> float:
        return self.rate / self.per

    @property
    def capacity(self) -> float:
        return self.burst if self.burst is not None else max(1.0, float(self.rate))


class TokenBucket:
    """``burst`` tokens at most, refilled at ``rate`` tokens per second of
    ``clock``; starts full. Thread-safe."""

    __slots__ = ("rate", "burst", "_clock", "_tokens", "_stamp", "_lock")

    def __init__(self, rate: float, burst: float, *, clock: Clock = time.monotonic) -> None:
        if not rate > 0 or not burst > 0:
            raise ValueError("rate and burst must be positive")
        self.rate = float(rate)
        self.burst = float(burst)
        self._clock = clock
        self._tokens = self.burst
        self._stamp = clock()
        self._lock = threading.Lock()

    def take(self, n: float = 1) -> bool:
        """Take ``n`` tokens if there are that many; False (taking none) if not."""
        with self._lock:
            self._refill(self._clock())
            if self._tokens < n:
                return False
            self._tokens -= n
            return True

    @property
    def tokens(self) -> float:
        """Tokens available now."""
        with self._lock:
            self._refill(self._clock())
            return self._tokens

    # The two steps of take(), for RateLimiter, which holds its own lock
    # over several buckets.
    def _refill(self, now: float) -> None:
        elapsed = now - self._stamp
        if elapsed > 0:  # a clock that stands still or steps back adds nothing
            self._tokens = min(self.burst, self._tokens + elapsed * self.rate)
            self._stamp = now


class _Table:
    """Buckets by key, least recently used first; at most ``max_keys``."""

    __slots__ = ("rate", "buckets", "max_keys", "clock")

    def __init__(self, rate: Rate, max_keys: int, clock: Clock) -> None:
        self.rate = rate
        self.buckets: OrderedDict[Hashable, TokenBucket] = OrderedDict()
        self.max_keys = max_keys
        self.clock = clock

    def get(self, key: Hashable, now: float) -> TokenBucket:
        bucket = self.buckets.get(key)
        if bucket is None:
            bucket = TokenBucket(self.rate.per_second, self.rate.capacity, clock=self.clock)
            self.buckets[key] = bucket
            if len(self.buckets) > self.max_keys:
                self.buckets.popitem(last=False)
        else:
            self.buckets.move_to_end(key)
        bucket._refill(now)
        return bucket


class RateLimiter:
    """Token buckets per caller subject (``per_principal``) and per
    ``(service, endpoint)`` (``per_endpoint``); either may be None (no such
    limit). Thread-safe: blocking handlers' interceptors run in a pool.

    :meth:`interceptor` is the server interceptor (or use
    :func:`rate_limiter`). Each refusal is audited (``reason
    "rate-limit"``, ``limit`` naming the exhausted bucket); calls let
    through are not, the authorizer already logs them.
    """

    def __init__(self, *, per_principal: Rate | None = None, per_endpoint: Rate | None = None,
                 clock: Clock = time.monotonic, max_keys: int = 100_000,
                 audit: Callable[..., None] = _audit) -> None:
        if per_principal is None and per_endpoint is None:
            raise ValueError("a RateLimiter needs per_principal, per_endpoint or both")
        if max_keys < 1:
            raise ValueError("max_keys must be at least 1")
        self._clock = clock
        self._principals = _Table(per_principal, max_keys, clock) if per_principal else None
        self._endpoints = _Table(per_endpoint, max_keys, clock) if per_endpoint else None
        self._audit = audit
        # One lock for both tables: a call takes from both buckets or neither.
        self._lock = threading.Lock()

    def take(self, subject: str, service: str, endpoint: str) -> str | None:
        """Spend one token of ``subject``'s bucket and one of the endpoint's.

        Returns None when the call may proceed, else the exhausted limit,
        ``"principal"`` or ``"endpoint"`` (and takes nothing).
        """
        with self._lock:
            now = self._clock()
            mine = self._principals.get(subject, now) if self._principals else None
            theirs = self._endpoints.get((service, endpoint), now) if self._endpoints else None
            if mine is not None and mine._tokens < 1:
                return "principal"
            if theirs is not None and theirs._tokens < 1:
                return "endpoint"
            if mine is not None:
                mine._tokens -= 1
            if theirs is not None:
                theirs._tokens -= 1
            return None

    def __len__(self) -> int:
        """Buckets held (both tables)."""
        with self._lock:
            return sum(len(t.buckets) for t in (self._principals, self._endpoints) if t)

    def interceptor(self, request: Any, ctx: Context, next: Handler) -> Any:
        """Server interceptor: ``RESOURCE_EXHAUSTED`` ("rate limit exceeded")
        when the caller's or the endpoint's bucket is empty."""
        principal = ctx.principal
        subject = principal.subject if principal is not None else "anonymous"
        exhausted = self.take(subject, ctx.service, ctx.endpoint)
        if exhausted is None:
            return next(request, ctx)
        self._audit("deny", "rate-limit", principal=principal, service=ctx.service,
                    endpoint=ctx.endpoint, limit=exhausted)
        raise RPCError(Code.RESOURCE_EXHAUSTED, "rate limit exceeded")


def rate_limiter(*, per_principal: Rate | None = None, per_endpoint: Rate | None = None,
                 clock: Clock = time.monotonic, max_keys: int = 100_000,
                 audit: Callable[..., None] = _audit) -> ServerInterceptor:
    """A :class:`RateLimiter`'s server interceptor (the limiter is its
    ``limiter`` attribute)."""
    limiter = RateLimiter(per_principal=per_principal, per_endpoint=per_endpoint,
                          clock=clock, max_keys=max_keys, audit=audit)
    interceptor = limiter.interceptor

    def limit(request: Any, ctx: Context, next: Handler) -> Any:
        return interceptor(request, ctx, next)

    limit.limiter = limiter  # type: ignore[attr-defined]  # (mypy knows no attributes on functions)
    return limit
