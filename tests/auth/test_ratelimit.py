"""Rate limits: token buckets on a fake clock, per caller and per endpoint."""

from __future__ import annotations

import threading

import pytest

from zmicro import Code, RPCError, _core
from zmicro.auth.principal import Principal
from zmicro.auth.ratelimit import Rate, RateLimiter, TokenBucket, rate_limiter

from ..helpers import FakeClock
from .conftest import as_principal


def takes(take, n: int) -> list[bool]:
    return [take() for _ in range(n)]


# -- Rate and TokenBucket -----------------------------------------------------

def test_rate():
    assert Rate(10).per_second == 10 and Rate(10).capacity == 10
    assert Rate(30, per=60).per_second == 0.5 and Rate(30, per=60).capacity == 30
    assert Rate(0.5).capacity == 1  # a bucket holds at least one call
    assert Rate(5, burst=2).capacity == 2
    for bad in (dict(rate=0), dict(rate=1, per=0), dict(rate=-1), dict(rate=1, burst=0.5)):
        with pytest.raises(ValueError):
            Rate(**bad)


def test_bucket_bursts_trips_and_recovers(clock):
    bucket = TokenBucket(rate=2, burst=4, clock=clock)
    assert takes(bucket.take, 5) == [True] * 4 + [False]
    clock.advance(0.25)  # half a token
    assert not bucket.take()
    clock.advance(0.25)
    assert takes(bucket.take, 2) == [True, False]
    clock.advance(3600)  # idle: refills to the burst, no further
    assert bucket.tokens == 4
    assert takes(bucket.take, 5) == [True] * 4 + [False]


def test_bucket_takes_several_or_none(clock):
    bucket = TokenBucket(rate=1, burst=3, clock=clock)
    assert bucket.take(2)
    assert not bucket.take(2)  # one left: takes nothing
    assert bucket.tokens == 1
    assert not bucket.take(4)  # more than the burst: never


def test_a_clock_stepping_back_adds_nothing(clock):
    bucket = TokenBucket(rate=1, burst=1, clock=clock)
    assert bucket.take()
    clock.advance(-100)
    assert not bucket.take()
    clock.advance(100.5)  # back where it was, plus half a token
    assert not bucket.take()
    clock.advance(0.5)
    assert bucket.take()


def test_bucket_validation(clock):
    for rate, burst in ((0, 1), (1, 0)):
        with pytest.raises(ValueError):
            TokenBucket(rate, burst, clock=clock)


# -- RateLimiter --------------------------------------------------------------

def test_per_principal_buckets_are_independent(clock):
    limiter = RateLimiter(per_principal=Rate(2, per=1), clock=clock)
    assert takes(lambda: limiter.take("ada", "s", "E"), 3) == [None, None, "principal"]
    assert limiter.take("bob", "s", "E") is None
    assert limiter.take("ada", "s", "Other") == "principal"  # a caller's budget spans endpoints
    clock.advance(0.5)
    assert takes(lambda: limiter.take("ada", "s", "E"), 2) == [None, "principal"]


def test_per_endpoint_buckets_are_independent(clock):
    limiter = RateLimiter(per_endpoint=Rate(1, per=10), clock=clock)
    assert limiter.take("ada", "s", "A") is None
    assert limiter.take("bob", "s", "A") == "endpoint"  # shared by every caller
    assert limiter.take("bob", "s", "B") is None
    assert limiter.take("bob", "t", "A") is None  # endpoints are per service
    clock.advance(10)
    assert limiter.take("bob", "s", "A") is None


def test_a_refused_call_takes_from_neither_bucket(clock):
    limiter = RateLimiter(per_principal=Rate(1, per=100), per_endpoint=Rate(2, per=100),
                          clock=clock)
    assert limiter.take("ada", "s", "E") is None
    for _ in range(5):  # ada is over her limit: the endpoint keeps its budget
        assert limiter.take("ada", "s", "E") == "principal"
    assert limiter.take("bob", "s", "E") is None
    assert limiter.take("cy", "s", "E") == "endpoint"
    for _ in range(5):  # the endpoint is exhausted: dee keeps her token
        assert limiter.take("dee", "s", "E") == "endpoint"
    assert limiter.take("dee", "s", "Other") is None


