"""Each strategy's distribution: round robin exact (also across update()),
random within statistical bounds, P2C and peak-EWMA steering away from a
busy or slow node, consistent hashing moving ~1/n keys."""

from __future__ import annotations

import collections
import math

import pytest

from zmicro import _core

from ..helpers import FakeClock
from .conftest import STRATEGIES, addrs, balancer, records

# chi-square critical values at p = 0.001 (tables), by degrees of freedom
CHI2_999 = {4: 18.467, 9: 27.877, 19: 43.820}


def chi_square(counts, expected):
    return sum((c - expected) ** 2 / expected for c in counts)


def test_constants_are_distinct_ints():
    assert sorted(STRATEGIES) == list(range(5))
    assert _core.SELECT_NAMES[_core.SELECT_P2C] == "p2c"


# -- round robin --------------------------------------------------------------


def test_round_robin_rotates_exactly_across_calls():
    names = addrs(5)
    b = balancer(_core.SELECT_ROUND_ROBIN, names, seed=7)
    picks = [b.pick().address for _ in range(23)]
    start = names.index(picks[0])  # random start: clients do not all begin on node 0
    assert picks == [names[(start + i) % 5] for i in range(23)]


def test_round_robin_position_survives_update():
    names = addrs(4)
    b = balancer(_core.SELECT_ROUND_ROBIN, names, seed=3)
    first = [b.pick().address for _ in range(3)]
    start = names.index(first[0])
    # same set again (a registry refresh): the rotation goes on, no restart
    b.update(records(*names))
    assert b.pick().address == names[(start + 3) % 4]
    # a fifth node joins: the next picks walk the new list from the same position
    grown = names + ["tcp://10.0.0.99:9000"]
    b.update(records(*grown))
    nxt = [b.pick().address for _ in range(5)]
    assert sorted(nxt) == sorted(grown)  # every node once per cycle
    assert [b.pick().address for _ in range(5)] == nxt


def test_round_robin_each_subset_rotates_on_its_own():
    b = _core.Balancer(_core.SELECT_ROUND_ROBIN, seed=1)
    b.update(records("a", "b", version="1") + records("c", "d", "e", version="2"))
    v1, v2 = b.subset("1"), b.subset("2")
    p1 = [b.pick(v1).address for _ in range(4)]
    p2 = [b.pick(v2).address for _ in range(6)]
    assert collections.Counter(p1) == {"a": 2, "b": 2} and p1[0] != p1[1]
    assert collections.Counter(p2) == {"c": 2, "d": 2, "e": 2}
    assert p2[:3] == p2[3:]


# -- random ---------------------------------------------------------------------


@pytest.mark.parametrize("strategy", [_core.SELECT_RANDOM, _core.SELECT_HASH])
def test_random_is_uniform(strategy):
    """HASH without a key is random too. Fixed seed: deterministic."""
    names = addrs(10)
    b = balancer(strategy, names, seed=12345)
    picks = 100_000
    counts = collections.Counter(b.pick().address for _ in range(picks))
    assert set(counts) == set(names)
    assert chi_square(counts.values(), picks / 10) < CHI2_999[9]


def test_random_seeds_differ_and_repeat():
    names = addrs(20)

    def sequence(seed):
        b = balancer(_core.SELECT_RANDOM, names, seed=seed)
        return [b.pick().address for _ in range(50)]

    assert sequence(1) == sequence(1)
    assert sequence(1) != sequence(2)


# -- P2C least outstanding ------------------------------------------------------------


def test_p2c_never_picks_the_busiest_when_others_are_idle():
    names = addrs(3)
    b = balancer(_core.SELECT_P2C, names, seed=5)
    busy = b.nodes()[1]
    for _ in range(10):
        b.begin(busy)  # ten calls stuck on it
    counts = collections.Counter()
    for _ in range(3000):
        n = b.pick()
        b.begin(n)
        b.end(n, 0.001)
        counts[n.address] += 1
    assert counts[busy.address] == 0  # it loses every comparison
    assert counts[names[0]] > 1000 and counts[names[2]] > 1000
    assert busy.inflight == 10


def test_p2c_spreads_load_by_outstanding_calls():
    """Calls that never finish pile up evenly: P2C keeps in-flight counts
    within a small spread (round robin would too, random would not)."""
    b = balancer(_core.SELECT_P2C, addrs(8), seed=9)
    for _ in range(800):
        b.begin(b.pick())
    loads = [n.inflight for n in b.nodes()]
    assert sum(loads) == 800
    assert max(loads) - min(loads) <= 4


