"""Bad arguments: a clear ValueError/TypeError naming the field; a refused
update() changes nothing."""

from __future__ import annotations

import math

import pytest

from zmicro import _core

from .conftest import addrs, balancer, records


@pytest.mark.parametrize("kw, error, field", [
    (dict(strategy=5), ValueError, "strategy"),
    (dict(strategy=-1), ValueError, "strategy"),
    (dict(decay=0.0), ValueError, "decay"),
    (dict(decay=-1.0), ValueError, "decay"),
    (dict(decay=math.nan), ValueError, "decay"),
    (dict(decay=math.inf), ValueError, "decay"),
    (dict(replicas=0), ValueError, "replicas"),
    (dict(replicas=100_000), ValueError, "replicas"),
    (dict(clock=3.0), TypeError, "clock"),
    (dict(outlier={"consecutive_failures": 1}), TypeError, "outlier"),
])
def test_balancer_arguments(kw, error, field):
    with pytest.raises(error, match=field):
        _core.Balancer(**kw)


@pytest.mark.parametrize("kw, field", [
    (dict(consecutive_failures=0), "consecutive_failures"),
    (dict(base_ejection=0.0), "base_ejection"),
    (dict(base_ejection=math.nan), "base_ejection"),
    (dict(base_ejection=math.inf), "base_ejection"),
    (dict(base_ejection=10.0, max_ejection=5.0), "max_ejection"),
    (dict(max_ejection=math.inf), "max_ejection"),
    (dict(max_ejected_share=-0.1), "max_ejected_share"),
    (dict(max_ejected_share=1.5), "max_ejected_share"),
    (dict(max_ejected_share=math.nan), "max_ejected_share"),
])
def test_outlier_policy_arguments(kw, field):
    with pytest.raises(ValueError, match=field):
        _core.OutlierPolicy(**kw)


def test_outlier_policy_is_keyword_only():
    with pytest.raises(TypeError):
        _core.OutlierPolicy(3)


@pytest.mark.parametrize("bad, error, field", [
    ([("tcp://a:1", "1", {})], ValueError, r"nodes\[1\]"),
    (["tcp://a:1"], ValueError, r"nodes\[1\]"),
    ([("", "1", {}, None)], ValueError, r"nodes\[1\]\.address"),
    ([(b"tcp://a:1", "1", {}, None)], ValueError, r"nodes\[1\]\.address"),
    ([("tcp://x:1", 1, {}, None)], TypeError, r"nodes\[1\]\.version"),
    ([("tcp://x:1", "1", [("k", "v")], None)], TypeError, r"nodes\[1\]\.metadata"),
    ([("tcp://x:1", "1", {}, b"key")], TypeError, r"nodes\[1\]\.public_key"),
    ([("tcp://\udc80:1", "1", {}, None)], ValueError, r"nodes\[1\]\.address"),
])
def test_bad_update_changes_nothing(bad, error, field):
    b = balancer(_core.SELECT_ROUND_ROBIN, ["tcp://b:1"])
    before = b.nodes()
    sub = b.subset("1.0")
    with pytest.raises(error, match=field):
        b.update(records("tcp://b:1") + bad)
    assert b.nodes() == before and len(sub) == 1


def test_an_address_listed_twice_is_one_node_with_the_later_record():
    b = _core.Balancer()
    b.update([("tcp://a:1", "1", {"gen": "old"}, "k1"), ("tcp://b:1", "1", {}, None),
              ("tcp://a:1", "2", {"gen": "new"}, "k2")])
    assert [n.address for n in b.nodes()] == ["tcp://a:1", "tcp://b:1"]
    a = b.nodes()[0]
    assert (a.version, a.metadata, a.public_key) == ("2", {"gen": "new"}, "k2")


def test_update_needs_an_iterable():
    with pytest.raises(TypeError):
        _core.Balancer().update(5)


def test_pick_arguments():
    b = balancer(_core.SELECT_HASH, addrs(3))
    with pytest.raises(TypeError, match="key"):
        b.pick(key=123)
    with pytest.raises(UnicodeEncodeError):  # a ValueError
        b.pick(key="\udc80")
    with pytest.raises(TypeError, match="avoid"):
        b.pick(avoid=b.nodes()[0])
    with pytest.raises(TypeError):
        b.pick(subset="v1")
    # other strategies ignore the key
    assert balancer(_core.SELECT_RANDOM, addrs(3)).pick(key=123) is not None


def test_end_arguments():
    b = balancer(_core.SELECT_P2C, addrs(2))
    n = b.nodes()[0]
    for bad in (-0.001, math.nan, math.inf):
        with pytest.raises(ValueError, match="latency"):
            b.end(n, bad)
    with pytest.raises(TypeError):
        b.begin(None)
    assert n.inflight == 0


def test_end_without_begin_does_not_go_negative():
    b = balancer(_core.SELECT_P2C, addrs(2))
    n = b.nodes()[0]
    b.end(n, 0.01)
    assert n.inflight == 0


def test_a_failing_clock_raises_from_end():
    def clock():
        raise RuntimeError("clock broke")

    b = balancer(_core.SELECT_RANDOM, addrs(2), clock=clock)
    n = b.nodes()[0]
    b.begin(n)
    with pytest.raises(RuntimeError, match="clock broke"):
        b.end(n, 0.01)


def test_not_constructible_from_python():
    with pytest.raises(TypeError):
        _core.NodeState()
    with pytest.raises(TypeError):
        _core.Subset()


def test_stats_and_repr():
    b = balancer(_core.SELECT_P2C, addrs(3))
    b.begin(b.pick())
    s = b.stats()
    assert s["strategy"] == "p2c" and s["nodes"] == 3 and s["inflight"] == 1 and s["picks"] == 1
    assert "p2c" in repr(b) and "tcp://10.0.0.0:9000" in repr(b.nodes()[0])
    assert len(b) == 3