def test_least_recently_used_buckets_are_evicted_and_restart_full(clock):
    limiter = RateLimiter(per_principal=Rate(1, per=100), per_endpoint=Rate(100), max_keys=2,
                          clock=clock)
    assert limiter.take("a", "s", "E") is None
    assert limiter.take("b", "s", "E") is None
    assert limiter.take("a", "s", "E") == "principal"  # touches a: b is now the oldest
    assert limiter.take("c", "s", "E") is None  # evicts b
    assert len(limiter) == 2 + 1  # two principals, one endpoint
    assert limiter.take("a", "s", "E") == "principal"  # kept, still empty
    assert limiter.take("b", "s", "E") is None  # evicted: restarted full (documented)


def test_identities_never_evict_endpoint_buckets(clock):
    limiter = RateLimiter(per_principal=Rate(1), per_endpoint=Rate(1, per=100), max_keys=2,
                          clock=clock)
    assert limiter.take("p0", "s", "E") is None
    for i in range(1, 10):
        assert limiter.take(f"p{i}", "s", "E") == "endpoint"
    assert len(limiter) == 3


def test_limiter_validation(clock):
    with pytest.raises(ValueError):
        RateLimiter(clock=clock)
    with pytest.raises(ValueError):
        RateLimiter(per_principal=Rate(1), max_keys=0)


def test_concurrent_takes_never_exceed_the_budget(clock):
    # The clock stands still, so exactly `burst` calls may pass, whatever the
    # interleaving of the threads.
    limiter = RateLimiter(per_principal=Rate(1, burst=150), per_endpoint=Rate(1, burst=100),
                          clock=clock)
    bucket = TokenBucket(rate=1, burst=120, clock=clock)
    passed, taken = [], []
    start = threading.Barrier(8)

    def worker(n: int) -> None:
        start.wait()
        mine = 0
        got = 0
        for i in range(100):
            if limiter.take("shared" if i % 2 else f"t{n}", "s", "E") is None:
                mine += 1
            if bucket.take():
                got += 1
        passed.append(mine)
        taken.append(got)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(passed) == 100
    assert sum(taken) == 120


# -- the interceptor ----------------------------------------------------------

def test_interceptor_refuses_with_resource_exhausted_and_audits(clock, recorder):
    limiter = RateLimiter(per_principal=Rate(1, per=60), clock=clock, audit=recorder)
    ada = Principal(name="ada")
    ctx = _core._test_context(service="p", endpoint="P.Echo", principal=ada)
    assert limiter.interceptor(1, ctx, lambda r, c: r + 1) == 2
    with pytest.raises(RPCError) as err:
        limiter.interceptor(1, ctx, lambda r, c: r + 1)
    assert (err.value.code, err.value.detail) == (Code.RESOURCE_EXHAUSTED, "rate limit exceeded")
    assert recorder.calls == [("deny", "rate-limit", {
        "principal": ada, "service": "p", "endpoint": "P.Echo", "limit": "principal"})]


def test_anonymous_callers_share_one_bucket(clock, recorder):
    limit = rate_limiter(per_principal=Rate(1, per=60), clock=clock, audit=recorder)
    assert limit.limiter.take("anonymous", "x", "y") is None  # the bucket a None principal uses
    ctx = _core._test_context(principal=None)
    with pytest.raises(RPCError):
        limit(None, ctx, lambda r, c: r)


def test_rate_limiter_end_to_end(served):
    clock = FakeClock()
    people = {"ada": Principal(name="ada"), "bob": Principal(name="bob")}
    limit = rate_limiter(per_principal=Rate(2, per=1), clock=clock)
    client = served([as_principal(people), limit])
    ada, bob = {"as": "ada"}, {"as": "bob"}
    assert [client.call("p", "P.Echo", i, metadata=ada) for i in range(2)] == [0, 1]
    with pytest.raises(RPCError) as err:
        client.call("p", "P.Echo", 2, metadata=ada)
    assert err.value.code == Code.RESOURCE_EXHAUSTED
    with pytest.raises(RPCError) as err:
        client.call("p", "P.Async", 2, metadata=ada)
    assert err.value.code == Code.RESOURCE_EXHAUSTED
    assert client.call("p", "P.Echo", 3, metadata=bob) == 3
    clock.advance(0.5)
    assert client.call("p", "P.Async", 4, metadata=ada) == 4
