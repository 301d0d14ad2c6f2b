"""Outlier ejection: N consecutive failures eject a node for base x
(ejections), capped; at most a share of the nodes out at once; back on
probation when the time is up. All on a fake clock."""

from __future__ import annotations

import collections

import pytest

from zmicro import _core

from ..helpers import FakeClock
from .conftest import STRATEGIES, addrs, balancer, records


def fail(b, n, times=1, latency=0.01):
    for _ in range(times):
        b.begin(n)
        b.end(n, latency, True)


def succeed(b, n, latency=0.01):
    b.begin(n)
    b.end(n, latency, False)


def policy(**kw):
    return _core.OutlierPolicy(**kw)


def test_defaults():
    p = _core.OutlierPolicy()
    assert (p.consecutive_failures, p.base_ejection, p.max_ejection, p.max_ejected_share) == (
        5, 30.0, 300.0, 0.5)
    assert _core.Balancer().outlier.consecutive_failures == 5


def test_n_consecutive_failures_eject(clock):
    b = balancer(_core.SELECT_ROUND_ROBIN, addrs(4), clock=clock)
    bad = b.nodes()[2]
    fail(b, bad, 4)
    assert bad.failures == 4 and not bad.ejected
    fail(b, bad)
    assert bad.ejected and bad.ejections == 1
    assert bad.ejected_until == pytest.approx(clock.now + 30.0)
    assert all(b.pick() is not bad for _ in range(100))
    assert b.stats()["ejected"] == 1


def test_a_success_resets_the_count(clock):
    b = balancer(_core.SELECT_RANDOM, addrs(4), clock=clock)
    n = b.nodes()[0]
    for _ in range(3):
        fail(b, n, 4)
        succeed(b, n)
        assert n.failures == 0 and not n.ejected


def test_return_on_probation_then_longer_ejection(clock):
    b = balancer(_core.SELECT_ROUND_ROBIN, addrs(4), clock=clock,
                 outlier=policy(consecutive_failures=3, base_ejection=10.0, max_ejection=100.0))
    bad = b.nodes()[1]
    fail(b, bad, 3)
    assert bad.ejected
    clock.advance(9.9)
    assert all(b.pick() is not bad for _ in range(8))
    clock.advance(0.1)
    picks = [b.pick() for _ in range(8)]  # time is up: back in the rotation
    assert bad in picks
    assert not bad.ejected and bad.probation and bad.failures == 0
    assert b.stats()["returns"] == 1 and b.stats()["probation"] == 1
    fail(b, bad)  # one failure on probation ejects again, for longer
    assert bad.ejected and bad.ejections == 2
    assert bad.ejected_until == pytest.approx(clock.now + 20.0)
    clock.advance(20.0)
    b.pick()
    assert bad.probation
    succeed(b, bad)  # a success ends probation
    assert not bad.probation
    fail(b, bad, 2)
    assert not bad.ejected  # back to needing 3 in a row
    fail(b, bad)
    assert bad.ejected and bad.ejected_until == pytest.approx(clock.now + 30.0)


def test_ejection_time_grows_and_is_capped(clock):
    b = balancer(_core.SELECT_RANDOM, addrs(2), clock=clock,
                 outlier=policy(consecutive_failures=1, base_ejection=30.0, max_ejection=100.0))
    bad = b.nodes()[0]
    seen = []
    for _ in range(6):
        fail(b, bad)
        assert bad.ejected
        seen.append(bad.ejected_until - clock.now)
        clock.advance(seen[-1])
        b.pick()  # notices the time is up
        assert bad.probation
    assert seen == pytest.approx([30.0, 60.0, 90.0, 100.0, 100.0, 100.0])


def test_never_more_than_the_share_ejected(clock):
    b = balancer(_core.SELECT_P2C, addrs(5), clock=clock,
                 outlier=policy(consecutive_failures=1, max_ejected_share=0.5))
    nodes = b.nodes()
    for n in nodes:
        fail(b, n)
    assert sum(n.ejected for n in nodes) == 2  # 2 of 5 <= 50% < 3 of 5
    assert b.stats()["ejections"] == 2 and b.stats()["ejections_refused"] == 3
    assert [n.ejected for n in nodes] == [True, True, False, False, False]
    # the failing nodes that stayed in still count their failures
    assert nodes[4].failures == 1


def test_share_frees_up_when_an_ejection_ends(clock):
    b = balancer(_core.SELECT_RANDOM, addrs(2), clock=clock,
                 outlier=policy(consecutive_failures=1, base_ejection=5.0))
    a, c = b.nodes()
    fail(b, a)
    fail(b, c)
    assert a.ejected and not c.ejected  # 1 of 2 at most
    clock.advance(5.0)
    fail(b, c)  # a's time is up (noticed here): room for c
    assert not a.ejected and a.probation and c.ejected


def test_share_zero_disables_ejection(clock):
    b = balancer(_core.SELECT_RANDOM, addrs(3), clock=clock,
                 outlier=policy(max_ejected_share=0.0))
    n = b.nodes()[0]
    fail(b, n, 50)
    assert not n.ejected and n.failures == 50