def test_p2c_ties_are_random():
    b = balancer(_core.SELECT_P2C, addrs(2), seed=11)
    counts = collections.Counter(b.pick().address for _ in range(4000))
    assert chi_square(counts.values(), 2000) < 10.828  # 1 dof, p = 0.001


def test_round_robin_does_not_steer_control():
    """The control for the steering tests: round robin sends the busy node
    its third of the calls."""
    b = balancer(_core.SELECT_ROUND_ROBIN, addrs(3), seed=5)
    busy = b.nodes()[1]
    for _ in range(10):
        b.begin(busy)
    counts = collections.Counter(b.pick().address for _ in range(300))
    assert counts[busy.address] == 100


# -- peak EWMA ------------------------------------------------------------------


def _run_sequential(b, clock, latency_of, calls):
    counts = collections.Counter()
    for _ in range(calls):
        n = b.pick()
        b.begin(n)
        clock.advance(latency_of(n))
        b.end(n, latency_of(n))
        counts[n.address] += 1
    return counts


def test_peak_ewma_steers_away_from_a_slow_node(clock):
    names = addrs(3)
    b = balancer(_core.SELECT_PEAK_EWMA, names, seed=2, clock=clock, decay=10.0)
    slow = names[0]
    latency = lambda n: 0.1 if n.address == slow else 0.01  # 10x
    counts = _run_sequential(b, clock, latency, 1500)
    assert counts[slow] <= 15  # tried, then only probed as its EWMA decays
    assert counts[names[1]] > 500 and counts[names[2]] > 500
    rr = balancer(_core.SELECT_ROUND_ROBIN, names, seed=2, clock=FakeClock())
    assert _run_sequential(rr, FakeClock(), latency, 1500)[slow] == 500


def test_peak_ewma_weights_latency_by_outstanding_calls(clock):
    """Equal latencies: the node with calls in flight costs more."""
    b = balancer(_core.SELECT_PEAK_EWMA, addrs(2), seed=4, clock=clock)
    a, c = b.nodes()
    for n in (a, c):
        b.begin(n)
        b.end(n, 0.05)
    b.begin(a)
    picks = collections.Counter(b.pick().address for _ in range(200))
    assert picks == {c.address: 200}


def test_peak_ewma_tries_nodes_without_data(clock):
    """A new node (no latency sample) costs 0 while idle, so it is tried
    at once; while its first call is out it is not piled on."""
    b = balancer(_core.SELECT_PEAK_EWMA, addrs(1), seed=4, clock=clock)
    old = b.nodes()[0]
    b.begin(old)
    b.end(old, 0.001)
    b.update(records(old.address, "tcp://new:1"))
    assert b.nodes()[0] is old  # kept its state
    new = b.nodes()[1]
    assert b.pick() is new
    b.begin(new)
    assert all(b.pick() is old for _ in range(50))
    b.end(new, 0.001)


def test_peak_ewma_jumps_to_peaks_and_decays(clock):
    b = balancer(_core.SELECT_PEAK_EWMA, addrs(1), clock=clock, decay=10.0)
    n = b.nodes()[0]
    b.begin(n); b.end(n, 0.010)
    assert n.ewma == pytest.approx(0.010)
    b.begin(n); b.end(n, 0.500)  # a peak: taken at once
    assert n.ewma == pytest.approx(0.500)
    clock.advance(10.0)  # one time constant later, a fast sample
    b.begin(n); b.end(n, 0.010)
    w = math.exp(-1.0)
    assert n.ewma == pytest.approx(0.5 * w + 0.010 * (1 - w))


# -- consistent hashing ------------------------------------------------------------


def _owners(b, keys, subset=None):
    return {k: b.pick(subset, key=k).address for k in keys}


def test_hash_is_stable_for_a_key():
    b = balancer(_core.SELECT_HASH, addrs(10), seed=1)
    keys = [f"user-{i}" for i in range(200)]
    assert _owners(b, keys) == _owners(b, keys)
    other = balancer(_core.SELECT_HASH, list(reversed(addrs(10))), seed=99)
    assert _owners(other, keys) == _owners(b, keys)  # order and seed do not matter


def test_hash_str_and_its_utf8_bytes_agree():
    b = balancer(_core.SELECT_HASH, addrs(10))
    for k in ("alpha", "é-ü-ß", "", "日本"):
        assert b.pick(key=k) is b.pick(key=k.encode())


def test_hash_spreads_keys():
    names = addrs(10)
    b = balancer(_core.SELECT_HASH, names)
    counts = collections.Counter(_owners(b, [f"k{i}" for i in range(20_000)]).values())
    assert set(counts) == set(names)
    # 64 points per node: each node's share is within ~±40% of 1/n
    assert min(counts.values()) > 0.6 * 2000 and max(counts.values()) < 1.4 * 2000


