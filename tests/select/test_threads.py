"""A Balancer shared by threads: picks, begin/end and subset lookups go on
while another thread updates the node set. No timing: each thread does a
fixed amount of work; the checks are that every pick is a node of one of
the node sets and that nothing raises or crashes."""

from __future__ import annotations

import sys
import threading

import pytest

from zmicro import _core

from ..helpers import FakeClock
from .conftest import STRATEGIES, addrs


def _sets():
    universe = addrs(60)
    return universe, [universe[i:i + 40] for i in range(0, 21, 5)]


@pytest.fixture
def fast_switching():
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible
    yield
    sys.setswitchinterval(old)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_picks_during_updates(strategy, fast_switching):
    universe, sets = _sets()
    clock = FakeClock()  # a Python clock: lets threads switch inside pick()
    b = _core.Balancer(strategy, clock=clock, seed=5,
                       outlier=_core.OutlierPolicy(consecutive_failures=2,
                                                   max_ejected_share=0.5))

    def records(names):
        return [(a, ("1", "2")[i % 2], {"zone": ("eu", "us")[i % 3 == 0]}, None)
                for i, a in enumerate(names)]

    b.update(records(sets[0]))
    errors = []
    done = threading.Event()

    def updater():
        try:
            for r in range(300):
                b.update(records(sets[r % len(sets)]))
                clock.advance(7.0)
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)
        finally:
            done.set()

    def picker(seed):
        try:
            i = 0
            while not done.is_set() or i < 2000:
                sub = b.subset(("1", "2", None)[i % 3], {"zone": "eu"} if i % 2 else None)
                n = b.pick(sub, key=f"k{seed}-{i}", avoid=None if i % 4 else ())
                if n is not None:
                    assert n.address in universe
                    b.begin(n)
                    b.end(n, 0.001 * (i % 7), i % 5 == 0)
                i += 1
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=updater)] + [
        threading.Thread(target=picker, args=(s,)) for s in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads)
    assert errors == []
    assert all(n.inflight == 0 for n in b.nodes())
