"""Filters by version and metadata: precomputed subsets, cached per
filter, recomputed by update()."""

from __future__ import annotations

import collections

import pytest

from zmicro import _core

from .conftest import records


def make(strategy=_core.SELECT_ROUND_ROBIN, **kw):
    b = _core.Balancer(strategy, seed=1, **kw)
    b.update(
        records("tcp://a:1", "tcp://b:1", version="1.0", metadata={"zone": "eu", "tier": "gold"})
        + records("tcp://c:1", version="1.0", metadata={"zone": "us"})
        + records("tcp://d:1", version="2.0", metadata={"zone": "eu"})
        + [("tcp://e:1", None, None, None)]
    )
    return b


def members(subset):
    return [n.address for n in subset.nodes()]


def test_no_filter_is_every_node():
    b = make()
    assert b.subset() is b.subset(None, None) is b.subset(None, {})
    assert members(b.subset()) == [n.address for n in b.nodes()]
    assert len(b.subset()) == 5


def test_version_filter():
    b = make()
    assert members(b.subset("1.0")) == ["tcp://a:1", "tcp://b:1", "tcp://c:1"]
    assert members(b.subset("2.0")) == ["tcp://d:1"]
    assert members(b.subset("")) == ["tcp://e:1"]  # no version given
    assert members(b.subset("3.0")) == []
    assert b.pick(b.subset("3.0")) is None


def test_metadata_filter_needs_every_item():
    b = make()
    assert members(b.subset(None, {"zone": "eu"})) == ["tcp://a:1", "tcp://b:1", "tcp://d:1"]
    assert members(b.subset(None, {"zone": "eu", "tier": "gold"})) == ["tcp://a:1", "tcp://b:1"]
    assert members(b.subset("2.0", {"zone": "eu"})) == ["tcp://d:1"]
    assert members(b.subset("2.0", {"zone": "us"})) == []
    assert members(b.subset(None, {"missing": None})) == []  # absent is not None


def test_picks_stay_within_the_subset():
    for strategy in range(5):
        b = make(strategy)
        eu = b.subset(None, {"zone": "eu"})
        got = collections.Counter(b.pick(eu, key=f"k{i}").address for i in range(300))
        assert set(got) <= {"tcp://a:1", "tcp://b:1", "tcp://d:1"}


def test_subsets_are_cached_per_filter():
    b = make()
    s = b.subset("1.0", {"zone": "eu"})
    assert b.subset("1.0", {"zone": "eu"}) is s
    assert b.subset("1.0", dict([("zone", "eu")])) is s
    assert b.subset("1.0") is not s
    two = b.subset("1.0", {"zone": "eu", "tier": "gold"})
    assert b.subset("1.0", {"tier": "gold", "zone": "eu"}) is two  # order does not matter
    assert b.stats()["subsets"] == 3


def test_update_recomputes_subsets_in_place():
    b = make()
    eu = b.subset(None, {"zone": "eu"})
    v2 = b.subset("2.0")
    b.update(records("tcp://d:1", version="2.0", metadata={"zone": "us"})  # moved zone
             + records("tcp://f:1", version="2.0", metadata={"zone": "eu"})
             + records("tcp://a:1", version="1.0", metadata={"zone": "eu"}))
    assert b.subset(None, {"zone": "eu"}) is eu  # the same object, new members
    assert members(eu) == ["tcp://f:1", "tcp://a:1"]
    assert members(v2) == ["tcp://d:1", "tcp://f:1"]
    assert b.nodes()[0].metadata == {"zone": "us"}


def test_update_copies_metadata():
    b = _core.Balancer()
    meta = {"zone": "eu"}
    b.update([("tcp://a:1", "1", meta, None)])
    meta["zone"] = "us"
    assert b.nodes()[0].metadata == {"zone": "eu"}
    assert members(b.subset(None, {"zone": "eu"})) == ["tcp://a:1"]


def test_subsets_dropped_from_the_cache_stay_usable():
    b = make()
    first = b.subset(None, {"n": 0})
    for i in range(1, 400):  # more filters than the cache keeps
        b.subset(None, {"n": i})
    assert b.stats()["subsets"] <= 256
    b.update(records("tcp://z:1", metadata={"n": 0}))
    assert b.pick(first).address == "tcp://z:1"  # recomputed when used
    assert members(first) == ["tcp://z:1"]


def test_round_robin_position_of_a_subset_survives_update():
    b = make()
    v1 = b.subset("1.0")
    seq = [b.pick(v1).address for _ in range(3)]
    b.update(list(zip([n.address for n in b.nodes()], [n.version for n in b.nodes()],
                      [n.metadata for n in b.nodes()], [None] * 5)))
    assert [b.pick(v1).address for _ in range(3)] == seq


def test_subset_of_another_balancer_is_refused():
    a, b = make(), make()
    with pytest.raises(ValueError, match="subset"):
        b.pick(a.subset("1.0"))


def test_unhashable_metadata_filter_is_a_type_error():
    with pytest.raises(TypeError, match="metadata"):
        make().subset(None, {"zone": ["eu"]})
    with pytest.raises(TypeError, match="metadata"):
        make().subset("1.0", {"tier": "gold", "zone": ["eu"]})


def test_node_fields_from_the_record():
    b = _core.Balancer()
    b.update([("tcp://a:1", "1.2", {"k": "v"}, "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7")])
    n = b.nodes()[0]
    assert (n.address, n.version, n.metadata, n.public_key) == (
        "tcp://a:1", "1.2", {"k": "v"}, "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7")
    assert (n.inflight, n.ewma, n.failures, n.ejections, n.ejected_until, n.probation) == (
        0, 0.0, 0, 0, 0.0, False)
    with pytest.raises(AttributeError):
        n.inflight = 3


def test_lookup_by_address():
    b = make()
    n = b.lookup("tcp://c:1")
    assert n is b.nodes()[2]
    assert b.lookup("tcp://nope:1") is None
    b.update(records("tcp://c:1"))
    assert b.lookup("tcp://c:1") is n
    b.update([])
    assert b.lookup("tcp://c:1") is None