def test_hash_adding_a_node_moves_about_one_nth_of_keys():
    names = addrs(20)
    b = balancer(_core.SELECT_HASH, names)
    keys = [f"session:{i}" for i in range(20_000)]
    before = _owners(b, keys)
    b.update(records(*names, "tcp://10.0.1.1:9000"))
    after = _owners(b, keys)
    moved = [k for k in keys if before[k] != after[k]]
    assert all(after[k] == "tcp://10.0.1.1:9000" for k in moved)  # only to the new node
    share = len(moved) / len(keys)
    assert 0.5 / 21 < share < 2.0 / 21


def test_hash_removing_a_node_moves_only_its_keys():
    names = addrs(20)
    b = balancer(_core.SELECT_HASH, names)
    keys = [f"session:{i}" for i in range(20_000)]
    before = _owners(b, keys)
    gone = names[7]
    b.update(records(*(a for a in names if a != gone)))
    after = _owners(b, keys)
    for k in keys:
        if before[k] == gone:
            assert after[k] != gone
        else:
            assert after[k] == before[k]


def test_hash_with_avoid_goes_to_the_next_node_on_the_ring():
    b = balancer(_core.SELECT_HASH, addrs(10))
    first = b.pick(key="order-17")
    second = b.pick(key="order-17", avoid={first})
    assert second is not first
    assert b.pick(key="order-17", avoid=(first,)) is second  # consistent too
    third = b.pick(key="order-17", avoid={first, second})
    assert third not in (first, second)


def test_hash_in_a_filtered_subset():
    b = _core.Balancer(_core.SELECT_HASH)
    b.update(records(*addrs(6), version="1") + records(*addrs(6, "tcp://v2."), version="2"))
    v2 = b.subset("2")
    owners = _owners(b, [f"k{i}" for i in range(500)], v2)
    assert {a.split(".")[0] for a in owners.values()} == {"tcp://v2"}


# -- every strategy ---------------------------------------------------------------


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_empty_set_picks_none(strategy):
    b = _core.Balancer(strategy)
    assert b.pick() is None
    assert b.pick(key="k") is None
    b.update(records("tcp://a:1"))
    assert b.pick().address == "tcp://a:1"
    b.update([])
    assert b.pick() is None


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_avoid_sends_retries_elsewhere(strategy, clock):
    b = balancer(strategy, addrs(3), seed=8, clock=clock)
    n0, n1, n2 = b.nodes()
    for i in range(200):
        key = f"k{i}"
        assert b.pick(key=key, avoid={n0, n1}) is n2
        assert b.pick(key=key, avoid=(n2, n0)) is n1
        assert b.pick(key=key, avoid=[n1]) is not n1
        # every node avoided: one of them rather than none
        assert b.pick(key=key, avoid=frozenset((n0, n1, n2))) in (n0, n1, n2)
    assert b.pick(avoid=set()) is not None


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_single_node(strategy):
    b = balancer(strategy, ["tcp://only:1"])
    only = b.nodes()[0]
    assert all(b.pick(key=str(i)) is only for i in range(20))
    assert b.pick(avoid={only}) is only  # no other node: the avoided one


def test_hash_subset_ring_is_the_ring_of_its_nodes():
    """A filtered subset's ring (derived from the full ring) sends each key
    where a balancer holding only the subset's nodes would."""
    names = addrs(30)
    b = _core.Balancer(_core.SELECT_HASH)
    b.update([(a, ("1", "2")[i % 2], {"zone": ("eu", "us", "ap")[i % 3]}, None)
              for i, a in enumerate(names)])
    keys = [f"k{i}" for i in range(2000)]
    for version, meta in (("1", None), ("2", {"zone": "eu"}), (None, {"zone": "ap"})):
        s = b.subset(version, meta)
        alone = balancer(_core.SELECT_HASH, [n.address for n in s.nodes()])
        assert _owners(b, keys, s) == _owners(alone, keys)
    # after an update that drops some nodes, and for every cached subset
    kept = names[5:25]
    b.update([(a, ("1", "2")[i % 2], {"zone": ("eu", "us", "ap")[i % 3]}, None)
              for i, a in enumerate(names) if a in kept])
    for version, meta in (("1", None), ("2", {"zone": "eu"}), (None, {"zone": "ap"})):
        s = b.subset(version, meta)
        alone = balancer(_core.SELECT_HASH, [n.address for n in s.nodes()])
        assert _owners(b, keys, s) == _owners(alone, keys)