def test_one_node_alone_is_never_ejected_at_half_share(clock):
    b = balancer(_core.SELECT_RANDOM, addrs(1), clock=clock)
    n = b.nodes()[0]
    fail(b, n, 10)
    assert not n.ejected


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_ejected_nodes_are_skipped_unless_all_are(strategy, clock):
    b = _core.Balancer(strategy, clock=clock, seed=3,
                       outlier=policy(consecutive_failures=1, max_ejected_share=1.0))
    b.update(records("tcp://a:1", "tcp://b:1", version="1")
             + records("tcp://c:1", version="2"))
    a, bb, c = b.nodes()
    fail(b, a)
    assert a.ejected
    for i in range(100):
        assert b.pick(key=f"k{i}") in (bb, c)
    v1 = b.subset("1")
    assert all(b.pick(v1, key=f"k{i}") is bb for i in range(50))
    fail(b, bb)
    # every candidate of v1 is ejected: one of them rather than none
    assert all(b.pick(v1, key=f"k{i}") in (a, bb) for i in range(50))
    assert all(b.pick(key=f"k{i}") is c for i in range(50))


def test_avoid_prefers_a_healthy_avoided_node_to_an_ejected_one(clock):
    b = balancer(_core.SELECT_ROUND_ROBIN, addrs(2), clock=clock,
                 outlier=policy(consecutive_failures=1))
    a, c = b.nodes()
    fail(b, a)
    assert all(b.pick(avoid={c}) is c for _ in range(10))


def test_late_failures_of_an_ejected_node_do_not_extend_it(clock):
    b = balancer(_core.SELECT_RANDOM, addrs(4), clock=clock,
                 outlier=policy(consecutive_failures=2))
    n = b.nodes()[0]
    for _ in range(5):
        b.begin(n)  # five calls out at once
    for _ in range(5):
        clock.advance(0.1)
        b.end(n, 0.1, True)
    assert n.ejected and n.ejections == 1 and n.inflight == 0


def test_update_keeps_ejection_and_forgets_removed_nodes(clock):
    b = balancer(_core.SELECT_RANDOM, addrs(4), clock=clock,
                 outlier=policy(consecutive_failures=1))
    n0, n1 = b.nodes()[:2]
    fail(b, n0)
    b.update(records(*addrs(4)[:3]))
    assert b.nodes()[0] is n0 and n0.ejected and b.stats()["ejected"] == 1
    b.update(records(*addrs(4)[1:3]))
    assert b.stats()["ejected"] == 0
    # a call that was in flight on the removed node ends: nothing breaks
    b.begin(n1)
    b.update(records(*addrs(4)[2:3]))
    b.end(n1, 0.01, True)
    assert n1.inflight == 0 and not n1.ejected
    # the address comes back: a fresh NodeState
    b.update(records(*addrs(4)))
    assert b.nodes()[0] is not n0 and not b.nodes()[0].ejected


def test_clock_is_not_read_by_picks_without_ejections():
    clock = FakeClock()
    for strategy in (_core.SELECT_RANDOM, _core.SELECT_ROUND_ROBIN, _core.SELECT_P2C,
                     _core.SELECT_HASH):
        b = balancer(strategy, addrs(5), clock=clock)
        for i in range(100):
            b.pick(key=str(i))
    assert clock.reads == 0
    b = balancer(_core.SELECT_ROUND_ROBIN, addrs(5), clock=clock,
                 outlier=policy(consecutive_failures=1))
    fail(b, b.nodes()[0])
    before = clock.reads
    b.pick()
    assert clock.reads == before + 1  # while some node is ejected: once per pick


def test_default_clock_is_monotonic_seconds():
    import time

    b = balancer(_core.SELECT_RANDOM, addrs(3), outlier=policy(consecutive_failures=1))
    n = b.nodes()[0]
    t0 = time.monotonic()
    fail(b, n)
    t1 = time.monotonic()
    assert t0 + 30.0 <= n.ejected_until <= t1 + 30.0


def test_retire_ejects_at_once_within_the_share(clock):
    """A node refusing calls as not processed (draining) is ejected on the
    first refusal, not the fifth; the share bound still holds."""
    b = balancer(_core.SELECT_ROUND_ROBIN, addrs(4), clock=clock)
    first, second, third = b.nodes()[:3]
    b.retire(first)
    assert first.ejected and first.ejections == 1
    b.retire(first)  # already out: nothing more
    assert first.ejections == 1
    b.retire(second)
    assert second.ejected
    b.retire(third)  # a third of four would pass the 50 % share
    assert not third.ejected
    assert {b.pick().address for _ in range(8)} == {n.address for n in b.nodes()[2:]}
    gone = b.nodes()[3]
    b.update(records(*[n.address for n in b.nodes()[:3]]))
    b.retire(gone)  # no longer a member: ignored
    assert not gone.ejected
