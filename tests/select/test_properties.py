"""Hypothesis properties: any node set and key gives a pick in the set;
update() keeps the state of surviving addresses; the hash ring moves only
what it must."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from zmicro import _core

from ..helpers import FakeClock
from .conftest import records

address = st.text(min_size=1, max_size=24)
address_sets = st.lists(address, min_size=0, max_size=40, unique=True)
keys = st.one_of(st.text(max_size=40), st.binary(max_size=40), st.none())
strategy = st.sampled_from(range(5))


@given(strategy, address_sets, st.lists(keys, max_size=20), st.integers(1, 2**64 - 1))
def test_pick_is_in_the_set(strat, names, ks, seed):
    b = _core.Balancer(strat, seed=seed, clock=FakeClock())
    b.update(records(*names))
    nodes = set(b.nodes())
    for k in ks:
        n = b.pick(key=k)
        if names:
            assert n in nodes
        else:
            assert n is None


@given(strategy, address_sets, st.lists(st.integers(0, 39), max_size=10),
       st.lists(keys, min_size=1, max_size=10))
def test_avoid_is_honoured_when_possible(strat, names, avoid_idx, ks):
    b = _core.Balancer(strat, seed=1, clock=FakeClock())
    b.update(records(*names))
    nodes = b.nodes()
    avoid = {nodes[i] for i in avoid_idx if i < len(nodes)}
    for k in ks:
        n = b.pick(key=k, avoid=avoid)
        if not nodes:
            assert n is None
        elif len(avoid) < len(nodes):
            assert n not in avoid
        else:
            assert n in avoid


@given(strategy, address_sets, address_sets, st.data())
def test_update_keeps_state_of_surviving_addresses(strat, first, second, data):
    clock = FakeClock()
    b = _core.Balancer(strat, seed=2, clock=clock,
                       outlier=_core.OutlierPolicy(consecutive_failures=2,
                                                   max_ejected_share=1.0))
    b.update(records(*first))
    before = {n.address: n for n in b.nodes()}
    for n in b.nodes():
        for _ in range(data.draw(st.integers(0, 3))):
            b.begin(n)
        if data.draw(st.booleans()):
            b.begin(n)
            b.end(n, 0.25, True)
            b.begin(n)
            b.end(n, 0.25, True)
    snapshot = {a: (n.inflight, n.ewma, n.failures, n.ejected_until, n.ejections)
                for a, n in before.items()}
    b.update(records(*second))
    after = {n.address: n for n in b.nodes()}
    assert [n.address for n in b.nodes()] == second
    for a, n in after.items():
        if a in before:
            assert n is before[a]
            assert (n.inflight, n.ewma, n.failures, n.ejected_until, n.ejections) == snapshot[a]
        else:
            assert (n.inflight, n.failures, n.ejections) == (0, 0, 0)
    assert b.stats()["ejected"] == sum(1 for n in after.values() if n.ejected)


@given(st.lists(address, min_size=2, max_size=30, unique=True),
       st.lists(st.text(max_size=12), min_size=1, max_size=50), st.data())
def test_hash_moves_only_keys_of_changed_nodes(names, ks, data):
    b = _core.Balancer(_core.SELECT_HASH, replicas=16)
    b.update(records(*names))
    before = {k: b.pick(key=k).address for k in ks}
    removed = data.draw(st.sampled_from(names))
    added = data.draw(address.filter(lambda a: a not in names))
    b.update(records(*[a for a in names if a != removed], added))
    for k in ks:
        now = b.pick(key=k).address
        if before[k] != removed:
            assert now in (before[k], added)
